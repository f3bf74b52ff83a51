"""Acceptance: ``mlflow run . -e train --env-manager local`` on demo data (footage ->
preprocess), against a real MLflow server; the logged model segments another clip shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from recseg.config import fields
from recseg.tracking import tags as T
from recseg.training.config import TrainConfig
from tests.media import run_recseg

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("train_loss", "val_loss", "val_miou", "val_fg_iou", "val_dice",
           "val_pixel_accuracy", "val_flicker", "lr", "epoch_seconds")  # fmt: skip


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Footage and a store made the way `make demo` makes them, only smaller."""
    root = tmp_path_factory.mktemp("demo")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    made = run_recseg("footage", str(root / "footage"), "--videos", "5", "--seconds", "2",
                      "--fps", "10", "--size", "72x128", cwd=root, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    footage = root / "footage"
    made = run_recseg("preprocess", "--videos", str(footage / "videos"), "--backgrounds",
                      str(footage / "backgrounds"), "--out", str(root / "store"),
                      "--clip-seconds", "1", "--fps", "10", "--size", "64x96",
                      cwd=root, env=env)  # fmt: skip
    assert made.returncode == 0, made.stderr
    return root / "store"


def test_mlflow_run_train(
    demo_store: Path, tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1",
    }
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "train",
           "--env-manager", "local", "--experiment-name", "accept",
           "-P", f"data={demo_store}", "-P", "model=Deep_mobile_gruV3", "-P", "loss=CrossDice",
           "-P", "epochs=2", "-P", "batch_size=2", "-P", "seq_len=4", "-P", "size=48x80",
           "-P", "num_workers=1", "-P", f"checkpoint_dir={tmp_path / 'ckpt'}"]  # fmt: skip
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("accept")
    (run,) = client.search_runs([exp.experiment_id])
    rid = run.info.run_id
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert {f.name for f, _ in fields(TrainConfig)} <= set(params)
    assert params["model"] == "Deep_mobile_gruV3" and params["resolved_size"] == "48x80"
    for key in METRICS:
        steps = [m.step for m in client.get_metric_history(rid, key)]
        assert steps == [0, 1], (key, steps)
    assert any(k.startswith("system/") for k in run.data.metrics)
    tags = run.data.tags
    assert (tags[T.BACKBONE], tags[T.CELL], tags[T.POSITION]) == ("mobilenet_v2", "gru", "decoder")
    names = {a.path for folder in ("plots", "predictions", "checkpoints", "system")
             for a in client.list_artifacts(rid, folder)}  # fmt: skip
    assert {"plots/loss.png", "plots/lr.png", "plots/miou.png", "checkpoints/latest.pt",
            "checkpoints/best.pt", "predictions/epoch_000.png"} <= names  # fmt: skip
    assert any(n.startswith("system/") and n.endswith(".json") for n in names)
    assert run.inputs.dataset_inputs, "the store is logged as the run's dataset"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model(f"runs:/{rid}/model")
    clip = np.random.default_rng(0).random((5, 3, 40, 56), dtype=np.float32)
    probs = model.predict(clip)
    mlflow.set_tracking_uri(None)
    assert probs.shape == (5, 40, 56) and probs.dtype == np.float32
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
