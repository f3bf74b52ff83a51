"""Recurrent state helpers, local ImageNet weights, and no downloads."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from recseg.errors import InputError
from recseg.models import (
    build_model,
    detach_state,
    reset_state,
    select_state,
    stack_states,
    state_to,
)


def _state() -> dict[str, torch.Tensor]:
    model = build_model("Deep_mobile_lstmV4").eval()
    clip = torch.rand(3, 2, 3, 40, 56, requires_grad=True)
    _, state = model(clip)
    return state


def test_state_is_a_flat_dict_of_batch_first_tensors() -> None:
    state = _state()
    assert set(state) == {"h", "c", "prev1", "prev2"}
    assert all(v.shape[0] == 3 for v in state.values())
    assert all(v.requires_grad for v in state.values())
    assert not any(v.requires_grad for v in detach_state(state).values())


def test_state_select_stack_move_and_reset() -> None:
    state = detach_state(_state())
    one = select_state(state, 1)
    assert all(v.shape[0] == 1 for v in one.values())
    picked = select_state(state, torch.tensor([True, False, True]))
    assert torch.equal(
        stack_states([select_state(state, 0), select_state(state, 2)])["h"], picked["h"]
    )
    half = state_to(state, "cpu", torch.float64)
    assert all(v.dtype == torch.float64 for v in half.values())
    cleared = reset_state(state, torch.tensor([False, True, False]))
    assert cleared["c"][1].abs().max() == 0
    assert torch.equal(cleared["c"][0], state["c"][0]) and torch.equal(
        cleared["c"][2], state["c"][2]
    )


def test_state_survives_a_safe_checkpoint_round_trip(tmp_path: Path) -> None:
    state = detach_state(_state())
    torch.save({"state": state}, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)["state"]
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_pretrained_weights_load_from_a_local_file(tmp_path: Path) -> None:
    reference = tvm.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    model = build_model("Deep_mobile_gruV3", pretrained=str(path))
    assert torch.equal(model.backbone.low[0][0].weight, reference.features[0][0].weight)
    assert torch.equal(
        model.backbone.high[-1].conv[-1].running_var, reference.features[17].conv[-1].running_var
    )


def test_pretrained_resnet_weights(tmp_path: Path) -> None:
    reference = tvm.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(reference.state_dict(), path)
    model = build_model("Deep+_resnet50", pretrained=str(path))
    assert torch.equal(model.backbone.high[-1][-1].conv3.weight, reference.layer4[-1].conv3.weight)


@pytest.mark.parametrize("content", ["wrong-architecture", "garbage", "missing", "pickle"])
def test_bad_pretrained_files_give_one_line(tmp_path: Path, content: str) -> None:
    path = tmp_path / "weights.pth"
    if content == "wrong-architecture":
        torch.save(tvm.resnet50(weights=None).state_dict(), path)
    elif content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "pickle":
        path.write_bytes(
            pickle.dumps(Path("/etc/passwd"), protocol=2)
        )  # an arbitrary object: refused
    with pytest.raises(InputError) as err:
        build_model("Deep+_mobile", pretrained=str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_nothing_is_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("recseg tried to download weights")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    for name in ("Deep+_mobile", "Deep_resnet50_gruV1", "mobilenetv3-lstm-branch"):
        build_model(name)
    assert not (tmp_path / "torch-home").exists()
