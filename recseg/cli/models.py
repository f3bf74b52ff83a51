"""``recseg models`` and ``recseg describe``."""

from __future__ import annotations

import json

import click

from recseg.config import build, click_options
from recseg.models.registry import MODELS, SEED_MODELS, readable_name
from recseg.training.summary import DescribeConfig, describe


@click.command("models")
@click.option("--details", is_flag=True, help="Also show backbone, cell, position and alias.")
def models_cmd(details: bool) -> None:
    """Every model name accepted by --model, one per line (the thesis's names first)."""
    width = max(map(len, MODELS)) + 2
    row = "{:<" + str(width) + "}{:<20}{:<6}{:<9}{:<6}{}"
    if details:
        click.echo(row.format("name", "backbone", "cell", "position", "input", "recseg name"))
    for name, spec in MODELS.items():
        if not details:
            click.echo(name)
            continue
        alias = readable_name(spec) if name in SEED_MODELS else "-"
        prev = "prev" if spec.store_previous else "-"
        cols = (spec.backbone, spec.cell or "-", spec.position or "-", prev, alias)
        click.echo(row.format(name, *cols))


def print_report(report: dict) -> None:
    """Human-readable lines for ``describe``'s report."""
    state = ", ".join(f"{k}: {tuple(v)}" for k, v in report["state_shapes"].items()) or "none"
    unit = "none"
    if report["cell"] != "none":
        prev = ", store previous" if report["store_previous"] else ""
        unit = f"{report['cell']} at {report['position']}{prev}"
    lines = [
        ("model", f"{report['model']} (= {report['readable_name']})"),
        (
            "backbone",
            f"{report['backbone']}, output stride {report['output_stride']}, norm "
            f"{report['norm']}, weights: {report['pretrained']}",
        ),
        ("recurrent unit", unit),
        (
            "parameters",
            f"{report['params_total']:,} total, {report['params_trainable']:,} trainable, "
            f"{report['params_backbone']:,} in the backbone",
        ),
        ("input", str(tuple(report["input_shape"]))),
        ("logits", str(tuple(report["logits_shape"]))),
        ("state", state),
        (
            "loss",
            f"{report['loss']} = {report['loss_value']:.4f} on random labels; gradient reaches "
            f"frame 1: {'yes' if report['grad_reaches_first_frame'] else 'no'}",
        ),
        (
            "streaming",
            f"frame by frame vs whole clip: max |diff| {report['stream_max_abs_diff']:.1e}",
        ),
        (
            "time (CPU)",
            f"{report['infer_ms_per_frame']:.0f} ms/frame inference, "
            f"{report['train_ms_per_frame']:.0f} ms/frame forward+backward, "
            f"{report['threads']} threads",
        ),
    ]
    for key, value in lines:
        click.echo(f"{key:<15} {value}")


def describe_and_print(values: dict, as_json: bool) -> None:
    """Validate option values, run ``describe`` and print its report."""
    report = describe(build(DescribeConfig, values))
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_report(report)


@click.command("describe")
@click_options(DescribeConfig)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def describe_cmd(as_json: bool, **values: object) -> None:
    """Build a model, run a random clip forward and backward, and report its parameters,
    shapes, streaming consistency and speed."""
    describe_and_print(values, as_json)
