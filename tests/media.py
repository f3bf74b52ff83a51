"""Small real media for tests: greenscreen mp4 files (H.264, the footage writer) and images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from recseg.data.footage.video import Mp4Writer


def write_video(
    path: Path,
    seconds: float = 2.0,
    fps: float = 10.0,
    size: tuple[int, int] = (72, 128),
    screen: tuple[int, int, int] = (40, 170, 60),
    seed: int = 0,
) -> np.ndarray:
    """A moving red ellipse on a screen of colour ``screen`` (RGB); returns the true masks."""
    rng = np.random.default_rng(seed)
    h, w = size
    n = round(seconds * fps)
    masks = np.zeros((n, h, w), bool)
    with Mp4Writer(path, fps, size) as writer:
        for i in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = screen
            m = np.zeros((h, w), np.uint8)
            cv2.ellipse(m, (w // 4 + i * w // (2 * n), h // 2), (w // 10, h // 3), 0, 0, 360, 1, -1)
            img[m > 0] = (200, 60, 50)
            img = np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8)
            masks[i] = m > 0
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return masks


def write_backgrounds(folder: Path, count: int = 4, size: tuple[int, int] = (120, 200)) -> None:
    """``count`` textured background images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        img = cv2.resize(rng.integers(0, 255, (12, 20, 3), dtype=np.uint8), size[::-1])
        cv2.imwrite(str(folder / f"bg{i}.jpg"), img)


def run_recseg(
    *args: str, cwd: Path, env: dict | None = None, timeout: float = 600, **popen: Any
) -> subprocess.CompletedProcess:
    """``python -m recseg ARGS`` as a user runs it, in ``cwd`` with extra ``env`` (and extra
    ``subprocess.run`` keywords)."""
    return subprocess.run(
        [sys.executable, "-m", "recseg", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        **popen,
    )


def one_error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Assert exit code 2 and a single ``recseg: error:`` line on stderr holding ``needles``."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("recseg: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def recseg_in_process(
    args: list[str], capsys: pytest.CaptureFixture
) -> subprocess.CompletedProcess:
    """``recseg ARGS`` in this process (``recseg.cli.main``; no interpreter start-up): exit
    code, stdout and stderr, as ``run_recseg`` returns them."""
    from recseg.cli import main

    with pytest.raises(SystemExit) as stop:
        main(args)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, stop.value.code, out.out, out.err)
