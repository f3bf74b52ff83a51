"""Security: nothing recseg loads can run code (a planted malicious pickle is refused on every
loading path), its source never unpickles, and a tracking server locked with MLflow's
``basic-auth`` app refuses strangers, keeps users to their permissions, works with recseg's
credentials and never gets the password printed or stored."""

from __future__ import annotations

import ast
import io
import json
import pathlib
import secrets
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from mlflow.tracking import MlflowClient

from recseg.errors import InputError
from recseg.training import checkpoint as ckpt
from tests.media import one_error_line, recseg_in_process, run_recseg, write_video
from tests.servers import LockedServer
from tests.stores import make_store

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ("--model", "Deep_mobile_gruV1", "--loss", "CrossDice", "--epochs", "1",
         "--batch-size", "2", "--seq-len", "3", "--num-workers", "0",
         "--no-system-metrics")  # fmt: skip
CLUSTER_HOSTS = "mlflow.cluster.example.org:*,node*.cluster:*"  # docs/reliability-and-security.md
pytestmark = pytest.mark.usefixtures("one_thread")


class Planted:
    """Unpickling this creates ``marker``: the harm a malicious file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def plant(path: Path, marker: Path, sealed: bool = False) -> Path:
    """A ``torch.save``d checkpoint-like dict holding a :class:`Planted` object at ``path``;
    ``sealed``: with a correct checksum header (``ckpt.seal``)."""
    buf = io.BytesIO()
    torch.save({"format": ckpt.FORMAT, "version": 2, "progress": Planted(marker)}, buf)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(ckpt.seal(buf.getvalue()) if sealed else buf.getvalue())
    return path


def test_the_planted_file_really_runs_code_when_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.load(plant(tmp_path / "evil.pt", marker), weights_only=False)  # what we must never do
    assert marker.exists()


@pytest.mark.parametrize("sealed", [False, True], ids=["plain", "sealed"])
def test_checkpoint_load_refuses_a_planted_pickle(tmp_path: Path, sealed: bool, tally) -> None:
    marker = tmp_path / "pwned"
    path = plant(tmp_path / "checkpoints" / "0123" / ckpt.LATEST, marker, sealed)
    with pytest.raises(ckpt.CorruptCheckpoint) as err:
        ckpt.load(path)
    assert str(path) in str(err.value) and not marker.exists()
    tally("malicious files refused", 1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    """A real 1-epoch ``recseg train`` run in a sqlite store: (folder, store, run id)."""
    root = tmp_path_factory.mktemp("security-run")
    store = make_store(root / "store", train=(6, 6), val=(6,))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        from recseg.cli import main

        with pytest.raises(SystemExit) as done:
            main(["train", "--data", str(store), *TRAIN, "--experiment", "security"])
        assert done.value.code == 0
        (run,) = MlflowClient().search_runs([MlflowClient().get_experiment_by_name("security")
                                             .experiment_id])  # fmt: skip
    return root, store, run.info.run_id


@pytest.fixture
def in_run(trained, monkeypatch: pytest.MonkeyPatch):
    """The trained run, its job killed before the end (so ``--run-id`` resumes it)."""
    root, store, run_id = trained
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    MlflowClient().set_terminated(run_id, "KILLED")
    return root, store, run_id


def _plant_artifact(run_id: str, marker: Path, tmp: Path) -> None:
    MlflowClient().log_artifact(run_id, str(plant(tmp / ckpt.LATEST, marker, True)), "checkpoints")


def test_resume_refuses_a_planted_local_checkpoint(in_run, tmp_path, capsys, tally) -> None:
    root, store, run_id = in_run
    marker = tmp_path / "pwned"
    local = plant(root / "checkpoints" / run_id / ckpt.LATEST, marker)
    _plant_artifact(run_id, marker, tmp_path)  # what the fallback would take: planted too
    result = recseg_in_process(["train", "--data", str(store), *TRAIN, "--run-id", run_id], capsys)
    one_error_line(result, str(local.relative_to(root)))
    assert "checkpoints/latest.pt" in result.stdout  # the artifact was refused too (warning)
    assert not marker.exists()
    tally("malicious files refused", 2)


def test_resume_elsewhere_refuses_a_planted_run_artifact(in_run, tmp_path, capsys, tally) -> None:
    _root, store, run_id = in_run
    marker = tmp_path / "pwned"
    _plant_artifact(run_id, marker, tmp_path)
    other = tmp_path / "other-machine"  # no local checkpoint: the artifact is downloaded
    args = ["train", "--data", str(store), *TRAIN, "--run-id", run_id,
            "--checkpoint-dir", str(other)]  # fmt: skip
    one_error_line(recseg_in_process(args, capsys), "checkpoints/latest.pt")
    assert not marker.exists()
    tally("malicious files refused", 1)


def test_logged_model_with_planted_weights_is_refused(in_run, tmp_path, capsys, tally) -> None:
    import mlflow
    from mlflow.utils.file_utils import local_file_uri_to_path

    from recseg.tracking.model_uri import WEIGHTS_FILE

    _root, _store, run_id = in_run
    marker = tmp_path / "pwned"
    folder = Path(
        mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(tmp_path))
    )
    plant(folder / WEIGHTS_FILE, marker)
    video = tmp_path / "in.mp4"
    write_video(video, seconds=0.5, size=(32, 48))
    onnx = ["--format", "onnx", "-o", str(tmp_path / "m.onnx")]
    for args in (["segment", str(video), "-o", str(tmp_path / "out.mp4"), "--model", str(folder)],
                 ["export", "--model", str(folder), *onnx]):  # fmt: skip
        one_error_line(recseg_in_process(args, capsys), str(folder), WEIGHTS_FILE)
    # the same planted file inside the tracking store, reached through runs:/ (downloaded)
    logged = MlflowClient().get_run(run_id).data.tags["recseg.model_uri"]  # models:/m-ID
    model = MlflowClient().get_logged_model(logged.split("/")[-1])
    plant(Path(local_file_uri_to_path(model.artifact_location)) / WEIGHTS_FILE, marker)
    args = ["export", "--model", f"runs:/{run_id}/model", *onnx]
    one_error_line(recseg_in_process(args, capsys), f"runs:/{run_id}/model", WEIGHTS_FILE)
    assert not marker.exists() and not list(tmp_path.glob("*.onnx"))
    tally("malicious files refused", 3)


def test_pretrained_backbone_weights_refuse_a_planted_pickle(tmp_path, capsys, tally) -> None:
    from recseg.models.backbones import build_backbone

    marker = tmp_path / "pwned"
    evil = plant(tmp_path / "mobilenet_v2-imagenet.pth", marker)
    with pytest.raises(InputError, match=str(evil)):
        build_backbone("mobilenet_v2", pretrained=evil)
    store = make_store(tmp_path / "store", train=(6,), val=(6,))
    args = ["train", "--data", str(store), *TRAIN, "--pretrained", str(evil)]
    one_error_line(recseg_in_process(args, capsys), str(evil))
    assert not marker.exists()
    tally("malicious files refused", 2)


def test_clip_files_refuse_object_arrays(tmp_path: Path, tally) -> None:
    from recseg.data.store import ClipFile, read_meta

    marker = tmp_path / "pwned"
    store = make_store(tmp_path / "store", train=(6,), val=(6,))
    clip = next((store / "clips" / "train").glob("*.npz"))
    real = dict(np.load(clip))
    meta = np.array([Planted(marker)], dtype=object)  # np.savez pickles object arrays
    np.savez(clip, **{**real, "meta": meta})
    with pytest.raises(InputError, match=str(clip)):
        ClipFile(clip)
    with pytest.raises(ValueError, match="allow_pickle"):
        read_meta(clip)
    assert not marker.exists()
    tally("malicious files refused", 2)


# --- source audit: no code path unpickles -------------------------------------------------

UNSAFE_MODULES = {"cloudpickle", "dill", "shelve", "marshal", "_pickle"}
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load",
                "pandas.read_pickle", "yaml.unsafe_load", "yaml.full_load"}  # fmt: skip
SAFE_YAML = ("SafeLoader", "CSafeLoader", "BaseLoader")
# torch hub's loaders (torchvision's WeightsEnum.get_state_dict too) unpickle unless told not to
TORCH_HUB_LOADS = ("load_state_dict_from_url", ".get_state_dict")
# torch.jit.load runs TorchScript: only of files recseg itself just wrote
TRUSTED_JIT = {("recseg/deploy/export.py", "stream_exported"): "reads back its own export"}


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value, aliases)}.{node.attr}"
    return ""


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source: str, filename: str) -> list[str]:
    """Every place in ``source`` that could unpickle (or run) what it loads, as text."""
    tree, aliases, owner = ast.parse(source), {}, {}
    for node in ast.walk(tree):
        for a in node.names if isinstance(node, ast.Import | ast.ImportFrom) else ():
            if isinstance(node, ast.ImportFrom):  # from pickle import loads as pl
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
            else:  # import numpy as np / import numpy.lib.format
                aliases[a.asname or a.name.split(".")[0]] = (
                    a.name if a.asname else a.name.split(".")[0]
                )
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            owner.update({id(n): node.name for n in ast.walk(node)})
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{where} imports {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        name, kw = _dotted(node.func, aliases), {k.arg: k.value for k in node.keywords}
        loader = _dotted(kw.get("Loader"), aliases) if "Loader" in kw else ""
        if (
            name in UNSAFE_CALLS
            or (name in ("torch.load", "torch.serialization.load")
                and not _is_const(kw.get("weights_only"), True))
            or (name.endswith(TORCH_HUB_LOADS) and not _is_const(kw.get("weights_only"), True))
            or ("allow_pickle" in kw and not _is_const(kw["allow_pickle"], False))
            or (name in ("yaml.load", "yaml.load_all") and not loader.endswith(SAFE_YAML))
            or (name == "torch.jit.load" and (filename, owner.get(id(node))) not in TRUSTED_JIT)
        ):  # fmt: skip
            found.append(f"{where} {name}")
    return found


def test_the_audit_finds_every_unsafe_load() -> None:
    bad = """import dill
import numpy as np, yaml, torch, pickle
from pickle import loads as pl
from torch import jit
torch.load(f)
torch.load(f, weights_only=False)
np.load(f, allow_pickle=True)
pickle.load(f)
pl(b)
yaml.load(s)
yaml.load(s, Loader=yaml.Loader)
jit.load(f)
torch.hub.load_state_dict_from_url(url)
weights.get_state_dict(progress=False, check_hash=True)
"""
    good = """import numpy as np, yaml, torch
torch.load(f, map_location="cpu", weights_only=True)
weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
np.load(f)
np.lib.format.write_array(f, a, allow_pickle=False)
yaml.load(s, Loader=yaml.SafeLoader)
yaml.safe_load(s)
"""
    assert len(unsafe_loads(bad, "x.py")) == len(bad.splitlines()) - 3  # all but 3 import lines
    assert unsafe_loads(good, "x.py") == []


def test_recseg_source_never_unpickles(tally) -> None:
    files = sorted((ROOT / "recseg").rglob("*.py"))
    found = [p for f in files for p in unsafe_loads(f.read_text(), str(f.relative_to(ROOT)))]
    assert found == [], (
        "unsafe loading (use weights_only=True / allow_pickle=False):\n" + "\n".join(found)
    )
    tally("source files audited for unpickling", len(files))


# --- a tracking server locked with MLflow's basic-auth app ---------------------------------


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory):
    """A basic-auth server with users admin, alice and bob, serving the cluster's names."""
    hosts = ("--allowed-hosts", f"127.0.0.1:*,{CLUSTER_HOSTS}")
    server = LockedServer(tmp_path_factory.mktemp("locked-server"), args=hosts).start()
    try:
        server.add_user("alice")
        server.add_user("bob")
        yield server
    finally:
        server.stop()


def test_anonymous_requests_get_401(locked: LockedServer, tally) -> None:
    for url in (f"{locked.uri}/api/2.0/mlflow/experiments/search?max_results=5",
                f"{locked.uri}/ajax-api/2.0/mlflow/runs/search"):  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url, timeout=30)
        assert err.value.code == 401
        tally("auth refusals checked", 1)


def test_only_the_allowed_host_names_are_served(locked: LockedServer, tally) -> None:
    url = f"{locked.uri}/api/2.0/mlflow/experiments/search?max_results=5"
    for host, code in (("node17.cluster", 401), ("mlflow.cluster.example.org", 401),
                       ("attacker.example.com", 403)):  # fmt: skip
        got = requests.get(url, headers={"Host": f"{host}:{locked.port}"}, timeout=30)
        assert got.status_code == code, (host, got.text)  # 401: past the host check, no login
        tally("host names checked", 1)


def test_a_reader_cannot_log_to_another_users_experiment(
    locked: LockedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, tally
) -> None:
    from mlflow.exceptions import MlflowException

    from recseg.tracking.runs import refused_message

    made = locked.rest("alice", "2.0/mlflow/experiments/create", name="alice-private")
    exp_id = made.json()["experiment_id"]
    made = locked.rest("alice", "2.0/mlflow/runs/create", experiment_id=exp_id)
    run_id = made.json()["run"]["info"]["run_id"]
    for name, value in locked.login("bob").items():
        monkeypatch.setenv(name, value)
    client = MlflowClient()
    assert client.get_run(run_id).info.run_id == run_id  # READ: bob may look
    for write in (lambda: client.log_metric(run_id, "loss", 1.0),
                  lambda: client.create_run(exp_id)):  # fmt: skip
        with pytest.raises(MlflowException) as err:
            write()
        assert err.value.get_http_status_code() == 403
        line = refused_message(err.value)
        assert "'bob'" in line and "permission denied" in line
        assert locked.passwords["bob"] not in line
        tally("auth refusals checked", 1)
    monkeypatch.chdir(tmp_path)
    store = make_store(tmp_path / "store", train=(6,), val=(6,))
    args = ["train", "--data", str(store), *TRAIN, "--experiment", "alice-private"]
    line = one_error_line(recseg_in_process(args, capsys), "'bob'", locked.uri)
    assert locked.passwords["bob"] not in line
    # alice grants bob EDIT: now he may log there
    grant = {"username": "bob", "resource_type": "experiment", "resource_id": exp_id}
    granted = locked.rest("alice", "3.0/mlflow/users/permissions/grant", **grant, permission="EDIT")
    assert granted.status_code == 200, granted.text
    client.log_metric(run_id, "loss", 1.0)


def _stored_bytes(*folders: Path) -> bytes:
    """Every file under ``folders`` (the server's database and artifacts, the checkpoints)."""
    return b"".join(f.read_bytes() for d in folders for f in sorted(d.rglob("*")) if f.is_file())


def test_recseg_logs_in_with_credentials_and_never_shows_them(locked, tmp_path, tally) -> None:
    store = make_store(tmp_path / "store", train=(6, 6), val=(6,))
    env, password = locked.login("alice"), locked.passwords["alice"]
    trained = run_recseg("train", "--data", str(store), *TRAIN, "--experiment", "alice-runs",
                         cwd=tmp_path, env=env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    listed = run_recseg("runs", "--experiment", "alice-runs", "--json", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr[-2000:]
    (row,) = json.loads(listed.stdout)
    client = MlflowClient(f"http://alice:{password}@{locked.uri.removeprefix('http://')}")
    run = client.get_run(row["run_id"])
    assert run.info.status == "FINISHED" and run.data.metrics
    shown = trained.stdout + trained.stderr + listed.stdout + listed.stderr
    params_tags = str(run.data.params) + str(run.data.tags)
    assert password not in shown and password not in params_tags
    root = locked.root
    assert list((root / "artifacts").rglob("*.json")), "no JSON artifacts (system info) logged"
    assert password.encode() not in _stored_bytes(root / "artifacts", tmp_path / "checkpoints")
    assert password.encode() not in (root / "mlflow.db").read_bytes()
    tally("secret-free places checked", 6)  # stdout, stderr, params, tags, artifacts, database


def test_bad_credentials_are_one_line_without_the_password(
    locked: LockedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys, tally
) -> None:
    monkeypatch.chdir(tmp_path)
    wrong = secrets.token_urlsafe(16)
    for name, value in locked.login("alice", wrong).items():
        monkeypatch.setenv(name, value)
    line = one_error_line(recseg_in_process(["runs"], capsys), "'alice'", locked.uri)
    assert wrong not in line
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    host = locked.uri.removeprefix("http://")
    right = locked.passwords["alice"]
    for secret in (wrong, right):  # credentials inline in the URI, wrong then right
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://alice:{secret}@{host}")
        result = recseg_in_process(["runs"], capsys)
        if secret == wrong:
            one_error_line(result, "'alice'", f"http://alice:***@{host}")
        assert result.returncode == (2 if secret == wrong else 0), result.stderr
        assert secret not in result.stdout + result.stderr
        tally("auth refusals checked", 1)
    resume = ("--run-id", "0" * 32, "--tracking-timeout", "1")  # a run that is not there
    args = ["train", "--data", str(tmp_path), *TRAIN, *resume]
    result = recseg_in_process(args, capsys)  # the URI is named, its password is not
    one_error_line(result, f"http://alice:***@{host}")
    assert right not in result.stdout + result.stderr
    tally("auth refusals checked", 1)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [("http://alice:s3cr%40t@mlflow.example.org:5000/x", "http://alice:***@mlflow.example.org:5000/x"),
     ("https://bob:p@ss@host", "https://bob:***@host"),
     ("https://bob@host", "https://bob@host"),
     ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
     ("postgresql://u:pw@db/mlflow", "postgresql://u:***@db/mlflow")],
)  # fmt: skip
def test_redact_uri(uri: str, shown: str) -> None:
    from recseg.tracking.runs import redact_uri

    assert redact_uri(uri) == shown
