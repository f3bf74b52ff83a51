"""Tracking: everything recseg writes to MLflow (runs, params, metrics, artifacts, inputs), and
the commands that run tracked: the train job, lr-find, preprocess, evaluate, report, promote."""

# MLflow retries a failed request 7 times over about 4 minutes by default: a command would sit
# silent that long before saying the server is not there, and a training job rather trains on
# and tries again later. recseg's commands use these unless the user set their own.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",  # waits 1 + 2 + 4 s
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    # artifacts go through the tracking server: a server on S3 would otherwise send clients
    # presigned URLs, straight to an object store that jobs on a cluster need not reach
    "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
}
