"""DeepLabV3+ with an optional recurrent unit at the output, on the decoder, or on a branch."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from recseg.errors import InputError
from recseg.models.backbones import build_backbone
from recseg.models.norms import convert_norms, head_kind, head_norm, resolve_norm
from recseg.models.recurrent import RecurrentUnit
from recseg.models.state import State

POSITIONS = ("output", "decoder", "branch")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DECODER_CHANNELS = 304  # 256 (ASPP) + 48 (low-level projection)


@dataclass(frozen=True)
class ModelSpec:
    """What a model name stands for: the architecture, not its training options."""

    backbone: str
    cell: str | None = None
    position: str | None = None
    store_previous: bool = False

    @property
    def recurrent(self) -> bool:
        return self.cell is not None


@dataclass(frozen=True)
class ModelOptions:
    """Options a name does not fix. ``faithful()`` gives the thesis code's behaviour."""

    output_stride: int = 8
    num_classes: int = 2
    pretrained: str | None = None
    freeze_backbone: bool = False
    normalize: bool = True
    logits_after_unit: bool = True
    init: str = "kaiming"
    norm: str = "auto"  # group | frozen | batch; "auto": frozen when pretrained, else group

    @classmethod
    def faithful(cls, **overrides: object) -> ModelOptions:
        """The seed's choices: frozen backbone, no input normalisation, bounded V1/V2 logits,
        recurrent convs left at PyTorch's default initialisation, BatchNorm everywhere
        (``norm="auto"`` means that here)."""
        base = {
            "freeze_backbone": True,
            "normalize": False,
            "logits_after_unit": False,
            "init": "seed",
            "norm": "batch",
        }
        base.update({k: v for k, v in overrides.items() if (k, v) != ("norm", "auto")})
        return cls(**base)  # type: ignore[arg-type]

    def resolved(self) -> ModelOptions:
        """These options with ``norm="auto"`` resolved (``InputError`` for an unknown norm)."""
        return replace(self, norm=resolve_norm(self.norm, self.pretrained))

    def to_dict(self) -> dict:
        return asdict(self)


def _conv_norm_relu(cin: int, cout: int, kernel: int, norm: str) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        head_norm(norm, cout),
        nn.ReLU(inplace=True),
    )


class RecurrentDeepLab(nn.Module):
    """DeepLabV3+ (ASPP, 48-channel low-level projection, 304-channel concat at stride 4,
    3x3 classifier, bilinear upsampling) with an optional ConvLSTM/ConvGRU.

    ``forward(frames, state=None, reset=None) -> (logits, state)`` takes ``(B, 3, H, W)`` or
    ``(B, T, 3, H, W)`` frames in [0, 1]. Everything but the recurrent cell runs on all B*T
    frames at once; the cell loops over T. ``options.norm`` is stored resolved (never
    ``"auto"``): ``"group"`` GroupNorm everywhere, ``"frozen"`` the backbone's BatchNorm frozen
    and GroupNorm in the head, ``"batch"`` BatchNorm everywhere (the thesis).
    """

    def __init__(self, spec: ModelSpec, options: ModelOptions | None = None) -> None:
        super().__init__()
        options = (options or ModelOptions()).resolved()
        if spec.recurrent and spec.position not in POSITIONS:
            raise InputError(f"position must be one of {POSITIONS}, got {spec.position}")
        self.spec, self.options = spec, options
        norm = options.norm
        self.backbone = build_backbone(
            spec.backbone, options.output_stride, options.pretrained, norm
        )
        info = self.backbone.info
        rates = [12, 24, 36] if options.output_stride == 8 else [6, 12, 18]
        self.aspp = ASPP(info.high_channels, rates, out_channels=256)
        convert_norms(self.aspp, head_kind(norm))  # its image-pooling branch too
        self.aspp.project[3].p = 0.1  # DeepLabV3+ dropout (torchvision's DeepLabV3 uses 0.5)
        self.project = _conv_norm_relu(info.low_channels, 48, 1, norm)
        self.classifier = nn.Sequential(
            _conv_norm_relu(DECODER_CHANNELS, 256, 3, norm),
            nn.Conv2d(256, options.num_classes, 1),
        )
        self.unit = self.branch_a = self.branch_b = self.out_conv = None
        self._build_unit(spec, options)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights(options.init)
        if options.freeze_backbone:
            self.backbone.requires_grad_(False)

    def _build_unit(self, spec: ModelSpec, options: ModelOptions) -> None:
        if not spec.recurrent:
            return
        channels = {"output": options.num_classes, "decoder": DECODER_CHANNELS, "branch": 152}
        width = channels[spec.position]
        if spec.position == "branch":
            self.branch_a = _conv_norm_relu(DECODER_CHANNELS, width, 1, options.norm)
            self.branch_b = _conv_norm_relu(DECODER_CHANNELS, width, 1, options.norm)
        self.unit = RecurrentUnit(spec.cell, width, width, spec.store_previous)
        if spec.position == "output" and options.logits_after_unit:
            self.out_conv = nn.Conv2d(width, options.num_classes, 1)

    def _init_weights(self, init: str) -> None:
        """Kaiming-normal convs and (1, 0) norms in the head. ``"kaiming"`` also initialises the
        recurrent unit (weights Kaiming, biases zero): the thesis code meant to, but called its
        initialiser before the unit existed (``"seed"`` keeps that PyTorch default)."""
        if init not in ("kaiming", "seed"):
            raise InputError(f"init must be 'kaiming' or 'seed', got '{init}'")
        for part in filter(
            None, [self.aspp, self.project, self.classifier, self.branch_a, self.branch_b]
        ):
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)
                elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        if init == "kaiming":
            for part in filter(None, [self.unit, self.out_conv]):
                for m in part.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight)
                        nn.init.zeros_(m.bias)

    def train(self, mode: bool = True) -> RecurrentDeepLab:
        super().train(mode)
        if self.options.freeze_backbone:
            self.backbone.eval()  # frozen means frozen: BatchNorm statistics too
        return self

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        if self.options.normalize:
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        low, high = self.backbone(x)
        high = F.interpolate(
            self.aspp(high), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        return torch.cat([high, self.project(low)], dim=1)

    def forward(
        self, frames: torch.Tensor, state: State | None = None, reset: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State | None]:
        clip = frames.dim() == 5
        if not clip and frames.dim() != 4:
            raise ValueError(
                f"frames must be (B, 3, H, W) or (B, T, 3, H, W), got {tuple(frames.shape)}"
            )
        if frames.shape[-3] != 3:
            raise ValueError(f"frames must have 3 channels, got shape {tuple(frames.shape)}")
        if not clip:
            frames = frames.unsqueeze(1)
        b, t = frames.shape[:2]
        size = frames.shape[-2:]
        feats = self._features(frames.flatten(0, 1))
        position = self.spec.position
        if position == "decoder":
            feats, state = self._run_unit(feats, b, t, state, reset)
        elif position == "branch":
            a, state = self._run_unit(self.branch_a(feats), b, t, state, reset)
            feats = torch.cat([a, self.branch_b(feats)], dim=1)
        logits = F.interpolate(
            self.classifier(feats), size=size, mode="bilinear", align_corners=False
        )
        if position == "output":
            logits, state = self._run_unit(logits, b, t, state, reset)
            if self.out_conv is not None:
                logits = self.out_conv(logits)
        logits = logits.unflatten(0, (b, t))
        return (logits if clip else logits[:, 0]), (state if self.unit is not None else None)

    def _run_unit(
        self, x: torch.Tensor, b: int, t: int, state: State | None, reset: torch.Tensor | None
    ) -> tuple[torch.Tensor, State]:
        out, state = self.unit(x.unflatten(0, (b, t)), state, reset)
        return out.flatten(0, 1), state

    def describe(self) -> dict:
        """Architecture and options, for tags and params."""
        return {**asdict(self.spec), **self.options.to_dict()}


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (optionally only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
