"""The ``recseg`` command as users run it: a real subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from recseg.models.registry import MODELS, SEED_MODELS
from recseg.training.losses import loss_names
from tests.tolerance import logits_atol


def recseg(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recseg", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_commands() -> None:
    result = recseg("--help")
    assert result.returncode == 0
    assert (
        "models" in result.stdout and "describe" in result.stdout and "Exit codes" in result.stdout
    )


def test_models_prints_every_name_once_per_line() -> None:
    result = recseg("models")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines == list(MODELS)
    assert lines[: len(SEED_MODELS)] == list(SEED_MODELS)


def test_models_details() -> None:
    result = recseg("models", "--details")
    row = next(line for line in result.stdout.splitlines() if line.startswith("Deep_mobile_gruV4 "))
    assert row.split() == [
        "Deep_mobile_gruV4",
        "mobilenet_v2",
        "gru",
        "decoder",
        "prev",
        "mobilenetv2-gru-decoder-prev",
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "Deep_mobile_gruV9"], "valid models: Deep+_mobile"),
        (["--model", "Deep+_mobile", "--loss", "Dice"], "valid losses: " + ", ".join(loss_names())),
        (["--model", "Deep+_mobile", "--size", "0x10"], "--size"),
        (["--model", "Deep+_mobile", "--size", "big"], "--size"),
        (["--model", "Deep+_mobile", "--seq-len", "0"], "--seq-len"),
        (["--model", "Deep+_mobile", "--batch-size", "two"], "--batch-size"),
        (["--model", "Deep+_mobile", "--output-stride", "32"], "--output-stride"),
        (
            ["--model", "Deep+_mobile", "--pretrained", "/no/such/weights.pth"],
            "/no/such/weights.pth",
        ),
        ([], "--model"),
        (["--model", "Deep+_mobile", "--bogus"], "--bogus"),
    ],
)
def test_bad_input_exits_2_with_one_line(args: list[str], needle: str) -> None:
    result = recseg("describe", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("recseg: error: ")
    assert needle in lines[0]


def test_unknown_command_exits_2() -> None:
    result = recseg("train-everything")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1


def test_describe_reports_a_recurrent_model() -> None:
    result = recseg(
        "describe",
        "--model",
        "Deep_mobile_gruV3",
        "--size",
        "64x96",
        "--seq-len",
        "3",
        "--batch-size",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["params_total"] == 10_212_210
    assert report["logits_shape"] == [2, 3, 2, 64, 96]
    assert report["state_shapes"] == {"h": [2, 304, 16, 24]}
    assert report["grad_reaches_first_frame"] is True
    # streamed and whole-clip logits round differently: a float32 tolerance at their magnitude
    assert report["stream_max_abs_diff"] <= logits_atol(torch.tensor([report["logits_max_abs"]]))


def test_describe_human_output() -> None:
    result = recseg("describe", "--model", "Deep+_resnet50", "--size", "48x64", "--seq-len", "2")
    assert result.returncode == 0, result.stderr
    assert "39,756,962 total" in result.stdout
    assert "gradient reaches frame 1: no" in result.stdout  # no memory without a recurrent unit
