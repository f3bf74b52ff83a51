"""Torchvision backbones cut into low-level (stride 4) and high-level features.

Weights are random unless ``pretrained`` is ``"imagenet"`` (torchvision's weights, through the
torch hub cache) or a local file holding a torchvision ImageNet state dict
(``recseg.models.weights``). Their BatchNorms become GroupNorm or frozen BatchNorm as ``norm``
says (``recseg.models.norms``), after the weights are loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm

from recseg.errors import InputError
from recseg.models.norms import convert_norms
from recseg.models.weights import load_pretrained

BACKBONES = ("mobilenet_v2", "resnet50", "mobilenet_v3_large")


@dataclass(frozen=True)
class BackboneInfo:
    """Channel counts of a backbone's two outputs."""

    low_channels: int
    high_channels: int


class Backbone(nn.Module):
    """``forward(x) -> (low, high)``: stride-4 features and output-stride features.
    ``source`` says which weights it started from."""

    def __init__(
        self, low: nn.Module, high: nn.Module, info: BackboneInfo, source: str = "random init"
    ) -> None:
        super().__init__()
        self.low = low
        self.high = high
        self.info = info
        self.source = source

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


def _torchvision(name: str, output_stride: int) -> nn.Module:
    if name == "resnet50":
        dilate = [False, output_stride == 8, True]
        return tvm.resnet50(weights=None, replace_stride_with_dilation=dilate)
    if name == "mobilenet_v2":
        return tvm.mobilenet_v2(weights=None)
    if name == "mobilenet_v3_large":
        return tvm.mobilenet_v3_large(weights=None)
    raise InputError(f"unknown backbone '{name}'; valid backbones: {', '.join(BACKBONES)}")


def build_backbone(
    name: str,
    output_stride: int = 8,
    pretrained: str | Path | None = None,
    norm: str = "batch",
) -> Backbone:
    """Build ``name`` from torchvision with the given output stride (8 or 16), ``pretrained``
    weights (``"imagenet"``, a local file or None) and ``norm`` ("batch", "group" or
    "frozen": see ``recseg.models.norms.convert_norms``)."""
    if output_stride not in (8, 16):
        raise InputError(f"output_stride must be 8 or 16, got {output_stride}")
    net = _torchvision(name, output_stride)
    source = load_pretrained(net, pretrained, name) if pretrained else "random init"
    convert_norms(net, norm)
    if name == "resnet50":
        low = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        high = nn.Sequential(net.layer2, net.layer3, net.layer4)
        return Backbone(low, high, BackboneInfo(256, 2048), source)
    # MobileNetV2's final 1x1 conv to 1280 channels is not used
    features = net.features[:-1] if name == "mobilenet_v2" else net.features
    _dilate(features, output_stride)
    high_channels = 320 if name == "mobilenet_v2" else 960
    return Backbone(features[:4], features[4:], BackboneInfo(24, high_channels), source)
