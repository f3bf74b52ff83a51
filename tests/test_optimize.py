"""recseg's fast inference path against the network as built (the reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recseg.errors import InputError
from recseg.inference.convs import (
    TapGemmConv2d,
    TapPrunedConv2d,
    WinogradConv2d,
    dilated_winograd_conv2d,
    input_transform,
    output_transform,
    transform_weight,
)
from recseg.inference.optimize import compiler_available, fold_batchnorm, optimize
from recseg.models import build_model
from tests.tolerance import CONV_DEPTH, CROSS_RUNTIME_DEPTH, WINOGRAD_DEPTH, rel_tol


def _stream(model: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """Logits of ``frames`` (T, 3, H, W) streamed one at a time with the state carried."""
    state, outs = None, []
    with torch.no_grad():
        for frame in frames:
            logits, state = model(frame[None], state)
            outs.append(logits.float())
    return torch.cat(outs)


def _trained_like(name: str, **options: object) -> nn.Module:
    """A model whose BatchNorm layers hold non-trivial running statistics (as after training)
    and whose norms (BatchNorm, GroupNorm) non-trivial affine weights."""
    torch.manual_seed(0)
    model = build_model(name, **options)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
            if isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


# largest difference relative to the result's scale, from float32's epsilon (tests/tolerance.py)
FP32_CONV = rel_tol(torch.float32, CONV_DEPTH)  # a convolution computed another way
FP32_REWRITTEN = rel_tol(torch.float32, WINOGRAD_DEPTH)  # Winograd, tap-by-tap sums, folded norms
FP32_OPTIMISED = rel_tol(torch.float32, CROSS_RUNTIME_DEPTH)  # a network, other algorithms


def _rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("dilation", [1, 2, 4])
@pytest.mark.parametrize("size", [(17, 30), (8, 8), (34, 64)])
def test_winograd_equals_direct_convolution(dilation: int, size: tuple[int, int]) -> None:
    torch.manual_seed(1)
    conv = nn.Conv2d(32, 24, 3, padding=dilation, dilation=dilation).eval()
    x = torch.randn(2, 32, *size).contiguous(memory_format=torch.channels_last)
    wino = WinogradConv2d(conv, max_overhead=100.0)
    with torch.no_grad():
        expected = conv(x)
        if dilation == 1:
            got = wino(x)
        else:  # the polyphase form itself, whatever the tile overhead
            kin, kout = input_transform().float(), output_transform().float()
            u = transform_weight(conv.weight)
            got = dilated_winograd_conv2d(x, dilation, u, conv.bias, kin, kout)
    assert got.shape == expected.shape
    assert _rel_diff(got, expected) < FP32_REWRITTEN


def test_dead_taps_are_left_out_without_changing_the_result() -> None:
    torch.manual_seed(2)
    conv = nn.Conv2d(16, 8, 3, padding=36, dilation=36).eval()
    pruned = nn.Conv2d(16, 8, 3, padding=36, dilation=36).eval()
    pruned.load_state_dict(conv.state_dict())
    pruned.__class__ = TapPrunedConv2d
    for size in [(34, 64), (18, 32), (40, 80), (5, 5)]:  # rows dead, all dead, none dead
        x = torch.randn(1, 16, *size)
        with torch.no_grad():
            assert _rel_diff(pruned(x), conv(x)) < FP32_CONV


@pytest.mark.parametrize("size", [(34, 64), (18, 32), (9, 70)])
def test_tap_gemm_equals_direct_convolution(size: tuple[int, int]) -> None:
    torch.manual_seed(3)
    for dilation in (12, 24, 36):
        conv = nn.Conv2d(24, 16, 3, padding=dilation, dilation=dilation).eval()
        x = torch.randn(2, 24, *size).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            expected = conv(x)
            assert _rel_diff(TapGemmConv2d(conv)(x), expected) < FP32_REWRITTEN
            bf16 = TapGemmConv2d(conv.to(torch.bfloat16))(x.to(torch.bfloat16))
        assert bf16.dtype == torch.bfloat16
        assert _rel_diff(bf16.float(), expected) < rel_tol(torch.bfloat16, 4)


def test_bf16_resnet_uses_tap_gemm_for_its_wide_aspp_branches() -> None:
    fast = optimize(_trained_like("Deep+_resnet50"), "bf16", "cpu")
    assert fast.info["tap_gemm"] == 3  # 2048-channel ASPP branches at rates 12, 24, 36


def test_batchnorm_folding_is_exact_and_complete() -> None:
    model = _trained_like("Deep+_resnet50", norm="batch")
    folded = _trained_like("Deep+_resnet50", norm="batch")
    count = fold_batchnorm(folded)
    assert count == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert _rel_diff(folded(x)[0], model(x)[0]) < FP32_REWRITTEN


@pytest.mark.parametrize(
    "name",
    ["Deep+_mobile", "Deep_mobile_gruV3", "Deep_mobile_lstmV1", "Deep_mobile_gruV2",
     "Deep_mobile_lstmV5", "Deep_resnet50_gruV4"],
)  # fmt: skip
def test_optimised_fp32_matches_reference_within_1e4(name: str) -> None:
    model = _trained_like(name, norm="batch")
    frames = torch.rand(4, 3, 72, 128)
    fast = optimize(model, "fp32", "cpu")
    assert fast.info["folded_batchnorms"] > 0
    assert _rel_diff(_stream(fast, frames), _stream(model, frames)) < FP32_OPTIMISED
    # the model itself is untouched
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.mark.parametrize("name", ["Deep_mobile_lstmV5", "Deep_resnet50_gruV4", "mobilenetv3"])
@pytest.mark.parametrize("norm", ["group", "frozen"])
def test_optimised_group_and_frozen_norm_models_match_reference(name: str, norm: str) -> None:
    """GroupNorm stays as it is (it has no fixed statistics to fold); the frozen backbone's
    BatchNorms fold like any other."""
    model = _trained_like(name, norm=norm)
    frames = torch.rand(3, 3, 72, 128)
    fast = optimize(model, "fp32", "cpu")
    backbone_bns = sum(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    assert fast.info["folded_batchnorms"] == (backbone_bns if norm == "frozen" else 0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert sum(isinstance(m, nn.GroupNorm) for m in fast.modules()) > 0
    assert _rel_diff(_stream(fast, frames), _stream(model, frames)) < FP32_OPTIMISED


@pytest.mark.parametrize("name", ["Deep+_mobile", "Deep_mobile_gruV3", "Deep+_resnet50"])
def test_optimised_fp32_matches_reference_at_the_seed_size(name: str) -> None:
    """The benchmark's size (270x512, output stride 8): the dilation-36 ASPP branch loses its
    dead rows, the decoder's and recurrent unit's 3x3 convolutions run as Winograd."""
    model = _trained_like(name)
    frames = torch.rand(2, 3, 270, 512)
    fast = optimize(model, "fp32", "cpu")
    assert fast.info["winograd"] >= 1 and fast.info["pruned"] >= 3
    assert _rel_diff(_stream(fast, frames), _stream(model, frames)) < FP32_OPTIMISED


def test_clips_with_reset_mask_match_reference() -> None:
    model = _trained_like("Deep_mobile_gruV3")
    fast = optimize(model, "fp32", "cpu")
    clip = torch.rand(2, 3, 3, 48, 80)
    reset = torch.tensor([True, False])
    with torch.no_grad():
        ref_logits, ref_state = model(clip, None)
        ref_logits2, _ = model(clip, ref_state, reset)
        logits, state = fast(clip, None)
        logits2, _ = fast(clip, state, reset)
    assert logits.shape == (2, 3, 2, 48, 80)
    assert _rel_diff(logits, ref_logits) < FP32_OPTIMISED
    assert _rel_diff(logits2, ref_logits2) < FP32_OPTIMISED


# A random GroupNorm network is chaotic: relative input noise of 2**-9 (bf16's rounding) already
# moves its fp32 backbone output by ~4%, and bf16 moves its probabilities by up to ~0.09. The
# random BatchNorm networks (eval mode, made-up statistics) barely depend on their input at all.
BF16_PROB_TOLERANCE = {"batch": 0.05, "frozen": 0.05, "group": 0.15}


@pytest.mark.parametrize("norm", list(BF16_PROB_TOLERANCE))
def test_bf16_path_keeps_state_in_bf16_and_agrees_on_probabilities(norm: str) -> None:
    model = _trained_like("Deep_mobile_gruV3", norm=norm)
    fast = optimize(model, "bf16", "cpu")
    frames = torch.rand(3, 3, 64, 96)
    state = None
    with torch.no_grad():
        for frame in frames:
            logits, state = fast(frame[None], state)
    assert logits.dtype == torch.float32
    assert all(v.dtype == torch.bfloat16 for v in state.values())
    probs = torch.softmax(_stream(fast, frames), 1)
    ref = torch.softmax(_stream(model, frames), 1)
    assert float((probs - ref).abs().max()) < BF16_PROB_TOLERANCE[norm]
    assert (probs.argmax(1) == ref.argmax(1)).float().mean() > 0.95
    assert fast.info["winograd"] == 0  # Winograd's transforms need more than bf16's 8 bits


def test_unknown_precision_is_an_input_error() -> None:
    with pytest.raises(InputError, match="precision must be one of fp32, bf16"):
        optimize(build_model("Deep+_mobile"), "fp16", "cpu")


@pytest.mark.skipif(not compiler_available("cpu"), reason="no C++ compiler for torch.compile")
def test_compiled_path_matches_eager() -> None:
    model = _trained_like("Deep_mobile_lstmV3")
    frames = torch.rand(3, 3, 48, 64)
    fast = optimize(model, "fp32", "cpu", compile=True)
    got = _stream(fast, frames)
    assert fast.compiled
    assert _rel_diff(got, _stream(model, frames)) < FP32_OPTIMISED


def test_compile_falls_back_to_eager_when_the_compiler_fails(monkeypatch) -> None:
    """A real failure: inductor is pointed at a C++ compiler that does not exist."""
    import torch._inductor.config as inductor_config

    monkeypatch.setattr(inductor_config.cpp, "cxx", ("/nonexistent/g++",))
    torch._dynamo.reset()
    model = _trained_like("Deep+_mobile")
    frames = torch.rand(2, 3, 48, 64)
    fast = optimize(model, "fp32", "cpu", compile=True)
    got = _stream(fast, frames)
    assert not fast.compiled
    assert _rel_diff(got, _stream(model, frames)) < FP32_OPTIMISED
    torch._dynamo.reset()


def test_compiler_detection_follows_path(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CXX", raising=False)
    assert not compiler_available("cpu")
    fast = optimize(build_model("Deep+_mobile"), "fp32", "cpu", compile="auto")
    assert not fast.compiled


def test_direct_convolution_still_used_where_winograd_would_waste_work() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=24, dilation=24).eval()
    wino = WinogradConv2d(conv)
    x = torch.randn(1, 8, 34, 64)  # 24-dilated sub-grids of 2x3: tiles would be mostly padding
    with torch.no_grad():
        assert _rel_diff(wino(x), F.conv2d(x, conv.weight, conv.bias, 1, 24, 24)) < FP32_CONV
