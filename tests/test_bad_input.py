"""The bad-input catalogue: every command, given what users get wrong, exits 2 (or the
documented code) with one ``recseg: error:`` line naming the problem, no traceback, and
nothing half-written.

``CASES`` is the table. Each row's argv is a template over the paths of a shared ``world``
(``{w}``: its folder of good and bad files; ``{good}`` a real video; ``{store}`` a clip store;
``{model}`` a recseg model folder; ``{mismatch}`` that folder holding another architecture's
weights, ``{edited}`` with its architecture JSON naming another model; ``{run_a}`` a run of
experiment ``bad-input-a``), the test's own empty working folder ``{tmp}``, ``{ro}``: a
read-only tmpfs (root; else a folder without write permission) and ``{full}``: a full 256 KiB
tmpfs (root; else a folder whose writes fail with EFBIG under RLIMIT_FSIZE in a subprocess).
Every folder involved must look the same afterwards: nothing written, nothing left behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import shlex
import shutil
import signal
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import torch

from recseg.cli.export import ExportConfig
from recseg.config import fields
from recseg.data.footage import FootageConfig
from recseg.data.preprocess import PreprocessConfig
from recseg.inference import SegmentConfig
from recseg.models import build_model
from recseg.tracking.evaluate_config import EvaluateConfig
from recseg.tracking.pyfunc import log_clip_model
from recseg.training.config import TrainConfig
from recseg.training.lr_find import LrFindConfig
from recseg.training.summary import DescribeConfig
from tests.media import recseg_in_process, run_recseg, write_backgrounds, write_video
from tests.stores import make_store

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]
TRAIN = "train --data {store} --model Deep+_mobile --loss CrossDice"
LR_FIND = "lr-find --data {store} --model Deep+_mobile --loss CrossDice"
SEGMENT = "segment {good} -o {tmp}/o.mp4 --model {model}"
EXPORT = "export --model {model} --format onnx -o {tmp}/m.onnx"
PREP = "preprocess --videos {w}/vids --backgrounds {w}/bgs --size 32x48 --clip-seconds 0.5"
SWEEP = "sweep --data {store} --model Deep+_mobile --loss CrossDice --dry-run"
FOOTAGE = "--videos 1 --seconds 0.4 --size 32x48"
EVAL = "evaluate --data {store} --num-workers 0"
TINY = "--epochs 1 --batch-size 2 --seq-len 3 --num-workers 0 --no-system-metrics"
RUN = "0123456789abcdef0123456789abcdef"
# the commands whose options come from a config class: id prefix -> (config, a valid command)
CONFIGS = {
    "footage": (FootageConfig, f"footage {{tmp}}/o {FOOTAGE}"),
    "prep": (PreprocessConfig, f"{PREP} --out {{tmp}}/s"),
    "train": (TrainConfig, f"{TRAIN} {TINY}"),
    "lr": (LrFindConfig, LR_FIND),
    "eval": (EvaluateConfig, f"{EVAL} --model-uri {{model}}"),
    "seg": (SegmentConfig, SEGMENT),
    "export": (ExportConfig, EXPORT),
    "describe": (DescribeConfig, "describe --model Deep+_mobile --size 32x48"),
}
# the out-of-range values the issue names
OUT_OF_RANGE = {"epochs": "0", "lr": "-1", "batch_size": "0", "seq_len": "0", "fps": "0",
                "clip_seconds": "-1", "time_limit": "-5", "num_workers": "-1"}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Case:
    """One bad input: the argv template, what the one error line must hold, the setup kind,
    the exit code, and an output that exists before (and must stay unchanged)."""

    id: str
    argv: str  # shlex-split after the paths are filled in
    needles: tuple[str, ...]
    setup: str = "plain"  # plain (in-process) | full (disk full) | process (a real process)
    code: int = 2  # 2: bad input, also for a full or unwritable path the user named
    existing: str = ""  # an output there before the command
    env: tuple[tuple[str, str], ...] = ()


def case(id: str, argv: str, *needles: str, **kw: Any) -> Case:
    return Case(id, argv, needles, **kw)


def numeric_cases() -> list[Case]:
    """Every int and float option of every command built from a config: a word for a number,
    and a number out of range where the option has a range (the values the issue names first,
    then -1, 0 or 1e9: the first one the option's check refuses)."""
    rows = []
    for prefix, (cls, base) in CONFIGS.items():
        for f, kind in fields(cls):
            if kind not in (int, float):
                continue
            opt, check = "--" + f.name.replace("_", "-"), f.metadata.get("check")
            rows.append(case(f"{prefix}{opt[1:]}-type", f"{base} {opt} abc", opt, "abc"))
            values = (OUT_OF_RANGE.get(f.name), "-1", "0", "1000000000")
            bad = next((v for v in values if v and check and check(kind(v))), None)
            if bad is not None:
                rows.append(case(f"{prefix}{opt[1:]}-range", f"{base} {opt} {bad}", opt, bad))
    return rows


FULL = {"setup": "full"}
CASES = [
    case("footage-size-zero", f"footage {{tmp}}/o {FOOTAGE} --size 0x10", "--size", "0x10"),
    case("footage-size-huge", f"footage {{tmp}}/o {FOOTAGE} --size 100000x100000", "100000x"),
    case("footage-out-under-file", f"footage {{w}}/afile/o {FOOTAGE}", "afile", "is a file"),
    case("footage-out-is-file", f"footage {{w}}/afile {FOOTAGE}", "afile", "is a file"),
    case("footage-read-only", f"footage {{ro}}/o {FOOTAGE}", "OUT_DIR", "{ro}", "cannot write"),
    case("footage-into-read-only", f"footage {{ro}} {FOOTAGE}", "OUT_DIR", "{ro}", "cannot write"),
    case("footage-disk-full", f"footage {{full}}/o {FOOTAGE}", "writing", "{full}/o", **FULL),
    case("prep-size-huge", f"{PREP} --out {{tmp}}/s --size 100000x100000", "--size", "100000"),
    case("prep-labels", f"{PREP} --out {{tmp}}/s --labels magic", "--labels", "magic"),
    case("prep-videos-missing", f"{PREP} --out {{tmp}}/s --videos {{w}}/nope", "--videos", "nope"),
    case("prep-videos-is-file", f"{PREP} --out {{tmp}}/s --videos {{good}}", "--videos", "good"),
    case("prep-bad-videos", f"{PREP} --out {{tmp}}/s --videos {{w}}/badvids", "--videos", "bad"),
    case("prep-empty-bg", f"{PREP} --out {{tmp}}/s --backgrounds {{w}}/emptybgs", "empty.jpg"),
    case("prep-huge-bg", f"{PREP} --out {{tmp}}/s --backgrounds {{w}}/hugebgs", "huge.png"),
    case("prep-junk-bg", f"{PREP} --out {{tmp}}/s --backgrounds {{w}}/junkbgs", "junkbgs",
         "no images"),
    case("prep-read-only", f"{PREP} --out {{ro}}/s", "--out", "{ro}", "cannot write"),
    case("prep-out-under-file", f"{PREP} --out {{w}}/afile/s", "--out", "afile", "is a file"),
    case("prep-disk-full", f"{PREP} --out {{full}}/s", "writing", "{full}/s", **FULL),
    case("train-size-small", f"{TRAIN} --size 0x10", "--size", "0x10"),
    case("train-model", f"{TRAIN} --model Deep_mobile_fooV9", "--model", "Deep_mobile_fooV9"),
    case("train-loss", f"{TRAIN} --loss Dice2", "--loss", "Dice2"),
    case("train-best-metric", f"{TRAIN} --best-metric val_foo", "--best-metric", "val_foo"),
    case("train-data-missing", f"{TRAIN} --data {{w}}/nope", "--data", "nope"),
    case("train-data-not-store", f"{TRAIN} --data {{w}}/bgs", "--data", "bgs"),
    case("train-data-is-file", f"{TRAIN} --data {{good}}", "--data", "good.mp4"),
    case("train-damaged-clip", f"{TRAIN} --data {{w}}/damaged {TINY}", "damaged", "train0.npz"),
    # resuming may wait --tracking-timeout for a server: a real process with a time limit,
    # so waiting on a user's mistake fails the case instead of hanging the test
    case("train-run-unknown", f"{TRAIN} --run-id {RUN}", "--run-id", RUN, setup="process"),
    case("train-run-other-exp", f"{TRAIN} --run-id {{run_a}} --experiment other",
         "--run-id", "bad-input-a", "other", setup="process"),
    case("lr-weight-decays", f"{LR_FIND} --weight-decays a,b", "--weight-decays", "'a'"),
    case("lr-model", f"{LR_FIND} --model nope", "--model", "nope"),
    case("eval-run-unknown", f"{EVAL} --run-id {RUN}", "--run-id", RUN),
    case("eval-model-uri", f"{EVAL} --model-uri models:/nope@champion", "models:/nope@champion",
         "not found"),
    case("eval-no-target", EVAL, "--run-id", "--model-uri"),
    case("eval-experiment", f"{EVAL} --experiment nonexistent", "--experiment", "nonexistent"),
    case("eval-not-store", f"{EVAL} --model-uri {{model}} --data {{w}}/bgs", "--data", "bgs"),
    case("eval-damaged-clip", f"{EVAL} --model-uri {{model}} --data {{w}}/damaged", "test0.npz"),
    case("eval-splits", f"{EVAL} --model-uri {{model}} --splits test,foo", "--splits", "foo"),
    case("eval-other-weights", f"{EVAL} --model-uri {{mismatch}}", "{mismatch}", "do not fit",
         "Deep+_mobile"),
    case("promote-experiment", "promote --experiment nonexistent", "nonexistent"),
    case("promote-run", f"promote --experiment bad-input-a --run-id {RUN}", "--run-id", RUN),
    case("promote-metric", "promote --experiment bad-input-a --metric val_loss", "--metric",
         "val_loss"),
    case("promote-alias", "promote --experiment bad-input-a --alias 'top dog!'", "--alias",
         "top dog!"),
    case("seg-corrupt-video", "segment {w}/corrupt.mp4 -o {tmp}/o.mp4 --model {model}", "corrupt"),
    case("seg-empty-video", "segment {w}/empty.mp4 -o {tmp}/o.mp4 --model {model}", "empty.mp4"),
    case("seg-text-video", "segment {w}/text.mp4 -o {tmp}/o.mp4 --model {model}", "text.mp4"),
    case("seg-dir-as-video", "segment {w}/adir.mp4 -o {tmp}/o.mp4 --model {model}", "adir.mp4"),
    case("seg-empty-bg", f"{SEGMENT} --background {{w}}/empty.jpg", "--background", "empty.jpg"),
    case("seg-huge-bg", f"{SEGMENT} --background {{w}}/huge.png", "--background", "huge.png"),
    case("seg-size-huge", f"{SEGMENT} --size 100000x100000", "--size", "100000x100000"),
    case("seg-precision", f"{SEGMENT} --precision fp8", "--precision", "fp8"),
    case("seg-device", f"{SEGMENT} --device tpu", "--device", "tpu"),
    case("seg-not-a-model", f"{SEGMENT} --model {{w}}/bgs", "{w}/bgs", "not a recseg model"),
    case("seg-run-model", f"{SEGMENT} --model runs:/{RUN}/model", f"runs:/{RUN}/model"),
    case("seg-no-model", f"{SEGMENT} --model {{w}}/nope", "{w}/nope", "no such folder"),
    case("seg-other-weights", f"{SEGMENT} --model {{mismatch}}", "{mismatch}", "do not fit",
         "Deep+_mobile"),
    case("seg-arch-edited", f"{SEGMENT} --model {{edited}}", "{edited}", "do not fit",
         "Deep_mobile_gruV1"),
    case("seg-out-under-file", f"{SEGMENT} -o {{w}}/afile/o.mp4", "-o", "afile", "is a file"),
    case("seg-masks-under-file", f"{SEGMENT} --masks {{w}}/afile/m", "--masks", "afile"),
    case("seg-read-only", f"{SEGMENT} -o {{ro}}/x/o.mp4", "-o", "{ro}", "cannot write"),
    case("seg-disk-full", f"{SEGMENT} -o {{full}}/o.mp4", "writing", "{full}/o.mp4", **FULL),
    case("export-format", f"{EXPORT} --format tflite", "--format", "tflite"),
    case("export-suffix", f"{EXPORT} -o {{tmp}}/m.txt", "m.txt", ".onnx"),
    case("export-size", f"{EXPORT} --size 8x8", "--size", "8x8"),
    case("export-no-model", f"{EXPORT} --model {{w}}/nope", "{w}/nope", "no such folder"),
    case("export-other-weights", f"{EXPORT} --model {{mismatch}}", "{mismatch}", "do not fit",
         existing="{tmp}/m.onnx"),
    case("export-read-only", f"{EXPORT} -o {{ro}}/m.onnx", "-o", "{ro}", "cannot write"),
    case("export-proc", f"{EXPORT} -o /proc/recseg-bad-input/m.onnx", "/proc", "cannot write"),
    case("export-out-under-file", f"{EXPORT} -o {{w}}/afile/m.onnx", "-o", "afile", "is a file"),
    # torchscript: ONNX's exporter takes 15 s here before it writes
    case("export-disk-full", f"{EXPORT} --format torchscript -o {{full}}/m.pt --no-check",
         "writing", "{full}/m.pt", **FULL),
    case("runs-status", "runs --status sleeping", "--status", "sleeping"),
    case("runs-experiment", "runs --experiment nonexistent", "nonexistent"),
    case("sweep-epochs", f"{SWEEP} --epochs 2,0", "--epochs", "0"),
    case("sweep-model", f"{SWEEP} --model Deep+_mobile,nope", "--model", "nope"),
    case("sweep-restarts", f"{SWEEP} --max-restarts -1", "--max-restarts", "-1"),
    case("describe-model", "describe --model nope", "--model", "nope"),
    case("describe-size", "describe --model Deep+_mobile --size 100000x100000", "--size"),
    case("models-option", "models --bogus", "--bogus"),
    case("command-unknown", "frobnicate", "frobnicate"),
    case("job-task", "job dance", "dance"),
    case("job-env-epochs", "job train", "EPOCHS", "abc",
         env=(("DATA", "{store}"), ("MODEL", "Deep+_mobile"), ("LOSS", "CrossDice"),
              ("EPOCHS", "abc"))),
]  # fmt: skip
CASES += numeric_cases()


def _huge_png(path: Path) -> None:
    """A valid PNG header claiming 100000 x 100000 pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 3001)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    path.write_bytes(png)


def _media(w: Path) -> None:
    """The bad and good files the cases point at."""
    write_video(w / "good.mp4", seconds=0.6, fps=10, size=(32, 48))
    (w / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(8192))
    (w / "empty.mp4").write_bytes(b"")
    (w / "empty.jpg").write_bytes(b"")
    (w / "text.mp4").write_text("this is not a video\n")
    (w / "afile").write_text("a regular file\n")
    (w / "adir.mp4").mkdir()
    _huge_png(w / "huge.png")
    (w / "vids").mkdir()
    for seed in range(3):  # preprocess splits three videos or more
        write_video(w / "vids" / f"v{seed}.mp4", seconds=0.6, fps=10, size=(32, 48), seed=seed)
    (w / "badvids").mkdir()
    for name in ("corrupt.mp4", "empty.mp4", "text.mp4"):
        shutil.copy(w / name, w / "badvids" / name)
    write_backgrounds(w / "bgs", count=2, size=(40, 60))
    for name in ("empty.jpg", "huge.png"):
        (w / f"{name[:-4]}bgs").mkdir()
        shutil.copy(w / "bgs" / "bg0.jpg", w / f"{name[:-4]}bgs" / "bg0.jpg")
        shutil.copy(w / name, w / f"{name[:-4]}bgs" / name)
    (w / "junkbgs").mkdir()  # no image or video: notes and data only
    (w / "junkbgs" / "notes.txt").write_text("not a background\n")
    (w / "junkbgs" / "table.csv").write_text("a,b\n1,2\n")
    make_store(w / "store", train=(6, 6), val=(6,), test=(6,))
    shutil.copytree(w / "store", w / "damaged")  # a store with two clips damaged on disk
    for clip in ("train/train0.npz", "test/test0.npz"):
        (w / "damaged" / "clips" / clip).write_bytes(np.random.default_rng(1).bytes(100))


def _models(w: Path, uri: str) -> str:
    """``{w}/model``: a logged Deep+_mobile model folder; ``{w}/mismatch``: the same folder
    holding Deep_mobile_gruV1 weights. Returns the id of the run that logged it."""
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("bad-input-a")
        with mlflow.start_run(experiment_id=experiment) as run:
            log_clip_model(build_model("Deep+_mobile"), "Deep+_mobile", size=(32, 48))
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run.info.run_id}/model", dst_path=str(w / "model")
        )
    finally:
        mlflow.set_tracking_uri(None)
    (w / "model" / "model").rename(w / "model-tmp")
    (w / "model").rmdir()
    (w / "model-tmp").rename(w / "model")
    shutil.copytree(w / "model", w / "mismatch")
    other = build_model("Deep_mobile_gruV1").state_dict()
    torch.save(other, w / "mismatch" / "artifacts" / "weights.pt")
    shutil.copytree(w / "model", w / "edited")
    arch_file = w / "edited" / "artifacts" / "architecture.json"
    arch = json.loads(arch_file.read_text())
    arch_file.write_text(json.dumps({**arch, "model": "Deep_mobile_gruV1"}))
    return run.info.run_id


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The shared inputs of every case, built once; the template's path names."""
    w = tmp_path_factory.mktemp("world")
    _media(w)
    uri = f"sqlite:///{w / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        run_a = _models(w, uri)
    paths = {"w": str(w), "good": str(w / "good.mp4"), "store": str(w / "store")}
    models = {name: str(w / name) for name in ("model", "mismatch", "edited")}
    return {**paths, **models, "run_a": run_a, "uri": uri}


def _mount(folder: Path, options: str) -> bool:
    """Mount a tmpfs with ``options`` on ``folder`` (root only); whether it worked."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    cmd = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _unmount(folder: Path) -> None:
    if subprocess.run(["umount", str(folder)], capture_output=True).returncode:
        subprocess.run(["umount", "-l", str(folder)])  # never leave a mount behind
        pytest.fail(f"{folder} was still in use after the command: a file left open")


@pytest.fixture
def full_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, bool]]:
    """A folder whose writes fail: (folder, True) a full 256 KiB tmpfs when root may mount
    one, else (folder, False) for a subprocess under RLIMIT_FSIZE."""
    folder = tmp_path_factory.mktemp("full")
    mounted = _mount(folder, "size=256k")
    try:
        if mounted:
            (folder / "filler").write_bytes(b"\0" * shutil.disk_usage(folder).free)
        yield folder, mounted
    finally:
        if mounted:
            _unmount(folder)


@pytest.fixture
def ro_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A folder nothing can be written in: a read-only tmpfs (root), else a folder without
    write permission (not root), else (root without mounts) a path in /proc."""
    folder = tmp_path_factory.mktemp("readonly")
    if _mount(folder, "ro,size=64k"):
        try:
            yield folder
        finally:
            _unmount(folder)
    elif os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
    else:
        yield Path("/proc/recseg-read-only")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` (but the MLflow store) with size and mtime."""
    out = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("mlflow.db", "mlartifacts", "mlruns")):
            continue
        st = path.lstat()
        out[rel] = (st.st_size, st.st_mtime_ns) if path.is_file() else (-1, 0)
    return out


def _limited() -> None:
    """preexec_fn of the disk-full subprocess: writes past 1 KiB fail with EFBIG."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))


def _subprocess(argv: list[str], cwd: Path, limited: bool) -> subprocess.CompletedProcess:
    """``recseg ARGV`` as a process (with ``limited``: under RLIMIT_FSIZE); 60 s at most."""
    try:
        return run_recseg(*argv, cwd=cwd, timeout=60, preexec_fn=_limited if limited else None)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"recseg {shlex.join(argv)} still ran after 60 s: {exc.stdout!r}")


def _run_case(
    case: Case, paths: dict[str, str], tmp: Path, capfd: pytest.CaptureFixture, mounted: bool
) -> subprocess.CompletedProcess:
    argv = shlex.split(case.argv.format(**paths))
    if case.setup == "process" or (case.setup == "full" and not mounted):
        return _subprocess(argv, tmp, limited=case.setup == "full")
    return recseg_in_process(argv, capfd)


def _check_line(result: subprocess.CompletedProcess, case: Case, paths: dict[str, str]) -> None:
    assert result.returncode == case.code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("recseg: error: "), lines[0]
    for needle in case.needles:
        assert needle.format(**paths) in lines[0], (needle.format(**paths), lines[0])


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(
    case: Case,
    world: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    tally,
) -> None:
    tally("bad-input cases tried")
    paths = {**world, "tmp": str(tmp_path)}
    mounted = True
    if case.setup == "full":
        folder, mounted = request.getfixturevalue("full_dir")
        paths["full"] = str(folder)
        if not mounted and case.id.startswith("prep"):
            pytest.skip("MLflow's sqlite store cannot be written under RLIMIT_FSIZE")
    if "{ro}" in case.argv:
        paths["ro"] = str(request.getfixturevalue("ro_dir"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["uri"])
    for name, value in case.env:
        monkeypatch.setenv(name, value.format(**paths))
    if case.existing:
        Path(case.existing.format(**paths)).write_bytes(b"the previous output")
    roots = [Path(paths[k]) for k in ("w", "tmp", "full", "ro") if k in paths]
    roots = [root for root in roots if root.is_dir()]
    before = [_snapshot(root) for root in roots]
    result = _run_case(case, paths, tmp_path, capfd, mounted)
    _check_line(result, case, paths)
    if case.setup == "full":
        assert ("no space left" if mounted else "file too large") in result.stderr
    assert [_snapshot(root) for root in roots] == before  # nothing written, nothing left
