"""The model family: names, parameter counts, shapes, streaming, reset, BPTT and norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recseg.errors import InputError
from recseg.models import (
    ModelOptions,
    build_model,
    count_parameters,
    model_names,
    model_spec,
    rebuild_model,
)
from recseg.models.norms import FrozenBatchNorm2d, group_count
from recseg.models.registry import READABLE_MODELS, SEED_MODELS
from recseg.training.losses import build_loss
from tests.conftest import randomize_norms
from tests.tolerance import logits_atol

RECURRENT_SEED = [n for n, s in SEED_MODELS.items() if s.recurrent]

# spec.md §1.4: total / trainable parameters of the thesis classes at 270x512.
SEED_PARAMS = {
    "Deep+_mobile": (5_220_834, 3_409_122),
    "Deep_mobile_lstmV1": (5_221_130, 3_409_418),
    "Deep_mobile_lstmV2": (5_221_130, 3_409_418),
    "Deep_mobile_lstmV3": (11_876_002, 10_064_290),
    "Deep_mobile_lstmV4": (11_876_002, 10_064_290),
    "Deep_mobile_lstmV5": (6_977_954, 5_166_242),
    "Deep_mobile_lstmV6": (6_977_954, 5_166_242),
    "Deep_mobile_gruV1": (5_221_056, 3_409_344),
    "Deep_mobile_gruV2": (5_221_056, 3_409_344),
    "Deep_mobile_gruV3": (10_212_210, 8_400_498),
    "Deep_mobile_gruV4": (10_212_210, 8_400_498),
    "Deep_mobile_gruV5": (6_561_930, 4_750_218),
    "Deep_mobile_gruV6": (6_561_930, 4_750_218),
    "Deep+_resnet50": (39_756_962, 16_248_930),
    "Deep_resnet50_lstmV1": (39_757_258, 16_249_226),
    "Deep_resnet50_lstmV2": (39_757_258, 16_249_226),
    "Deep_resnet50_lstmV3": (46_412_130, 22_904_098),
    "Deep_resnet50_lstmV4": (46_412_130, 22_904_098),
    "Deep_resnet50_lstmV5": (41_514_082, 18_006_050),
    "Deep_resnet50_lstmV6": (41_514_082, 18_006_050),
    "Deep_resnet50_gruV1": (39_757_184, 16_249_152),
    "Deep_resnet50_gruV2": (39_757_184, 16_249_152),
    "Deep_resnet50_gruV3": (44_748_338, 21_240_306),
    "Deep_resnet50_gruV4": (44_748_338, 21_240_306),
    "Deep_resnet50_gruV5": (41_098_058, 17_590_026),
    "Deep_resnet50_gruV6": (41_098_058, 17_590_026),
}


def test_every_seed_name_is_listed_exactly() -> None:
    expected = {"Deep+_mobile", "Deep+_resnet50"} | {
        f"Deep_{b}_{c}V{v}"
        for b in ("mobile", "resnet50")
        for c in ("lstm", "gru")
        for v in range(1, 7)
    }
    assert set(SEED_MODELS) == expected == set(SEED_PARAMS)
    assert model_names()[: len(expected)] == list(SEED_MODELS)
    assert set(model_names()) == set(SEED_MODELS) | set(READABLE_MODELS)


def test_seed_names_map_to_positions() -> None:
    assert model_spec("Deep_mobile_lstmV1").position == "output"
    assert not model_spec("Deep_mobile_lstmV1").store_previous
    assert model_spec("Deep_resnet50_gruV2").store_previous
    assert model_spec("Deep_mobile_gruV3").position == "decoder"
    assert model_spec("Deep_mobile_gruV4").store_previous
    assert model_spec("Deep_resnet50_lstmV5").position == "branch"
    assert model_spec("Deep_resnet50_lstmV6").store_previous
    assert model_spec("Deep_mobile_gruV3") == model_spec("mobilenetv2-gru-decoder")
    assert model_spec("Deep+_resnet50").cell is None


@pytest.mark.parametrize("name", ["Deep+_mobile", "Deep_mobile_gruV3", "Deep_resnet50_lstmV3"])
def test_parameter_counts_default_options(name: str) -> None:
    total, _ = SEED_PARAMS[name]
    assert count_parameters(build_model(name)) == total


@pytest.mark.parametrize("name", list(SEED_PARAMS))
def test_parameter_counts_faithful_match_thesis(name: str) -> None:
    model = build_model(name, faithful=True)
    assert (count_parameters(model), count_parameters(model, trainable_only=True)) == SEED_PARAMS[
        name
    ]


@pytest.mark.parametrize("name", list(SEED_MODELS))
def test_builds_and_runs_at_thesis_and_odd_size(name: str) -> None:
    model = build_model(name).eval()
    with torch.inference_mode():
        logits, state = model(torch.rand(1, 3, 270, 512))
        assert logits.shape == (1, 2, 270, 512)
        odd, odd_state = model(torch.rand(1, 2, 3, 97, 130))
    assert odd.shape == (1, 2, 2, 97, 130)
    assert torch.isfinite(logits).all() and torch.isfinite(odd).all()
    if model_spec(name).recurrent:
        assert state and odd_state
        assert all(v.shape[0] == 1 for v in odd_state.values())
    else:
        assert state is None and odd_state is None


@pytest.mark.parametrize(
    "name", ["mobilenetv3", "mobilenetv3-lstm-decoder-prev", "mobilenetv3-gru-branch"]
)
def test_mobilenet_v3_backbone(name: str) -> None:
    model = build_model(name).eval()
    with torch.inference_mode():
        logits, _ = model(torch.rand(1, 3, 3, 65, 90))
    assert logits.shape == (1, 3, 2, 65, 90)


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "resnet50", "mobilenet_v3_large"])
@pytest.mark.parametrize("output_stride", [8, 16])
def test_output_stride(backbone: str, output_stride: int) -> None:
    from recseg.models.backbones import build_backbone

    net = build_backbone(backbone, output_stride).eval()
    with torch.inference_mode():
        low, high = net(torch.rand(1, 3, 128, 160))
    assert low.shape[-2:] == (32, 40)  # stride 4
    assert high.shape[-2:] == (128 // output_stride, 160 // output_stride)


@pytest.mark.parametrize("name", RECURRENT_SEED)
def test_whole_clip_equals_frame_by_frame_and_chunks(name: str) -> None:
    model = randomize_norms(build_model(name)).eval()
    clip = torch.rand(2, 5, 3, 40, 56)
    with torch.inference_mode():
        whole, _ = model(clip)
        state, frames = None, []
        for t in range(clip.shape[1]):
            out, state = model(clip[:, t], state)
            frames.append(out)
        first, state = model(clip[:, :2])
        second, _ = model(clip[:, 2:], state)
    assert whole.abs().max() > 0.05  # outputs are not trivially ~0
    atol = logits_atol(whole)
    torch.testing.assert_close(torch.stack(frames, dim=1), whole, atol=atol, rtol=0)
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, atol=atol, rtol=0)


@pytest.mark.parametrize(
    "name", ["Deep_mobile_lstmV2", "Deep_mobile_gruV3", "Deep_resnet50_lstmV5"]
)
def test_reset_zeroes_only_the_chosen_samples(name: str) -> None:
    model = randomize_norms(build_model(name)).eval()
    warmup, clip = torch.rand(2, 3, 3, 40, 56), torch.rand(2, 2, 3, 40, 56)
    with torch.inference_mode():
        _, state = model(warmup)
        out, _ = model(clip, state, reset=torch.tensor([True, False]))
        fresh, _ = model(clip[:1])
        kept_state = {k: v[1:] for k, v in state.items()}
        kept, _ = model(clip[1:], kept_state)
        carried, _ = model(clip[:1], {k: v[:1] for k, v in state.items()})
    atol = logits_atol(out)
    torch.testing.assert_close(fresh[0], out[0], atol=atol, rtol=0)
    torch.testing.assert_close(kept[0], out[1], atol=atol, rtol=0)
    assert (out[0] - carried[0]).abs().max() > 100 * atol  # the reset really changed sample 0


@pytest.mark.parametrize("name", RECURRENT_SEED)
def test_backprop_through_time_reaches_first_frame(name: str) -> None:
    model = randomize_norms(build_model(name)).eval()
    clip = torch.rand(1, 4, 3, 40, 56, requires_grad=True)
    logits, _ = model(clip)
    target = (torch.rand(1, 40, 56) > 0.5).long()
    build_loss("CrossDice")(logits[:, -1], target).backward()
    assert clip.grad[:, 0].abs().sum() > 0


def test_plain_model_has_no_memory() -> None:
    model = randomize_norms(build_model("Deep+_mobile")).eval()
    clip = torch.rand(1, 3, 3, 40, 56, requires_grad=True)
    logits, state = model(clip)
    logits[:, -1].sum().backward()
    assert state is None
    assert clip.grad[:, 0].abs().sum() == 0


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(InputError) as err:
        build_model("Deep_mobile_lstmV9")
    message = str(err.value)
    assert "\n" not in message and "Deep_mobile_lstmV9" in message
    assert all(name in message for name in model_names())


def test_unknown_option_is_refused() -> None:
    with pytest.raises(InputError, match="hidden"):
        build_model("Deep+_mobile", hidden=3)


def test_output_unit_logits_come_from_a_conv_by_default() -> None:
    default = build_model("Deep_mobile_lstmV1")
    faithful = build_model("Deep_mobile_lstmV1", faithful=True).eval()
    assert default.out_conv is not None and faithful.out_conv is None
    with torch.no_grad():
        default.out_conv.bias.fill_(3.0)
        logits, _ = default.eval()(torch.rand(1, 3, 40, 56))
        bounded, _ = faithful(torch.rand(1, 3, 40, 56))
    assert logits.abs().max() > 1.0  # unbounded
    assert bounded.abs().max() < 1.0  # the thesis's hidden-state logits live in (-1, 1)


def test_faithful_turns_off_normalisation_and_freezes_backbone() -> None:
    model = build_model("Deep+_mobile", faithful=True)
    assert not model.options.normalize and model.options.freeze_backbone
    assert build_model("Deep+_mobile").options.normalize


def test_frozen_backbone_stays_in_eval_mode() -> None:
    model = build_model("Deep_mobile_gruV3", freeze_backbone=True).train()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(m.training for m in model.backbone.modules())
    assert model.aspp.training and model.unit.training
    default = build_model("Deep_mobile_gruV3").train()
    assert all(p.requires_grad for p in default.parameters())


def test_recurrent_unit_is_initialised_as_intended() -> None:
    conv = build_model("Deep_mobile_lstmV3").unit.cell.conv
    fan_in = conv.in_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.05)
    assert conv.bias.abs().max() == 0
    seed_conv = build_model("Deep_mobile_lstmV3", faithful=True).unit.cell.conv
    assert seed_conv.weight.abs().max() <= 1 / fan_in**0.5  # PyTorch's default uniform bound


def test_store_previous_feeds_own_outputs() -> None:
    """V2/V4/V6: each frame the cell sees [out(t-2), out(t-1), x(t)], zeros at a clip start."""
    from recseg.models.recurrent import RecurrentUnit

    unit = RecurrentUnit("gru", 4, 4, store_previous=True)
    x = torch.rand(1, 3, 4, 5, 6)
    out, _ = unit(x)
    h, outs = torch.zeros(1, 4, 5, 6), [torch.zeros(1, 4, 5, 6)] * 2
    for t in range(3):
        for inp in (outs[-2], outs[-1], x[:, t]):
            (h,) = unit.cell(inp, (h,))
        outs.append(h)
    torch.testing.assert_close(out, torch.stack(outs[2:], dim=1))


def test_state_shape_mismatch_is_explained() -> None:
    model = build_model("Deep_mobile_gruV1").eval()
    _, state = model(torch.rand(1, 3, 40, 56))
    with pytest.raises(ValueError, match="keep batch and frame size"):
        model(torch.rand(1, 3, 48, 56), state)


def test_bad_frames_shape() -> None:
    with pytest.raises(ValueError, match="3 channels"):
        build_model("Deep+_mobile")(torch.rand(1, 1, 40, 56))


@pytest.mark.parametrize("name", list(READABLE_MODELS))
def test_every_readable_name_runs_a_small_clip(name: str) -> None:
    model = build_model(name, output_stride=16).eval()
    with torch.inference_mode():
        logits, state = model(torch.rand(2, 2, 3, 33, 47))
    assert logits.shape == (2, 2, 2, 33, 47)
    assert (state is not None) == model_spec(name).recurrent


def test_describe_names_the_architecture_for_tags() -> None:
    info = build_model("Deep_resnet50_gruV6", output_stride=16).describe()
    assert info["backbone"] == "resnet50" and info["cell"] == "gru"
    assert info["position"] == "branch" and info["store_previous"] is True
    assert info["output_stride"] == 16 and info["pretrained"] is None


# ---- norms: GroupNorm, frozen BatchNorm, BatchNorm ---------------------------------------------
BRANCH_MODELS = ["Deep_mobile_lstmV5", "Deep_resnet50_gruV6", "mobilenetv3-gru-branch-prev"]


def _norms(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)]


def _head_norms(model: nn.Module) -> list[nn.Module]:
    """The norm of every head part: ASPP (image pooling included), projection, classifier,
    branches."""
    parts = [model.aspp, model.project, model.classifier, model.branch_a, model.branch_b]
    return [m for part in parts if part is not None for m in _norms(part)]


def test_norm_is_stored_resolved() -> None:
    assert ModelOptions().norm == "auto"
    assert build_model("Deep+_mobile").options.norm == "group"
    assert build_model("Deep+_mobile", faithful=True).options.norm == "batch"
    assert ModelOptions.faithful().norm == "batch"
    assert build_model("Deep+_mobile", faithful=True, norm="auto").options.norm == "batch"
    assert build_model("Deep+_mobile", faithful=True, norm="frozen").options.norm == "frozen"
    assert build_model("Deep+_mobile").describe()["norm"] == "group"
    with pytest.raises(InputError) as err:
        build_model("Deep+_mobile", norm="layer")
    assert "\n" not in str(err.value) and "'layer'" in str(err.value)
    assert "group" in str(err.value)


def test_group_counts() -> None:
    expected = {4: 1, 7: 1, 8: 2, 16: 4, 24: 6, 48: 12, 96: 24, 152: 19, 256: 32, 304: 19}
    assert {c: group_count(c) for c in expected} == expected
    for c in range(1, 2049):
        g = group_count(c)
        assert c % g == 0 and g <= 32 and (c // g >= 4 or (c < 8 and g == 1))


@pytest.mark.parametrize("name", BRANCH_MODELS)
def test_group_norm_everywhere_but_the_cells(name: str) -> None:
    model = build_model(name, norm="group")
    norms = _norms(model)
    assert norms and all(type(m) is nn.GroupNorm for m in norms)
    assert all(m.num_groups == group_count(m.num_channels) for m in norms)
    assert isinstance(model.aspp.convs[-1][2], nn.GroupNorm)  # the 1x1 image-pooling branch
    # ASPP: 4 conv branches, pooling and its projection; low-level projection; classifier; V5/V6
    assert len(_head_norms(model)) == 6 + 1 + 1 + 2
    assert not _norms(model.unit)  # nothing inside the ConvLSTM/ConvGRU cells


@pytest.mark.parametrize("name", BRANCH_MODELS)
def test_frozen_norm_freezes_the_backbone_batchnorm_only(name: str) -> None:
    model = build_model(name, norm="frozen")
    backbone = _norms(model.backbone)
    assert backbone and all(type(m) is FrozenBatchNorm2d for m in backbone)
    assert all(type(m) is nn.GroupNorm for m in _head_norms(model))
    assert not _norms(model.unit)
    batch = build_model(name, norm="batch")
    assert all(type(m) is nn.BatchNorm2d for m in _norms(batch))


def test_frozen_batchnorm_statistics_never_update_and_affine_trains() -> None:
    model = randomize_norms(build_model("Deep_mobile_gruV3", norm="frozen")).train()
    bns = _norms(model.backbone)
    assert not any(m.training for m in bns) and model.aspp.training and model.unit.training
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    logits, _ = model(torch.rand(2, 2, 3, 40, 56))
    logits.square().mean().backward()
    for m, (mean, var) in zip(bns, before, strict=True):
        assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
        assert m.weight.requires_grad and m.weight.grad is not None
    model.backbone.train()  # also when the backbone alone is asked
    assert not any(m.training for m in bns)
    frozen = build_model("Deep_mobile_gruV3", norm="frozen", freeze_backbone=True)
    assert not any(p.requires_grad for p in frozen.backbone.parameters())


@pytest.mark.parametrize("norm", ["group", "frozen", "batch"])
def test_train_and_eval_mode_agree_unless_batchnorm(norm: str) -> None:
    """Train-mode BatchNorm normalises with the batch's statistics, eval mode with the running
    ones: on small correlated batches these differ. GroupNorm and frozen BatchNorm do the same
    in both modes (the ASPP dropout, the only other difference, is off here)."""
    model = randomize_norms(build_model("Deep_mobile_gruV5", norm=norm))
    model.aspp.project[3].p = 0.0
    clip = torch.rand(2, 3, 3, 40, 56)
    with torch.no_grad():
        trained, _ = model.train()(clip)
        evaluated, _ = model.eval()(clip)
    diff = float((trained - evaluated).abs().max())
    assert evaluated.abs().max() > 0.05  # not trivially ~0
    assert diff > 1e-2 if norm == "batch" else diff <= logits_atol(evaluated)


def test_group_norm_trains_on_a_single_frame() -> None:
    """BatchNorm cannot train on one 1x1 image-pooling value per channel; GroupNorm can."""
    frame = torch.rand(1, 3, 40, 56)
    build_model("Deep+_mobile", norm="group").train()(frame)[0].sum().backward()
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        build_model("Deep+_mobile", norm="batch").train()(frame)


@pytest.mark.parametrize("name", list(SEED_PARAMS))
def test_parameter_counts_with_group_norm_match_thesis(name: str) -> None:
    model = build_model(name, faithful=True, norm="group")
    assert (count_parameters(model), count_parameters(model, trainable_only=True)) == SEED_PARAMS[
        name
    ]


def test_options_saved_before_norm_existed_rebuild_batchnorm() -> None:
    old = randomize_norms(build_model("Deep_mobile_gruV5", norm="batch"), seed=3)
    options = old.options.to_dict()
    del options["norm"]  # what an older recseg saved
    rebuilt = rebuild_model("Deep_mobile_gruV5", options)
    assert rebuilt.options.norm == "batch"
    rebuilt.load_state_dict(old.state_dict(), strict=True)
    clip = torch.rand(1, 2, 3, 40, 56)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(clip)[0], old.eval()(clip)[0])
    saved_now = build_model("Deep_mobile_gruV5").options.to_dict()
    assert rebuild_model("Deep_mobile_gruV5", saved_now).options.norm == "group"
