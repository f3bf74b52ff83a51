"""`recseg evaluate` and `recseg promote` against a real MLflow server, on two short real
training runs (Deep+_mobile and Deep_mobile_gruV3) of a small clip store with a test split."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import av
import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from recseg.config import build
from recseg.data.loader import make_loader
from recseg.data.store import ClipStore
from recseg.evaluation.evaluate import evaluate
from recseg.evaluation.latency import gflops_per_frame, measure_latency
from recseg.models import build_model
from recseg.tracking.model_uri import load_network
from recseg.tracking.train_job import train
from recseg.training.config import TrainConfig
from recseg.training.losses import build_loss
from tests.media import one_error_line, recseg_in_process, run_recseg
from tests.stores import make_store

MODELS = ("Deep+_mobile", "Deep_mobile_gruV3")
TEST_METRICS = ("test_miou", "test_fg_iou", "test_bg_iou", "test_dice", "test_fg_dice",
                "test_pixel_accuracy", "test_per_class_accuracy", "test_flicker", "test_loss",
                "test_latency_ms", "test_latency_p90_ms", "test_fps")  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]
FAST = ("--latency-frames", "4", "--warmup", "1", "--video-frames", "6", "--num-workers", "0")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: 1 thread is fastest


@pytest.fixture(scope="module")
def world(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two finished training runs in a fresh experiment; the server is the tracking URI."""
    root = tmp_path_factory.mktemp("evaluate")
    store = make_store(root / "store", train=(8, 8), val=(6,), test=(8, 6), size=(32, 48))
    experiment = f"eval-{uuid.uuid4().hex[:8]}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mp.delenv("MLFLOW_EXPERIMENT_ID", raising=False)  # set_experiment exports it: undo
        mlflow.set_tracking_uri(mlflow_server)
        runs = {}
        for i, model in enumerate(MODELS):
            cfg = build(
                TrainConfig,
                {"data": str(store), "model": model, "loss": "CrossDice", "epochs": 1,
                 "batch_size": 2, "seq_len": 2, "num_workers": 0, "seed": i,
                 "experiment": experiment, "checkpoint_dir": str(root / "ckpt"),
                 "system_metrics": False},
            )  # fmt: skip
            assert train(cfg, echo=lambda _: None) == 0
            runs[model] = mlflow.last_active_run().info.run_id
        try:
            yield {"store": store, "experiment": experiment, "runs": runs, "root": root,
                   "env": {"MLFLOW_TRACKING_URI": mlflow_server}}  # fmt: skip
        finally:
            mlflow.set_tracking_uri(None)


@pytest.fixture(scope="module")
def evaluated(world: dict) -> dict:
    result = run_recseg(
        "evaluate", "--data", str(world["store"]), "--experiment", world["experiment"], *FAST,
        cwd=world["root"], env=world["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return {**world, "stdout": result.stdout}


def test_experiment_evaluation_logs_test_metrics_into_every_run(evaluated: dict) -> None:
    client = MlflowClient()
    for model, run_id in evaluated["runs"].items():
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        missing = [k for k in TEST_METRICS if k not in run.data.metrics]
        assert not missing, (model, missing)
        assert 0.0 <= run.data.metrics["test_miou"] <= 1.0
        assert run.data.metrics["gflops"] > 0 and run.data.metrics["params_total"] > 1e6
        assert run.data.tags["recseg.eval.device"].startswith("cpu")
        files = {a.path for a in client.list_artifacts(run_id, "evaluation")}
        assert {"evaluation/test_predictions.png", "evaluation/test_predictions.mp4",
                "evaluation/evaluation.json"} <= files  # fmt: skip
        video = client.download_artifacts(run_id, "evaluation/test_predictions.mp4")
        with av.open(video) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            assert sum(1 for _ in container.decode(stream)) == 6
    assert evaluated["stdout"].count("test mIoU") == 2


def test_summary_run_has_table_and_figures(evaluated: dict) -> None:
    client = MlflowClient()
    exp = client.get_experiment_by_name(evaluated["experiment"])
    summaries = client.search_runs([exp.experiment_id], "tags.`recseg.kind` = 'evaluate'")
    assert len(summaries) == 1
    run = summaries[0]
    assert run.data.metrics["runs_summarised"] == 2
    files = {a.path for a in client.list_artifacts(run.info.run_id, "summary")}
    assert {"summary/summary.csv", "summary/summary.html", "summary/runs.csv"} <= files
    assert any(f.endswith(".png") and "latency" in f for f in files)
    assert any(f.endswith(".png") and "mobilenet_v2" in f for f in files)
    csv = Path(client.download_artifacts(run.info.run_id, "summary/runs.csv")).read_text()
    assert all(run_id in csv for run_id in evaluated["runs"].values())


def test_test_metrics_match_the_training_metric_code(evaluated: dict) -> None:
    """The logged numbers are what the shared evaluate() gives for the logged model."""
    client = MlflowClient()
    run_id = evaluated["runs"]["Deep_mobile_gruV3"]
    run = client.get_run(run_id)
    loaded = load_network(run.data.tags["recseg.model_uri"])
    store = ClipStore(evaluated["store"])
    loader = make_loader(store, "test", batch_size=1, seq_len=3, train=False, size=loaded.size)
    direct = evaluate(loaded.model, loader, build_loss("CrossDice"), torch.device("cpu"))
    for key in ("miou", "fg_iou", "dice", "pixel_accuracy", "flicker"):
        logged, value = run.data.metrics[f"test_{key}"], direct.metrics[key]
        assert math.isclose(logged, value, rel_tol=1e-5, abs_tol=1e-6), (key, logged, value)


def test_second_evaluation_skips_evaluated_runs(evaluated: dict) -> None:
    result = run_recseg(
        "evaluate", "--data", str(evaluated["store"]), "--experiment", evaluated["experiment"],
        *FAST, cwd=evaluated["root"], env=evaluated["env"],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 run(s) already evaluated" in result.stdout
    assert "test mIoU" not in result.stdout


def test_promote_sets_champion_on_the_best_run(evaluated: dict) -> None:
    client = MlflowClient()
    args = (
        "promote",
        "--experiment",
        evaluated["experiment"],
        "--name",
        "seg-" + uuid.uuid4().hex[:6],
    )
    result = run_recseg(*args, cwd=evaluated["root"], env=evaluated["env"])
    assert result.returncode == 0, result.stderr
    name = args[-1]
    version = client.get_model_version_by_alias(name, "champion")
    scores = {r: client.get_run(r).data.metrics["test_fg_iou"] for r in evaluated["runs"].values()}
    assert scores[version.run_id] == max(scores.values())  # (ties: either run)
    assert version.tags["metric"] == "test_fg_iou"
    assert float(version.tags["test_fg_iou"]) == pytest.approx(scores[version.run_id], rel=1e-5)
    again = run_recseg(*args, cwd=evaluated["root"], env=evaluated["env"])
    assert again.returncode == 0, again.stderr
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    lower = run_recseg(*args, "--metric", "test_flicker", "--alias", "steady",
                       cwd=evaluated["root"], env=evaluated["env"])  # fmt: skip
    assert lower.returncode == 0, lower.stderr
    flicker = {
        r: client.get_run(r).data.metrics["test_flicker"] for r in evaluated["runs"].values()
    }
    assert flicker[client.get_model_version_by_alias(name, "steady").run_id] == min(
        flicker.values()
    )


def test_evaluate_a_registered_model_uri(evaluated: dict) -> None:
    name = "seg-" + uuid.uuid4().hex[:6]
    env, root = evaluated["env"], evaluated["root"]
    promoted = run_recseg("promote", "--experiment", evaluated["experiment"], "--name", name,
                          cwd=root, env=env)  # fmt: skip
    assert promoted.returncode == 0, promoted.stderr
    result = run_recseg("evaluate", "--data", str(evaluated["store"]), "--model-uri",
                        f"models:/{name}@champion", *FAST, "--video-frames", "0",
                        "--splits", "test,val", cwd=root, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    client = MlflowClient()
    exp = client.get_experiment_by_name("evaluate")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    assert "test_fg_iou" in runs[0].data.metrics
    assert runs[0].data.params["model_uri"] == f"models:/{name}@champion"
    assert "eval_val_miou" in runs[0].data.metrics  # the extra split, under its own prefix
    files = {a.path for a in client.list_artifacts(runs[0].info.run_id, "evaluation")}
    assert "evaluation/test_predictions.png" in files
    assert "evaluation/test_predictions.mp4" not in files  # --video-frames 0
    fp32 = runs[0].data
    assert fp32.tags["recseg.eval.device"].endswith(", fp32")
    # The same model in bfloat16: scored and timed through the bf16 path, tagged as such.
    result = run_recseg("evaluate", "--data", str(evaluated["store"]), "--model-uri",
                        f"models:/{name}@champion", *FAST, "--video-frames", "0",
                        "--precision", "bf16", cwd=root, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    bf16 = runs[0].data
    assert bf16.tags["recseg.eval.device"].endswith(", bf16")
    assert abs(bf16.metrics["test_fg_iou"] - fp32.metrics["test_fg_iou"]) < 0.02
    assert bf16.metrics["gflops"] == pytest.approx(fp32.metrics["gflops"])


def test_bad_input_one_line(evaluated: dict, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """In this process (start-up is most of a subprocess's time); subprocess runs above."""
    client = MlflowClient()
    store = str(evaluated["store"])
    exp = client.get_experiment_by_name(evaluated["experiment"])
    running = client.create_run(exp.experiment_id, tags={"recseg.kind": "train"}).info.run_id
    empty = f"empty-{uuid.uuid4().hex[:6]}"
    mlflow.create_experiment(empty)
    no_test = make_store(tmp_path / "notest", train=(6,), val=(6,), test=())
    cases = [
        (("--data", store, "--run-id", running), ("has no model",)),
        (("--data", store, "--experiment", empty), ("no finished training runs",)),
        (("--data", store, "--experiment", "no-such-experiment"), ("no experiment named",)),
        (("--data", store, "--model-uri", "models:/nope@champion"), ("models:/nope@champion",)),
        (("--data", store, "--experiment", "x", "--run-id", running), ("exactly one of",)),
        (("--data", str(no_test), "--experiment", evaluated["experiment"]), ("no test clips",)),
        (("--data", str(tmp_path), "--experiment", evaluated["experiment"]), ("store",)),
    ]
    for args, needles in cases:
        one_error_line(recseg_in_process(["evaluate", *args, *FAST], capsys), *needles)
    one_error_line(
        recseg_in_process(["promote", "--experiment", empty], capsys), "no finished training"
    )
    fresh = f"fresh-{uuid.uuid4().hex[:6]}"  # finished runs, none evaluated: promote refuses
    with mlflow.start_run(experiment_id=mlflow.create_experiment(fresh)) as r:
        mlflow.set_tags({"recseg.kind": "train", "recseg.model_uri": "models:/m-x"})
    assert client.get_run(r.info.run_id).info.status == "FINISHED"
    one_error_line(recseg_in_process(["promote", "--experiment", fresh], capsys), "test_fg_iou")
    one_error_line(
        recseg_in_process(["promote", "--experiment", fresh, "--metric", "val_miou"], capsys),
        "--metric",
    )


def test_latency_and_flops() -> None:
    model = build_model("Deep_mobile_gruV1").eval()
    frames = np.random.default_rng(0).random((3, 3, 32, 48), dtype=np.float32)
    lat = measure_latency(model, frames, torch.device("cpu"), timed=5, warmup=1)
    assert lat.frames == 5 and 0 < lat.median_ms <= lat.p90_ms and lat.threads == 1
    assert lat.fps == pytest.approx(1000 / lat.median_ms)
    small, large = gflops_per_frame(model, (32, 48)), gflops_per_frame(model, (64, 96))
    assert small > 0 and 3.5 < large / small < 4.5
    base = gflops_per_frame(build_model("Deep+_mobile"), (64, 96))
    assert base < large  # the recurrent unit costs compute


def test_mlflow_run_evaluate_entry_point(evaluated: dict) -> None:
    """`mlflow run -e evaluate` logs its -P values first; recseg adds params without clashing."""
    env = {
        **os.environ,
        **evaluated["env"],
        "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
    }
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    cmd = [sys.executable, "-m", "mlflow", "run", str(ROOT), "-e", "evaluate",
           "--env-manager", "local", "--experiment-name", evaluated["experiment"],
           "-P", f"data={evaluated['store']}", "-P", f"experiment={evaluated['experiment']}",
           "-P", "force=true", "-P", "latency_frames=2", "-P", "warmup=0",
           "-P", "video_frames=0", "-P", "num_workers=0"]  # fmt: skip
    result = subprocess.run(cmd, cwd=evaluated["root"], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("test mIoU") == 2  # --force: both runs again
    client = MlflowClient()
    exp = client.get_experiment_by_name(evaluated["experiment"])
    runs = client.search_runs(
        [exp.experiment_id], "tags.`recseg.kind` = 'evaluate'", order_by=["start_time DESC"]
    )
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["force"] == "true"
    assert "summary/summary.html" in {
        a.path for a in client.list_artifacts(runs[0].info.run_id, "summary")
    }
