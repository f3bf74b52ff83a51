"""Torchvision backbones cut into low-level (stride 4) and high-level features.

Weights are random unless ``pretrained`` names a local file holding a torchvision ImageNet
state dict; nothing is ever downloaded.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from recseg.errors import InputError

BACKBONES = ("mobilenet_v2", "resnet50", "mobilenet_v3_large")


@dataclass(frozen=True)
class BackboneInfo:
    """Channel counts of a backbone's two outputs."""

    low_channels: int
    high_channels: int


class Backbone(nn.Module):
    """``forward(x) -> (low, high)``: stride-4 features and output-stride features."""

    def __init__(self, low: nn.Module, high: nn.Module, info: BackboneInfo) -> None:
        super().__init__()
        self.low = low
        self.high = high
        self.info = info

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low(x)
        return low, self.high(low)


def _dilate(blocks: Iterable[nn.Module], output_stride: int) -> None:
    """Trade strides for dilation once ``output_stride`` is reached (as DeepLab does).

    The first block of a dilated stage keeps the previous dilation; later blocks use the new
    one, matching torchvision's ``replace_stride_with_dilation`` for ResNets.
    """
    current, dilation = 1, 1
    for block in blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1]
        stride = max((m.stride[0] for m in convs), default=1)
        rate = dilation
        if stride > 1 and current >= output_stride:
            dilation *= stride
            for m in convs:
                m.stride = (1, 1)
        else:
            current *= stride
        for m in convs:
            m.dilation = (rate, rate)
            m.padding = (rate * (m.kernel_size[0] - 1) // 2, rate * (m.kernel_size[1] - 1) // 2)


def _load_pretrained(model: nn.Module, path: str | Path, name: str) -> None:
    """Load a torchvision ImageNet state dict from a local file into ``model`` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pretrained weights file not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only=True refused an object
        raise InputError(
            f"pretrained weights {path} hold Python objects besides tensors: refused, they "
            "could run code"
        ) from None
    except Exception as exc:
        raise InputError(f"cannot read pretrained weights {path}: {type(exc).__name__}") from exc
    for key in ("state_dict", "model"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
    if not isinstance(data, dict):
        raise InputError(f"pretrained weights {path} do not hold a state dict")
    data = {k.removeprefix("module."): v for k, v in data.items()}
    try:
        model.load_state_dict(data, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise InputError(
            f"pretrained weights {path} do not fit torchvision {name}: {first}"
        ) from exc


def build_backbone(
    name: str, output_stride: int = 8, pretrained: str | Path | None = None
) -> Backbone:
    """Build ``name`` from torchvision with the given output stride (8 or 16)."""
    if output_stride not in (8, 16):
        raise InputError(f"output_stride must be 8 or 16, got {output_stride}")
    if name == "resnet50":
        dilate = [False, output_stride == 8, True]
        net = tvm.resnet50(weights=None, replace_stride_with_dilation=dilate)
        if pretrained:
            _load_pretrained(net, pretrained, name)
        low = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        high = nn.Sequential(net.layer2, net.layer3, net.layer4)
        return Backbone(low, high, BackboneInfo(256, 2048))
    if name == "mobilenet_v2":
        net = tvm.mobilenet_v2(weights=None)
        if pretrained:
            _load_pretrained(net, pretrained, name)
        features = net.features[:-1]  # the final 1x1 conv to 1280 channels is not used
        _dilate(features, output_stride)
        return Backbone(features[:4], features[4:], BackboneInfo(24, 320))
    if name == "mobilenet_v3_large":
        net = tvm.mobilenet_v3_large(weights=None)
        if pretrained:
            _load_pretrained(net, pretrained, name)
        features = net.features
        _dilate(features, output_stride)
        return Backbone(features[:4], features[4:], BackboneInfo(24, 960))
    raise InputError(f"unknown backbone '{name}'; valid backbones: {', '.join(BACKBONES)}")
