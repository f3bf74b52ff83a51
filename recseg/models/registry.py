"""Model names: the thesis's exact names and recseg's readable ones."""

from __future__ import annotations

import dataclasses

from recseg.errors import InputError
from recseg.models.deeplab import ModelOptions, ModelSpec, RecurrentDeepLab
from recseg.models.norms import LEGACY_NORM

SEED_BACKBONES = {"mobile": "mobilenet_v2", "resnet50": "resnet50"}
READABLE_BACKBONES = {
    "mobilenetv2": "mobilenet_v2",
    "resnet50": "resnet50",
    "mobilenetv3": "mobilenet_v3_large",
}
# Seed version -> (position, store_previous), spec.md §1.3
SEED_VERSIONS = {
    1: ("output", False),
    2: ("output", True),
    3: ("decoder", False),
    4: ("decoder", True),
    5: ("branch", False),
    6: ("branch", True),
}


def _seed_names() -> dict[str, ModelSpec]:
    names: dict[str, ModelSpec] = {}
    for short, backbone in SEED_BACKBONES.items():
        names[f"Deep+_{short}"] = ModelSpec(backbone)
        for cell in ("lstm", "gru"):
            for version, (position, previous) in SEED_VERSIONS.items():
                names[f"Deep_{short}_{cell}V{version}"] = ModelSpec(
                    backbone, cell, position, previous
                )
    return names


def _readable_names() -> dict[str, ModelSpec]:
    names: dict[str, ModelSpec] = {}
    for short, backbone in READABLE_BACKBONES.items():
        names[short] = ModelSpec(backbone)
        for cell in ("lstm", "gru"):
            for position, previous in SEED_VERSIONS.values():
                suffix = "-prev" if previous else ""
                names[f"{short}-{cell}-{position}{suffix}"] = ModelSpec(
                    backbone, cell, position, previous
                )
    return names


SEED_MODELS = _seed_names()
READABLE_MODELS = _readable_names()
MODELS: dict[str, ModelSpec] = {**SEED_MODELS, **READABLE_MODELS}


def model_names() -> list[str]:
    """Every name ``build_model`` accepts: the thesis's names first, then recseg's."""
    return list(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The architecture a name stands for; ``ValueError`` listing the valid names otherwise."""
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(f"unknown model '{name}'; valid models: {', '.join(MODELS)}") from None


def readable_name(spec: ModelSpec) -> str:
    """recseg's readable name for an architecture."""
    return next(name for name, s in READABLE_MODELS.items() if s == spec)


def build_model(name: str, *, faithful: bool = False, **options: object) -> RecurrentDeepLab:
    """Build a model by name. Keywords are ``ModelOptions`` fields (``output_stride``,
    ``pretrained`` ("imagenet" or a local file), ``freeze_backbone``, ``normalize``,
    ``logits_after_unit``, ``init``, ``num_classes``, ``norm``); ``faithful=True`` starts from
    the thesis code's choices."""
    spec = model_spec(name)
    valid = {f.name for f in dataclasses.fields(ModelOptions)}
    unknown = sorted(set(options) - valid)
    if unknown:
        raise InputError(
            f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )
    opts = ModelOptions.faithful(**options) if faithful else ModelOptions(**options)  # type: ignore[arg-type]
    return RecurrentDeepLab(spec, opts)


def rebuild_model(name: str, options: dict) -> RecurrentDeepLab:
    """The model ``name`` as saved with ``options`` (``model.options.to_dict()``). Options saved
    by a recseg before the ``norm`` option mean BatchNorm, which such models have."""
    return build_model(name, **{"norm": LEGACY_NORM, **options})
