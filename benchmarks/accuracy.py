"""What the fast paths cost in accuracy: foreground IoU of a trained model on a store's test
split through the reference path, the optimised fp32 path and the bf16 path."""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import Part, note
from recseg.data.loader import make_loader
from recseg.evaluation.evaluate import evaluate
from recseg.inference.optimize import optimize
from recseg.tracking.model_uri import load_network
from recseg.training.losses import build_loss
from recseg.training.setup import open_store

COLUMNS = ["path", "test fg IoU (%)", "test mIoU (%)", "change in fg IoU (points)"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accuracy-model", default="",
        help="model URI or folder (default: the model the tracking part trains on the demo data)",
    )  # fmt: skip
    parser.add_argument("--accuracy-data", default="", help="clip store (default: the demo store)")


@torch.no_grad()
def mask_agreement(
    reference: torch.nn.Module, other: torch.nn.Module, loader, device: torch.device
) -> tuple[float, float]:
    """Share of real pixels where the two models' masks agree, and the IoU of their
    foregrounds (1.0 when neither finds any)."""
    same = total = inter = union = 0
    ref_state = other_state = None
    loader.set_epoch(0)
    for batch in loader:
        frames, reset = batch["frames"].to(device), batch["reset"].to(device)
        a, ref_state = reference(frames, ref_state, reset)
        b, other_state = other(frames, other_state, reset)
        valid = batch["valid"].to(device)[..., None, None].expand(a[:, :, 0].shape)
        fa, fb = a.argmax(2)[valid].bool(), b.argmax(2)[valid].bool()
        same += int((fa == fb).sum())
        total += fa.numel()
        inter += int((fa & fb).sum())
        union += int((fa | fb).sum())
    return same / max(total, 1), inter / union if union else 1.0


def run(args: argparse.Namespace) -> Part:
    trained = args.shared.get("trained_model", {})
    source = args.accuracy_model or trained.get("model_dir")
    data = args.accuracy_data or trained.get("store")
    if not source or not data:
        return Part(
            name="accuracy", columns=COLUMNS, rows=[], figures={"bf16_iou_drop_points": None},
            method="skipped: run the tracking part first, or give --accuracy-model and "
            "--accuracy-data",
        )  # fmt: skip
    device = args.device
    loaded = load_network(str(source), device)
    store = open_store(str(data))
    size = loaded.size or store.size
    lanes = max(1, min(4, len(store.clips("test"))))
    loader = make_loader(store, "test", batch_size=lanes, seq_len=4, train=False, size=size)
    loss_fn = build_loss("CrossDice").to(device)
    scores = {}
    for path in ("reference", "fp32", "bf16"):
        note(f"{path}: evaluating the test split ...")
        net = loaded.model if path == "reference" else optimize(loaded.model, path, device)
        scores[path] = evaluate(net, loader, loss_fn, device, samples=0).metrics
    note("bf16 against the reference: pixel agreement ...")
    agreement = mask_agreement(loaded.model, optimize(loaded.model, "bf16", device), loader, device)
    base = scores["reference"]["fg_iou"]
    rows = [
        [path, 100 * m["fg_iou"], 100 * m["miou"], 100 * (m["fg_iou"] - base)]
        for path, m in scores.items()
    ]
    drop = 100 * (base - scores["bf16"]["fg_iou"])
    return Part(
        name="accuracy",
        columns=COLUMNS,
        rows=rows,
        figures={"bf16_iou_drop_points": drop},
        method=(
            f"{source} on the test split of {data} ({len(store.clips('test'))} clips) at "
            f"{size[0]}x{size[1]}, {lanes} lanes x 4 frames, state carried within each clip; "
            "split-level confusion matrix (recseg's evaluate). Drop = reference - bf16, in "
            f"IoU points (x100). The bf16 masks agree with the reference's on {agreement[0]:.3%} "
            f"of the pixels (IoU of the two foregrounds {agreement[1]:.3%}): the figure means "
            "little when the model barely segments."
        ),
        details={"scores": scores, "pixel_agreement": agreement[0], "mask_iou": agreement[1]},
    )
