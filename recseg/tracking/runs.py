"""Starting MLflow runs the same way everywhere (``recseg`` commands and ``mlflow run``)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from recseg.errors import InputError
from recseg.tracking import tags as T
from recseg.tracking.store_checks import check_artifact_location


def quiet_mlflow() -> None:
    """No telemetry, ever; called before recseg touches MLflow."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def use_experiment(name: str, client: MlflowClient | None = None) -> str:
    """Make ``name`` the active experiment (created when missing) and return its id; a new
    experiment is marked for the UI's model-training view (``mlflow.experimentKind``). Its
    artifact store must take a write (``InputError`` otherwise): a run is about to start."""
    experiment = mlflow.set_experiment(name)
    check_artifact_location(
        experiment.artifact_location, refused=lambda exc: refused_message(exc) is not None
    )
    if T.EXPERIMENT_KIND not in experiment.tags:
        client = client or MlflowClient()
        try:
            client.set_experiment_tag(experiment.experiment_id, T.EXPERIMENT_KIND, T.ML_EXPERIMENT)
        except MlflowException:  # jobs starting together: another one set it first
            if T.EXPERIMENT_KIND not in client.get_experiment(experiment.experiment_id).tags:
                raise
    return experiment.experiment_id


def log_files(
    files: dict[str, bytes],
    artifact_path: str | None = None,
    client: MlflowClient | None = None,
    run_id: str | None = None,
) -> None:
    """Log ``files`` (relative name -> bytes) as artifacts under ``artifact_path``: of the
    active run, or of ``run_id`` through ``client``. Nothing is logged for no files."""
    if not files:
        return
    with tempfile.TemporaryDirectory(prefix="recseg-files-") as tmp:
        for name, data in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        if client is None:
            mlflow.log_artifacts(tmp, artifact_path)
        else:
            client.log_artifacts(run_id, tmp, artifact_path)


@contextlib.contextmanager
def tracked_run(
    experiment: str, run_name: str | None = None, tags: dict[str, str] | None = None
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run in ``experiment``; inside ``mlflow run`` the run it started is used.

    The tracking server is ``MLFLOW_TRACKING_URI`` when set, else MLflow's default.
    """
    quiet_mlflow()
    inside_project = bool(os.environ.get("MLFLOW_RUN_ID"))
    if not inside_project:
        use_experiment(experiment)
    with mlflow.start_run(run_name=None if inside_project else run_name) as run:
        if tags:
            mlflow.set_tags(tags)
        yield run


def log_new_params(params: dict[str, str]) -> None:
    """Log params the active run does not have yet. ``mlflow run`` logs the values it was
    given (as typed); recseg adds the ones left at their defaults without clashing."""
    run = mlflow.active_run()
    assert run is not None, "log_new_params needs an active run"
    have = mlflow.get_run(run.info.run_id).data.params
    missing = {k: v for k, v in params.items() if k not in have}
    if missing:
        mlflow.log_params(missing)


def existing_run(client: MlflowClient, run_id: str) -> Run:
    """The run ``--run-id`` names; ``InputError`` when the server has none or it is deleted."""
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if refused_message(exc):  # a login or permission problem, not a missing run
            raise
        raise InputError(
            f"--run-id: no run {run_id} on the tracking server {tracking_server()}"
        ) from None
    if run.info.lifecycle_stage == "deleted":
        raise InputError(f"--run-id: run {run_id} is deleted")
    return run


# MLflow's error codes (and HTTP statuses) of a server that refused the login or the permission
_REFUSALS = {
    "UNAUTHENTICATED": 401,
    "CUSTOMER_UNAUTHORIZED": 401,
    "PERMISSION_DENIED": 403,
}


def redact_uri(uri: str) -> str:
    """``uri`` with the password of inline credentials (``http://user:secret@host``) replaced
    by ``***``; anything else unchanged. Use it wherever a tracking URI is printed."""
    try:
        parts = urllib.parse.urlsplit(uri)
        password = parts.password
    except ValueError:  # not a URL (a bad port...): hide everything between :// and @
        return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)
    if password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def tracking_server() -> str:
    """The tracking URI in use, fit to print (no password)."""
    return redact_uri(mlflow.get_tracking_uri())


def tracking_user() -> str | None:
    """The user recseg logs in as: ``MLFLOW_TRACKING_USERNAME`` (or MLflow's credentials file),
    else the user named in the tracking URI; None when anonymous."""
    from mlflow.utils.credentials import read_mlflow_creds

    try:
        user = read_mlflow_creds().username
    except Exception:  # an unreadable credentials file: MLflow itself will say so
        user = None
    return user or urllib.parse.urlsplit(mlflow.get_tracking_uri()).username or None


def _refusal(exc: BaseException) -> tuple[int, str] | None:
    """(401 or 403, what was refused) when ``exc`` or an exception it came from is a tracking
    server's refusal; None otherwise."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        status = None
        if isinstance(exc, MlflowException):
            status = _REFUSALS.get(str(exc.error_code))
        response = getattr(exc, "response", None)  # requests.HTTPError (artifact uploads)
        if status is None and getattr(response, "status_code", None) in (401, 403):
            status = response.status_code
        if status is not None:
            endpoint = re.search(r"endpoint (\S+) failed", str(exc))
            what = endpoint[1].removeprefix("/api/2.0/mlflow/") if endpoint else "the request"
            return status, what
        exc = exc.__cause__ or exc.__context__
    return None


def refused_message(exc: BaseException) -> str | None:
    """One line for a tracking server that refused recseg's login (HTTP 401) or permission
    (403), naming the server and the user, never the password; None for any other error."""
    refusal = _refusal(exc)
    if refusal is None:
        return None
    status, what = refusal
    user = tracking_user()
    server = f"the tracking server at {tracking_server()}"
    if status == 403:
        return (
            f"{server} refused user '{user or 'anonymous'}': permission denied for {what} (the "
            "experiment or run is not yours, or not there: ask its owner or an admin for EDIT "
            "permission, or pass --experiment with one of your own)"
        )
    if user is None:
        return f"{server} needs a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return (
        f"{server} refused user '{user}': wrong user name or password (check "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or the credentials in "
        "MLFLOW_TRACKING_URI)"
    )


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is unreachable or failing (retry later) rather than
    that it refused the request (a 4xx: wrong credentials, no such run - a real error)."""
    if isinstance(exc, InputError):
        return False
    if isinstance(exc, MlflowException):  # RestException too; connection errors come as 500
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    response = getattr(exc, "response", None)  # requests.HTTPError from artifact uploads
    status = getattr(response, "status_code", None)
    if status is not None:
        return status >= 500 or status == 429
    return isinstance(exc, OSError)  # requests' connection errors and timeouts among them


def unreachable_message(exc: BaseException) -> str | None:
    """One line for a tracking server that does not answer (connection refused, timeout, a
    5xx); None for any other error."""
    if not is_outage(exc):
        return None
    reason = " ".join(str(exc).split())
    errno = re.findall(r"\[Errno -?\d+\][^\"')]*", reason)  # "[Errno 111] Connection refused"
    reason = errno[-1].strip() if errno else reason.rpartition("failed with ")[2] or reason
    return f"cannot reach the tracking server at {tracking_server()}: {reason[:200]}"
