"""Part "learning": how fast the demo recipe makes a model that segments people it never saw.

Builds the demo's train footage (seed 0) and footage of other people (seed 1), and one clip
store whose train split is the demo's people and whose val split is the other people over
backgrounds no train clip uses. ``recseg train`` then trains the demo's first model with the
demo's recipe (``recseg.workflows.demo.FULL``: size, batch, schedule, LR, epochs) against a
local ``mlflow server``; its per-epoch ``val_fg_iou`` (held-out people and backgrounds) against
the wall seconds since the run started is the learning curve. ``time_to_working_model_s`` is
the first time it reaches 0.80 (None: not within the epochs trained).

The run is watched (its held-out IoU printed per epoch) and stopped once the figure is decided:
when an epoch reaches 0.80, or when the run has been going for ``--learning-cap-s`` seconds
(default the target plus 30 s of grace for the last evaluation to be logged, 330 s) without
reaching it: any later epoch would come after the target, so it is missed whatever the rest of
the recipe does. On a 2-core CPU the demo recipe's 4 epochs take 420-500 s; ``--learning-cap-s
0`` runs them all (the whole learning curve).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient

from benchmarks.common import REPO, TARGETS, Part, note
from benchmarks.tracking import _env, _run, _stop, mlflow_server
from recseg.tracking.runs import quiet_mlflow
from recseg.workflows.demo import FULL, QUICK

NAME = "learning"
EXPERIMENT = "bench-learning"
WORKING = 0.80  # foreground IoU of a model that segments people
TARGET_S = TARGETS["time_to_working_model_s"][1]
CAP_GRACE_S = 30.0  # for the last evaluation before the target to reach the tracking server
POLL_S = 5.0  # how often the watched run's metrics are read
COLUMNS = ["epoch", "steps", "wall s", "held-out fg IoU", "held-out mIoU", "lr"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("learning part")
    g.add_argument("--learning-model", default="Deep+_mobile")
    g.add_argument(
        "--learning-epochs", type=int, default=0,
        help="epochs of the demo recipe (default: the demo's; more epochs stretch its schedule)",
    )  # fmt: skip
    g.add_argument("--learning-heldout-videos", type=int, default=4, help="videos of new people")
    g.add_argument(
        "--learning-cap-s", type=float, default=TARGET_S + CAP_GRACE_S,
        help=f"stop the run after this many seconds without reaching {WORKING:.2f} (default "
        f"{TARGET_S + CAP_GRACE_S:g}: the target and {CAP_GRACE_S:g} s; at least the target; "
        "0: run the whole recipe)",
    )  # fmt: skip


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        os.symlink(target.resolve(), link)


def build_store(args: argparse.Namespace, work: Path, uri: str) -> Path:
    """Train split: the demo's footage; val split: other people (seed 1) on val backgrounds."""
    scale = QUICK if args.quick else FULL
    store = work / "store"
    if (store / "store.json").is_file():
        return store
    log = work / "data.log"
    common = ["--seconds", f"{scale.seconds:g}", "--size", scale.footage_size, "--hard"]
    note(f"footage: {scale.videos} videos of the demo's people ...")
    _run(["footage", str(work / "people"), "--videos", str(scale.videos), *common], uri, log)
    others = ["--videos", str(args.learning_heldout_videos), "--seed", "1", "--backgrounds", "1"]
    note(f"footage: {args.learning_heldout_videos} videos of other people (held out) ...")
    _run(["footage", str(work / "others"), *others, *common], uri, log)
    for split, source in (("train", "people"), ("val", "others")):
        for video in sorted((work / source / "videos").glob("*.mp4")):
            _link(video, work / "videos" / split / f"{source}-{video.name}")
            _link(work / source / "truth" / f"{video.stem}.npz",
                  work / "truth" / f"{source}-{video.stem}.npz")  # fmt: skip
    note("recseg preprocess: one store, val split = the other people ...")
    _run(["preprocess", "--videos", str(work / "videos"),
          "--backgrounds", str(work / "people" / "backgrounds"), "--out", str(store),
          "--size", scale.size, "--clip-seconds", f"{scale.clip_seconds:g}",
          "--labels", "truth", "--truth", str(work / "truth"), "--experiment", EXPERIMENT],
         uri, log)  # fmt: skip
    return store


def cap_s(args: argparse.Namespace) -> float:
    """Seconds after which a run that has not reached ``WORKING`` is stopped (0: never); never
    below the target, so that stopping cannot turn a met target into a missed one."""
    return max(args.learning_cap_s, TARGET_S) if args.learning_cap_s else 0.0


def _newest_run(client: MlflowClient, since_ms: float) -> Any:
    """The newest ``recseg train`` run of ``EXPERIMENT`` started after ``since_ms``, or None."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], "tags.`recseg.kind` = 'train'",
                              order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0] if runs and runs[0].info.start_time >= since_ms else None


def decided(points: list[dict[str, Any]], elapsed: float, cap: float) -> str:
    """Why the run may stop now ("" while the figure is open): an epoch reached ``WORKING``,
    or ``cap`` seconds passed without (every later epoch would come after the cap)."""
    if time_to(points, WORKING) is not None:
        return f"stopped at the first epoch at or above {WORKING:.2f}"
    if cap and elapsed >= cap:
        return f"stopped after {cap:.0f} s without reaching {WORKING:.2f}"
    return ""


def train(args: argparse.Namespace, store: Path, work: Path, uri: str) -> tuple[str, str]:
    """Train with the demo's recipe, watched: each epoch's held-out IoU is printed, and the run
    is stopped (SIGTERM: checkpoint, exit) once ``decided``. The run id and why it stopped
    ("" when the recipe ran to its end)."""
    scale = QUICK if args.quick else FULL
    epochs = args.learning_epochs or scale.epochs
    command = ["train", "--data", str(store), "--model", args.learning_model,
               "--loss", "CrossDice", "--epochs", str(epochs),
               "--batch-size", str(scale.batch_size), "--seq-len", str(scale.seq_len),
               "--num-workers", str(scale.num_workers), "--device", args.device.type,
               "--checkpoint-dir", str(work / "checkpoints"), "--experiment", EXPERIMENT,
               *scale.train_options]  # fmt: skip
    cap = cap_s(args)
    unless = f", stopped at {cap:.0f} s unless {WORKING:.2f} is reached" if cap else ""
    note(f"recseg train {args.learning_model}: {epochs} epochs{unless} ...")
    client = MlflowClient(tracking_uri=uri)
    log, since = work / "train.log", time.time() * 1000 - 1000
    run, seen, why = None, 0, ""
    with open(log, "ab") as out:
        out.write(f"$ recseg {' '.join(command)}\n".encode())
        out.flush()
        proc = subprocess.Popen(
            [sys.executable, "-m", "recseg", *command], stdout=out, stderr=subprocess.STDOUT,
            env=_env(uri, args.threads), cwd=REPO, start_new_session=True,
        )  # fmt: skip
        try:
            while not why and proc.poll() is None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=POLL_S)
                with contextlib.suppress(Exception):  # the server busy or the run not yet there
                    run = run or _newest_run(client, since)
                    if run is not None:
                        points = curve(client, run.info.run_id)
                        seen = _print_points(points, seen)
                        why = decided(points, time.time() - run.info.start_time / 1000, cap)
        finally:
            _stop(proc, grace=60)
    if not why and proc.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"`recseg train` exited with code {proc.returncode}:\n{tail}")
    run = run or _newest_run(client, since)
    if run is None:
        raise RuntimeError(f"no recseg train run in experiment {EXPERIMENT}; see {log}")
    _print_points(curve(client, run.info.run_id), seen)
    note(why or "the recipe ran to its end")
    return run.info.run_id, why


def _print_points(points: list[dict[str, Any]], seen: int) -> int:
    for p in points[seen:]:
        note(f"epoch {p['epoch']}: held-out fg IoU {p['fg_iou']:.3f} at {p['wall_s']:.0f} s")
    return max(seen, len(points))


def curve(client: MlflowClient, run_id: str) -> list[dict[str, Any]]:
    """Per epoch: steps, wall seconds since the run started, held-out fg IoU and mIoU, LR."""
    run = client.get_run(run_id)
    start = run.info.start_time
    steps = int(run.data.params.get("steps_per_epoch", 0))

    def history(key: str) -> dict[int, Any]:
        return {m.step: m for m in client.get_metric_history(run_id, key)}

    fg, miou, lr = history("val_fg_iou"), history("val_miou"), history("lr")
    return [
        {
            "epoch": e,
            "steps": e * steps,
            "wall_s": (m.timestamp - start) / 1000,
            "fg_iou": m.value,
            "miou": miou[e].value if e in miou else None,
            "lr": lr[e].value if e in lr else None,
        }
        for e, m in sorted(fg.items())
    ]


def time_to(points: list[dict[str, Any]], target: float) -> float | None:
    """Wall seconds of the first point at or above ``target`` (None: never)."""
    return next((p["wall_s"] for p in points if p["fg_iou"] >= target), None)


def run(args: argparse.Namespace) -> Part:
    """Figures: ``time_to_working_model_s`` (to held-out fg IoU 0.80) and the final IoU."""
    quiet_mlflow()
    work = args.work / NAME
    work.mkdir(parents=True, exist_ok=True)
    note("starting a local mlflow server ...")
    with mlflow_server(work / "server") as uri:
        store = build_store(args, work, uri)
        run_id, why = train(args, store, work, uri)
        points = curve(MlflowClient(tracking_uri=uri), run_id)
    reached = time_to(points, WORKING)
    last = points[-1] if points else {}
    scale = QUICK if args.quick else FULL
    rows = [[p["epoch"], p["steps"], p["wall_s"], p["fg_iou"], p["miou"], p["lr"]] for p in points]
    verdict = (f"reached {WORKING:.2f} after {reached:.0f} s" if reached is not None
               else f"did not reach {WORKING:.2f} in {last.get('wall_s', 0):.0f} s")  # fmt: skip
    cap = cap_s(args)
    stop = (f"; the run is stopped once the figure is decided (an epoch at {WORKING:.2f}, or "
            f"{cap:.0f} s = {cap / TARGET_S:g}x the target without): {why or 'ran to its end'}"
            if cap else "")  # fmt: skip
    return Part(
        name=NAME,
        columns=COLUMNS,
        rows=rows,
        figures={
            "time_to_working_model_s": reached,
            "learning_final_heldout_fg_iou": last.get("fg_iou"),
            "learning_wall_s": last.get("wall_s"),
        },
        method=(
            f"the demo recipe ({args.learning_model}, {scale.size}, batch {scale.batch_size} x "
            f"seq-len {scale.seq_len}, {' '.join(scale.train_options)}, "
            f"{args.learning_epochs or scale.epochs} epochs) with `recseg train` on "
            f"{args.device.type}, {args.threads} threads; held-out = val split: "
            f"{args.learning_heldout_videos} videos of people not in the train footage over "
            f"backgrounds no train clip uses; all {scale.videos} footage videos train (the demo's "
            f"own train split holds 70 % of them). Time to a working model (fg IoU >= "
            f"{WORKING:.2f}): {verdict}{stop}."
        ),
        details={
            "run_id": run_id,
            "store": str(store),
            "curve": points,
            "stopped": why,
            "cap_s": cap,
        },
    )
