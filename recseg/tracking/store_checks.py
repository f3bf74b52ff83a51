"""Checks that the stores behind MLflow answer and take writes - a tracking database, an S3
bucket, an experiment's artifact location - before a server starts or a run is created, so
that a wrong URI, an unreachable object store or refused credentials is one line (exit 2) and
leaves no half-created run behind. Messages never hold a password or a secret key."""

from __future__ import annotations

import contextlib
import re
import tempfile
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recseg.errors import InputError

# schemes of a tracking URI that is a database (SQLAlchemy), with or without "+driver"
DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")
PROBE = ".recseg-write-check"  # the one tiny object a write check leaves (or deletes)
TIMEOUT = 5  # seconds to connect to a database or an object store


def redact(uri: str) -> str:
    """``uri`` without the password of its inline credentials."""
    return re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", uri)


def one_line(exc: BaseException) -> str:
    """The first line of an error (a driver's own error when SQLAlchemy wrapped it)."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()
    return " ".join((text[0] if text else type(inner).__name__).split())[:300]


def is_database_uri(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme.split("+")[0] in DATABASE_SCHEMES


def check_database(uri: str, password: str | None = None) -> None:
    """Connect to the database ``uri`` once (``password``, if given, overrides the URI's and
    the password file's); ``InputError`` saying why when that fails."""
    import sqlalchemy

    connect_args: dict[str, Any] = {}
    if urllib.parse.urlsplit(uri).scheme.startswith("postgresql"):
        connect_args["connect_timeout"] = TIMEOUT
    if password is not None:
        connect_args["password"] = password
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=None)
    except Exception as exc:  # a malformed URI, an unknown dialect or driver
        raise InputError(f"database URI {redact(uri)}: {one_line(exc)}") from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
    except Exception as exc:
        raise InputError(f"cannot use the database {redact(uri)}: {one_line(exc)}") from None
    finally:
        engine.dispose()


def s3_client(endpoint: str | None, keys: dict[str, str] | None = None) -> Any:
    """A boto3 S3 client for ``endpoint`` (AWS when None) with short timeouts; ``keys`` holds
    ``aws_access_key_id``/``aws_secret_access_key``, else boto3's usual sources are used."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=TIMEOUT, read_timeout=30, retries={"max_attempts": 2},
                    s3={"addressing_style": "path"})  # fmt: skip
    return boto3.client("s3", endpoint_url=endpoint, config=config, **(keys or {}))


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise InputError(f"artifact store {uri}: expected s3://BUCKET[/PREFIX]")
    return parts.netloc, parts.path.strip("/")


def check_bucket(uri: str, endpoint: str | None, keys: dict[str, str] | None = None) -> None:
    """Write and delete one small object under ``s3://bucket/prefix``; ``InputError`` for an
    unreachable endpoint, missing or refused credentials, or a missing bucket."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket, prefix = split_s3(uri)
    where = f"the object store at {endpoint or 'AWS S3'}"
    key = f"{prefix}/{PROBE}".lstrip("/")
    client = s3_client(endpoint, keys)
    try:
        client.head_bucket(Bucket=bucket)
        client.put_object(Bucket=bucket, Key=key, Body=b"ok")
        client.delete_object(Bucket=bucket, Key=key)
    except NoCredentialsError:
        raise InputError(
            f"{where}: no S3 credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
            "AWS_SHARED_CREDENTIALS_FILE)"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, status = error.get("Code", ""), exc.response.get("ResponseMetadata", {})
        http = status.get("HTTPStatusCode")
        if http == 404 or code in ("NoSuchBucket", "404"):
            raise InputError(f"{where}: no bucket '{bucket}' (create it first)") from None
        if http in (401, 403):
            raise InputError(
                f"{where} refused the S3 credentials for bucket '{bucket}' ({code or http}): "
                "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from None
        raise InputError(f"{where}: {one_line(exc)}") from None
    except (BotoCoreError, OSError) as exc:
        raise InputError(f"cannot reach {where}: {one_line(exc)}") from None


def check_artifact_location(
    location: str, refused: Callable[[BaseException], bool] = lambda exc: False
) -> None:
    """Write and delete one small file at an experiment's artifact ``location`` (a remote
    one: ``s3://``, ``mlflow-artifacts:`` and the like; a local folder is not checked), so a
    run is never created where its artifacts cannot go. ``InputError`` saying why; an error
    that ``refused`` picks (a tracking server's refusal of the login) is raised as it came."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    scheme = urllib.parse.urlsplit(location).scheme
    if scheme in ("", "file") or len(scheme) == 1:  # a path (C: on Windows)
        return
    try:
        repo = get_artifact_repository(location)
        with tempfile.TemporaryDirectory(prefix="recseg-probe-") as tmp:
            path = Path(tmp, PROBE)
            path.write_bytes(b"ok")
            repo.log_artifact(str(path))
    except Exception as exc:
        if refused(exc):
            raise
        raise InputError(
            f"cannot write artifacts to {redact(location)}: {one_line(exc)} (is the object "
            "store reachable, with the right credentials and bucket?)"
        ) from None
    # no delete permission, or a store that keeps it: one tiny file stays
    with contextlib.suppress(Exception):
        repo.delete_artifacts(PROBE)
