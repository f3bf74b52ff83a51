"""Recurrent state helpers, ImageNet weights (a local file, or torchvision's through the torch
hub cache), and no downloads."""

from __future__ import annotations

import io
import pickle
import socket
import time
import urllib.request
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
from recseg.models.norms import FrozenBatchNorm2d
from recseg.models.weights import cache_file, imagenet_weights
from tests.media import one_error_line, recseg_in_process


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


# ---- pretrained="imagenet": torchvision's weights through the torch hub cache ------------------
DEAD_PROXY = "http://127.0.0.1:9"  # the discard port, closed: a connection is refused at once
PROXY_VARS = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


def _offline(monkeypatch: pytest.MonkeyPatch, torch_home: Path, proxy: str = DEAD_PROXY) -> None:
    """A torch hub cache in ``torch_home`` and no network: every proxy is ``proxy`` (a local
    port), and a connection anywhere but this machine fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    for var in PROXY_VARS:
        monkeypatch.setenv(var, proxy)
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    # urlopen keeps the opener (and the proxies) of its first call: a new one reads these
    monkeypatch.setattr(urllib.request, "_opener", None)
    connect = socket.create_connection

    def local_only(address: tuple, *args: object, **kwargs: object) -> socket.socket:
        assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address}"
        return connect(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)


def _cached(name: str) -> Path:
    path = cache_file(imagenet_weights(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def test_imagenet_weights_load_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch, tmp_path / "torch-home")
    path = _cached("mobilenet_v2")
    assert path == tmp_path / "torch-home/hub/checkpoints/mobilenet_v2-7ebf99e0.pth"
    reference = tvm.mobilenet_v2(weights=None).state_dict()
    reference["features.0.0.weight"].fill_(0.125)  # the marker
    reference["features.0.1.weight"].fill_(0.5)
    reference["features.0.1.running_var"].fill_(3.0)
    torch.save(reference, path)
    model = build_model("Deep+_mobile", pretrained="imagenet")
    assert model.options.norm == "frozen" and model.options.pretrained == "imagenet"
    first_bn = model.backbone.low[0][1]
    assert torch.all(model.backbone.low[0][0].weight == 0.125)
    assert isinstance(first_bn, FrozenBatchNorm2d) and torch.all(first_bn.running_var == 3.0)
    assert model.backbone.source == f"MobileNet_V2_Weights.IMAGENET1K_V2 ({path})"
    # GroupNorm asked for: the affine weights of the ImageNet BatchNorms are kept
    group = build_model("Deep+_mobile", pretrained="imagenet", norm="group")
    assert isinstance(group.backbone.low[0][1], torch.nn.GroupNorm)
    assert torch.all(group.backbone.low[0][1].weight == 0.5)
    assert torch.all(group.backbone.low[0][0].weight == 0.125)


def test_imagenet_offline_without_the_file_says_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline(monkeypatch, tmp_path / "torch-home")
    path = cache_file(imagenet_weights("resnet50"))
    with pytest.raises(InputError) as err:
        build_model("Deep+_resnet50", pretrained="imagenet")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(
        "--pretrained imagenet: cannot download "
        "https://download.pytorch.org/models/resnet50-11ad3fa6.pth ("
    )
    assert message.endswith(f"); place that file at {path} (TORCH_HOME)")
    assert "refused" in message.lower() and not path.exists()


def test_imagenet_offline_through_the_cli_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _offline(monkeypatch, tmp_path / "torch-home")
    args = ["describe", "--model", "Deep+_mobile", "--pretrained", "imagenet", "--size", "32x48"]
    result = recseg_in_process([*args, "--seq-len", "1"], capsys)
    line = one_error_line(result, "--pretrained imagenet: cannot download", "mobilenet_v2-7ebf99e0")
    assert str(tmp_path / "torch-home/hub/checkpoints/mobilenet_v2-7ebf99e0.pth") in line
    assert result.stdout == ""


def test_imagenet_download_gives_up_on_a_silent_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A proxy that accepts the connection and never answers: the socket timeout ends it."""
    from recseg.models import weights

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # the kernel completes the handshake; nobody ever reads or writes
        _offline(
            monkeypatch, tmp_path / "torch-home", f"http://127.0.0.1:{silent.getsockname()[1]}"
        )
        monkeypatch.setattr(weights, "DOWNLOAD_TIMEOUT", 0.5)
        start = time.monotonic()
        with pytest.raises(InputError, match=r"cannot download .*timed out"):
            build_model("Deep+_mobile", pretrained="imagenet")
    assert time.monotonic() - start < 30
    assert socket.getdefaulttimeout() is None  # put back


@pytest.mark.parametrize("content", ["garbage", "truncated", "pickle"])
def test_damaged_cached_imagenet_file_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str
) -> None:
    _offline(monkeypatch, tmp_path / "torch-home")
    path = _cached("mobilenet_v3_large")
    if content == "garbage":
        path.write_bytes(b"not a checkpoint")
    elif content == "truncated":
        buffer = io.BytesIO()
        torch.save(tvm.mobilenet_v3_large(weights=None).state_dict(), buffer)
        path.write_bytes(buffer.getvalue()[:4096])
    else:
        path.write_bytes(pickle.dumps(Path("/etc/passwd"), protocol=2))
    with pytest.raises(InputError) as err:
        build_model("mobilenetv3", pretrained="imagenet")
    message = str(err.value)
    assert "\n" not in message and f"the cached file {path}" in message
    assert ("Python objects" if content == "pickle" else "is damaged") in message
    assert path.exists()  # the user's file: never deleted behind their back
