"""The LR range test: ``range_test`` on real batches of a tiny store, and ``recseg lr-find`` (and
the MLproject entry point) against a real MLflow server."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from recseg.data.loader import make_loader
from recseg.errors import InputError
from recseg.models import build_model
from recseg.tracking import tags as T
from recseg.tracking.lr_find import run_lr_find
from recseg.training.losses import build_loss
from recseg.training.lr_find import LrFindConfig, lr_at, range_test
from recseg.training.optim import build_optimizer
from tests.media import one_error_line, recseg_in_process, run_recseg
from tests.stores import make_store

MODEL = "Deep_mobile_gruV1"
CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # subprocesses: the machine is shared

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny inputs: 1 thread is fastest


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_store(tmp_path_factory.mktemp("lr-store") / "store", size=(32, 48))


def loader_for(store: Path, seq_len: int = 3):
    return make_loader(store, "train", batch_size=2, seq_len=seq_len, train=True, augment=True,
                       seed=0, num_workers=0)  # fmt: skip


def same(a: Any, b: Any) -> bool:
    """Nested state dicts equal, tensors by ``torch.equal``."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_range_test_leaves_model_optimizer_and_loader_untouched(store: Path) -> None:
    model = build_model(MODEL)
    loader, loss_fn = loader_for(store), build_loss("CrossDice")
    optimizer = build_optimizer("adam", model, 1e-3, 1e-4)
    batch = next(iter(loader_for(store)))  # one real step first: Adam has state to keep
    logits, _ = model(batch["frames"], None, batch["reset"])
    loss_fn(logits, batch["labels"]).backward()
    optimizer.step()
    model.eval()
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    position = loader.state_dict()
    start, end, n = 1e-6, 1e-4, 12
    curve = range_test(model, optimizer, loader, loss_fn, CPU, start_lr=start, end_lr=end,
                       num_iter=n, smoothing=0.05, diverge=1e6)  # fmt: skip
    assert same(model.state_dict(), before[0])
    assert same(optimizer.state_dict(), before[1]) and optimizer.state_dict()["state"]
    assert all(same(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert not model.training and loader.state_dict() == position
    # the whole exponential sweep from start to end
    assert not curve.stopped_early and len(curve.lrs) == len(curve.losses) == n
    assert curve.lrs[0] == pytest.approx(start) and curve.lrs[-1] == pytest.approx(end)
    steps = np.diff(np.log(curve.lrs))
    assert np.allclose(steps, math.log(end / start) / (n - 1))
    # the smoothed loss is the bias-corrected moving average of the raw one
    average, expected = 0.0, []
    for i, loss in enumerate(curve.losses):
        average = 0.95 * average + 0.05 * loss
        expected.append(average / (1 - 0.95 ** (i + 1)))
    assert curve.smoothed == pytest.approx(expected, rel=1e-12)
    assert curve.smoothed[0] == pytest.approx(curve.losses[0], rel=1e-12)
    low = int(np.argmin(curve.smoothed))
    assert curve.min_loss_lr == curve.lrs[low]
    assert curve.suggestion is None or curve.suggestion in curve.lrs[1:-1]


def test_range_test_stops_when_the_loss_diverges(store: Path) -> None:
    torch.manual_seed(0)
    model = build_model(MODEL)
    optimizer = build_optimizer("sgd", model, 1e-2, 0.0)
    n = 20
    curve = range_test(model, optimizer, loader_for(store, seq_len=2), build_loss("CrossEntropy"),
                       CPU, start_lr=1e-2, end_lr=1e4, num_iter=n, smoothing=0.05,
                       diverge=5.0)  # fmt: skip
    assert curve.stopped_early
    assert 0 < len(curve.lrs) < n
    assert all(math.isfinite(v) for v in curve.losses)
    assert curve.lrs == pytest.approx([lr_at(i, 1e-2, 1e4, n) for i in range(len(curve.lrs))])


class Recorder(nn.Module):
    """Passes everything to ``inner`` and records the state and reset flags it was given."""

    def __init__(self, inner: nn.Module, fail_at: int = -1) -> None:
        super().__init__()
        self.inner, self.fail_at = inner, fail_at
        self.calls: list[tuple[dict | None, torch.Tensor]] = []

    def forward(self, frames: torch.Tensor, state: dict | None = None, reset: Any = None) -> Any:
        if len(self.calls) == self.fail_at:
            raise RuntimeError("out of memory (on purpose)")
        self.calls.append((state, reset.clone()))
        return self.inner(frames, state, reset)


def test_state_is_carried_per_lane_and_reset_at_clip_starts(store: Path) -> None:
    model = Recorder(build_model(MODEL))
    loader = loader_for(store)
    steps_per_epoch = len(loader)
    n = steps_per_epoch + 4  # crosses into the next epoch
    optimizer = build_optimizer("adam", model, 1e-6, 0.0)
    curve = range_test(model, optimizer, loader, build_loss("CrossDice"), CPU, start_lr=1e-6,
                       end_lr=1e-5, num_iter=n, smoothing=0.05, diverge=1e6)  # fmt: skip
    assert len(curve.lrs) == n == len(model.calls)
    expected = []  # the loader's own flags, epoch after epoch
    fresh = loader_for(store)
    while len(expected) < n:
        expected += [b["reset"] for b in fresh]
    for i, (state, reset) in enumerate(model.calls):
        assert torch.equal(reset, expected[i]), i
        if i == 0:
            assert state is None and bool(reset.all())
        else:
            assert state is not None and not any(v.requires_grad for v in state.values())
    assert bool(model.calls[steps_per_epoch][1].all())  # a new epoch: every lane starts a clip
    assert not all(bool(r.all()) for _, r in model.calls[1:])  # lanes do carry state


def test_range_test_restores_everything_when_a_step_fails(store: Path) -> None:
    model = Recorder(build_model(MODEL), fail_at=3)
    loader = loader_for(store)
    optimizer = build_optimizer("adamw", model, 1e-3, 1e-4)
    before = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    with pytest.raises(RuntimeError, match="on purpose"):
        range_test(model, optimizer, loader, build_loss("CrossDice"), CPU, start_lr=1e-5,
                   end_lr=1.0, num_iter=10, smoothing=0.05, diverge=5.0)  # fmt: skip
    assert len(model.calls) == 3
    assert same(model.state_dict(), before[0]) and same(optimizer.state_dict(), before[1])
    assert all(p.grad is None for p in model.parameters())
    assert (loader.epoch, loader.step) == (0, 0) and model.training


# ---- MLflow ------------------------------------------------------------------------------------
ARGS = ("--model", MODEL, "--loss", "CrossDice", "--batch-size", "2", "--seq-len", "2",
        "--num-workers", "0")  # fmt: skip


def download_json(client: MlflowClient, run_id: str, name: str, tmp: Path) -> Any:
    return json.loads(Path(client.download_artifacts(run_id, name, str(tmp))).read_text())


def artifacts(client: MlflowClient, run_id: str) -> set[str]:
    return {f.path for f in client.list_artifacts(run_id)}


def test_cli_logs_a_parent_with_one_child_per_weight_decay(
    store: Path, mlflow_server: str, tmp_path: Path
) -> None:
    experiment = f"lr-{uuid.uuid4().hex[:8]}"
    result = run_recseg("lr-find", "--data", str(store), *ARGS, "--weight-decays", "0,1e-4",
                        "--experiment", experiment, "--num-iter", "12", cwd=tmp_path,
                        env={"MLFLOW_TRACKING_URI": mlflow_server, **ONE_THREAD})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines[:2]] == ["weight decay 0", "weight decay 1e-4"]
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(runs) == 3
    parent = parents[0]
    assert lines[-1] == f"parent run {parent.info.run_id} (experiment {experiment})"
    assert parent.info.status == "FINISHED"
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == 2
    for run in (parent, *children):
        assert run.data.tags[T.KIND] == "lr_find" and run.data.tags[T.MODEL] == MODEL
        assert run.data.tags[T.CELL] == "gru" and run.data.tags[T.POSITION] == "output"
    wds = {}
    for child in children:
        rid = child.info.run_id
        assert child.info.status == "FINISHED"
        assert child.data.params["num_iter"] == "12" and child.data.params["batch_size"] == "2"
        curve = download_json(client, rid, "lr_find.json", tmp_path / rid)
        history = client.get_metric_history(rid, "lr_find_loss")
        assert sorted(m.step for m in history) == list(range(len(curve["lr"])))
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == curve["loss"]
        assert {"lr_find.png", "lr_find.json"} <= artifacts(client, rid)
        assert "min_loss_lr" in child.data.metrics
        wds[float(child.data.params["weight_decay"])] = curve
    assert set(wds) == {0.0, 1e-4}
    assert {"lr_find.png", "results.json"} <= artifacts(client, parent.info.run_id)
    results = download_json(client, parent.info.run_id, "results.json", tmp_path / "parent")
    assert results["wds"] == [0.0, 1e-4] and len(results["hists"]) == 2
    for wd, hist in zip(results["wds"], results["hists"], strict=True):
        assert hist == {"lr": wds[wd]["lr"], "loss": wds[wd]["smoothed"]}
    png = client.download_artifacts(parent.info.run_id, "lr_find.png", str(tmp_path / "png"))
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def tracking(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    try:
        yield mlflow_server
    finally:
        mlflow.set_tracking_uri(None)


def test_one_weight_decay_is_one_run(store: Path, tracking: str, tmp_path: Path) -> None:
    experiment = f"lr-one-{uuid.uuid4().hex[:8]}"
    cfg = LrFindConfig(data=str(store), model=MODEL, loss="SoftDice", weight_decays="1e-8",
                       batch_size=2, seq_len=2, num_iter=6, num_workers=0, device="cpu",
                       experiment=experiment)  # fmt: skip
    lines: list[str] = []
    result = run_lr_find(cfg, echo=lines.append, progress=False)
    assert len(result.sweeps) == 1 and result.sweeps[0].run_id == result.run_id
    assert lines[-1].startswith("weight decay 1e-8: suggested lr ")
    client = MlflowClient(tracking)
    runs = client.search_runs([result.experiment_id])
    assert [r.info.run_id for r in runs] == [result.run_id]
    run = runs[0]
    assert run.data.params["weight_decay"] == "1e-8" and run.data.tags[T.KIND] == "lr_find"
    assert "min_loss_lr_wd_1e-8" in run.data.metrics
    assert {"lr_find.png", "lr_find.json", "results.json"} <= artifacts(client, result.run_id)
    results = download_json(client, result.run_id, "results.json", tmp_path)
    assert results["wds"] == [1e-8] and len(results["hists"][0]["lr"]) == 6


def test_a_failing_sweep_fails_its_run_and_the_parent(
    tracking: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    broken = make_store(tmp_path / "broken", size=(32, 48))
    for clip in (broken / "clips" / "train").iterdir():
        clip.write_bytes(b"not a clip")  # the manifest is fine: the sweep fails while loading
    experiment = f"lr-fail-{uuid.uuid4().hex[:8]}"
    cfg = LrFindConfig(data=str(broken), model=MODEL, loss="CrossDice", weight_decays="0,1e-4",
                       batch_size=2, seq_len=2, num_iter=4, num_workers=0, device="cpu",
                       experiment=experiment)  # fmt: skip
    with pytest.raises(InputError, match="damaged or not a recseg clip file"):
        run_lr_find(cfg, progress=False)
    client = MlflowClient(tracking)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]  # parent, first child
    child = next(r for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert child.data.params["weight_decay"] == "0"


def test_entry_point_nests_under_the_run_mlflow_started(
    store: Path, mlflow_server: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_server)
    exp_id = client.create_experiment(f"lr-ep-{uuid.uuid4().hex[:8]}")
    started = client.create_run(exp_id).info.run_id  # what `mlflow run` does before the command
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_RUN_ID": started,
           "MLFLOW_EXPERIMENT_ID": exp_id, **ONE_THREAD}  # fmt: skip
    cmd = [sys.executable, "-m", "entrypoints.lr_find", "--data", str(store), *ARGS,
           "--weight-decays", "0,1e-6", "--num-iter", "4", "--faithful", "false",
           "--experiment", "lr_find"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = client.search_runs([exp_id])
    assert len(runs) == 3
    children = [r for r in runs if r.info.run_id != started]
    assert all(r.data.tags["mlflow.parentRunId"] == started for r in children)
    parent = client.get_run(started)
    assert parent.info.status == "FINISHED" and parent.data.tags[T.KIND] == "lr_find"
    assert "results.json" in artifacts(client, started)


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (("--weight-decays", "abc"), ("--weight-decays", "abc")),
        (("--weight-decays", "-1"), ("--weight-decays", "-1")),
        (("--weight-decays", "0,1e-4,0.0001"), ("--weight-decays", "twice")),
        (("--num-iter", "1"), ("--num-iter",)),
        (("--end-lr", "1e-8"), ("--end-lr", "--start-lr")),
        (("--data", "NOSTORE"), ("--data", "not a clip store")),
        (("--model", "Deep_mobile_gruV9"), ("--model", "Deep_mobile_gruV9")),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    store: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    extra: tuple[str, ...],
    needles: tuple[str, ...],
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "NOSTORE").mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # MLflow's default: ./mlflow.db
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # restored afterwards
    args = dict(zip(("--data", *ARGS[::2]), (str(store), *ARGS[1::2]), strict=True))
    args.update(dict(zip(extra[::2], extra[1::2], strict=True)))
    if args["--data"] == "NOSTORE":
        args["--data"] = str(tmp_path / "NOSTORE")
    result = recseg_in_process(["lr-find", *(x for pair in args.items() for x in pair)], capsys)
    one_error_line(result, *needles)
    assert list(work.iterdir()) == []  # no run, no mlflow.db: nothing half-written
