#!/usr/bin/env bash
# The cluster's MLflow tracking server on this host: runs in PostgreSQL, artifacts in S3.
#
#   grid/tracking-server.sh start [--root DIR] [--host 0.0.0.0] [--port 5000] [--auth] ...
#   grid/tracking-server.sh status|stop [--root DIR]
#
# start: a PostgreSQL cluster of its own in DIR/postgres (initdb on the first start, reused
# afterwards; 127.0.0.1 only; its password generated into DIR/secrets, mode 0600), the object
# store, then `mlflow server` (--backend-store-uri postgresql://..., --artifacts-destination
# s3://BUCKET/PREFIX; --auth: MLflow's basic-auth login, its users in PostgreSQL too). It
# prints the MLFLOW_TRACKING_URI that jobs export; they need no S3 credentials (the server
# proxies artifacts). All state is under DIR (default ./tracking-server); logs in DIR/logs.
#
# Object store: --s3-endpoint URL (default MLFLOW_S3_ENDPOINT_URL: MinIO, Ceph RGW) or
# --s3-endpoint aws (AWS S3), with the credentials from the environment (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY) or AWS_SHARED_CREDENTIALS_FILE; the bucket must exist. Neither: a
# local moto_server (S3 over HTTP on 127.0.0.1, in memory: its
# artifacts are gone when it stops; for development and tests only).
# --database-uri postgresql://USER@HOST/DB uses an existing database (password: PGPASSFILE).
#
# A database or object store that does not answer, or refuses: one line, exit 2, and no
# server is started. RECSEG_ENV: the Python environment (default ./.venv).
set -euo pipefail
export MLFLOW_DISABLE_TELEMETRY=true
env_dir=${RECSEG_ENV:-.venv}
if [ -x "$env_dir/bin/python" ]; then py="$env_dir/bin/python"; else py=python3; fi
exec "$py" -m recseg.tracking.cluster "$@"
