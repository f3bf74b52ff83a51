"""Tracking server outages: the real ``mlflow server`` is stopped under a training run. Training
goes on, and every metric lands once the server is back; a server that stays away ends the job
with exit 99 after a local checkpoint, and the run resumes later into the same run."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recseg.training import checkpoint as ckpt
from tests.servers import Server
from tests.trainruns import assert_each_step_once, histories, only_run, start, train

EPOCHS = 6
OUTAGE = 30.0  # seconds the server is away in the first test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("outage-server")).start()
    yield srv
    srv.stop()


class Lines:
    """The output of a running job, line by line, with the time each line came."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip()))

    def wait_for(self, prefix: str, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(line.startswith(prefix) for _, line in self.lines):
            assert self.proc.poll() is None or self.thread.is_alive(), self.text()
            assert time.monotonic() < deadline, f"no {prefix!r}: {self.text()}"
            time.sleep(0.1)

    def finish(self) -> tuple[int, str]:
        code = self.proc.wait(timeout=300)
        self.thread.join(timeout=10)
        return code, self.text() + (self.proc.stderr.read() if self.proc.stderr else "")

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def assert_complete(client: MlflowClient, run_id: str, tally) -> None:
    """Every metric of every epoch once, and each epoch's prediction picture."""
    hist = histories(client, run_id)
    assert_each_step_once(hist)
    for key, points in hist.items():
        assert [s for s, _ in points] == list(range(EPOCHS)), key
    tally("outage: metric points verified", sum(len(p) for p in hist.values()))
    pictures = {f.path for f in client.list_artifacts(run_id, "predictions")}
    assert pictures == {f"predictions/epoch_{e:03d}.png" for e in range(EPOCHS)}
    saved = {f.path for f in client.list_artifacts(run_id, "checkpoints")}
    assert {"checkpoints/latest.pt", "checkpoints/best.pt"} <= saved


def test_training_goes_on_through_an_outage_and_a_longer_one_ends_the_job_with_99(
    server: Server, train_store: Path, tmp_path: Path, tally
) -> None:
    """Two jobs under one 30 s outage: the first (default --tracking-timeout) trains on and
    logs everything once the server is back; the second (--tracking-timeout 3) gives up with
    99 after a local checkpoint while the server is away, and resumes into the same run."""
    epochs = ("--epochs", str(EPOCHS))
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    patient = Lines(start(train_store, tmp_path / "a", server.uri, "outage", *epochs))
    brief = ("--tracking-timeout", "3", *epochs)
    impatient = Lines(start(train_store, tmp_path / "b", server.uri, "away", *brief))
    patient.wait_for("epoch 1/")
    impatient.wait_for("epoch 1/")
    server.stop()
    down = time.monotonic()
    try:
        code, out = impatient.finish()
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
    finally:
        server.start()
    up = time.monotonic()
    assert code == 99, out[-3000:]
    assert "stopped: tracking server unreachable" in out and "Traceback" not in out, out
    code, out = patient.finish()
    assert code == 0, out[-3000:]
    assert "tracking server unreachable" in out and "tracking server back after" in out, out
    trained_while_down = [line for t, line in patient.lines if down < t < up and "epoch " in line]
    assert trained_while_down, out  # training did not wait for the server
    tally("outage: epochs trained while the server was down", len(trained_while_down))
    client, run = only_run(server.uri, "outage")
    assert run.info.status == "FINISHED"
    assert_complete(client, run.info.run_id, tally)

    client, run = only_run(server.uri, "away")
    run_id = run.info.run_id
    local = ckpt.load(tmp_path / "b" / "checkpoints" / run_id / ckpt.LATEST)
    assert 1 <= local["progress"]["epoch"] < EPOCHS
    result = train(train_store, tmp_path / "b", server.uri, "away", *brief, "--run-id", run_id)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    client, run = only_run(server.uri, "away")
    assert run.info.status == "FINISHED" and run.info.run_id == run_id
    assert_complete(client, run_id, tally)


def test_a_server_that_is_not_there_is_one_line_with_exit_1(tmp_path: Path) -> None:
    from tests.media import run_recseg
    from tests.servers import free_port

    uri = f"http://alice:s3cret@127.0.0.1:{free_port()}"  # nothing listens there
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    result = run_recseg("runs", cwd=tmp_path, env=env)
    assert result.returncode == 1, result.stderr
    line, *rest = result.stderr.strip().splitlines()
    assert not rest and line.startswith("recseg: error: cannot reach the tracking server at")
    assert "Connection refused" in line and "s3cret" not in line
