"""Local weights in timm's and the upstream layouts, errors, and the hub download path."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from conftest import invoke, refused, write_image
from safetensors.torch import save_file

from objdisc.models.backbones import build_model, create_backbone
from objdisc.models.features import KeyExtractor
from objdisc.models.specs import get_spec
from objdisc.models.weights import WeightsError, resolve_hub_weights


def keys_of(backbone_model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with KeyExtractor(backbone_model) as extractor, torch.no_grad():
        return extractor(x)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_layout_files_load_exactly(tmp_path: Path, suffix: str):
    source = build_model(get_spec("dinov2_reg"), depth=2)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    backbone = create_backbone("dinov2_reg", path, depth=2)
    for key, value in source.state_dict().items():
        assert torch.equal(backbone.model.state_dict()[key], value)
    assert backbone.weights.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert backbone.weights.path == str(path)


@pytest.mark.parametrize(
    "name", ["dinov2_vits14", "dinov2_reg_vits14", pytest.param("dinov2_reg_vitg14", marks=pytest.mark.slow)]
)
def test_upstream_dinov2_layout_is_converted(tmp_path: Path, name: str):
    torch.manual_seed(0)
    source = build_model(get_spec(name), depth=1)
    state = source.state_dict()
    upstream = {}
    giant = "giant" in get_spec(name).timm_name
    for key, value in state.items():
        if giant:  # upstream ViT-g names its SwiGLU layers w12 / w3
            key = key.replace("mlp.fc1", "mlp.w12").replace("mlp.fc2", "mlp.w3")
        upstream[key] = value.clone()
    upstream["mask_token"] = torch.zeros(1, state["cls_token"].shape[-1])
    if "reg_token" in upstream:
        pos0 = torch.randn(1, 1, state["cls_token"].shape[-1])
        upstream["register_tokens"] = upstream.pop("reg_token")
        upstream["cls_token"] = state["cls_token"] - pos0
        upstream["pos_embed"] = torch.cat([pos0, state["pos_embed"]], dim=1)
    assert set(upstream) != set(state)
    torch.save(upstream, tmp_path / "dinov2_pretrain.pth")
    backbone = create_backbone(name, tmp_path / "dinov2_pretrain.pth", depth=1)
    x = torch.randn(1, 3, 28, 42)
    torch.testing.assert_close(keys_of(backbone.model, x), keys_of(source.eval(), x), rtol=1e-5, atol=1e-5)


def test_dino_training_checkpoint_is_unwrapped(tmp_path: Path):
    source = build_model(get_spec("dino"), depth=1)
    teacher = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["module.head.mlp.0.weight"] = torch.zeros(4, 4)
    torch.save({"teacher": teacher, "epoch": 100}, tmp_path / "checkpoint.pth")
    backbone = create_backbone("dino", tmp_path / "checkpoint.pth", depth=1)
    assert torch.equal(backbone.model.pos_embed, source.pos_embed)


def _dino_training_args() -> argparse.Namespace:
    """The kind of Namespace DINO's main_dino.py pickles: ints, floats, strings, bools, tuples, lists."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="vit_small")
    parser.add_argument("--patch_size", type=int, default=16)
    parser.add_argument("--norm_last_layer", type=bool, default=True)
    parser.add_argument("--lr", type=float, default=0.0005)
    parser.add_argument("--global_crops_scale", type=float, nargs="+", default=(0.4, 1.0))
    parser.add_argument("--local_crops_scale", type=float, nargs="+", default=(0.05, 0.4))
    parser.add_argument("--output_dir", default=".")
    args = parser.parse_args(["--local_crops_scale", "0.05", "0.4"])
    args.rank, args.world_size, args.gpu, args.dist_url = 0, 1, 0, "env://"
    return args


def test_dino_training_checkpoint_as_main_dino_saves_it(tmp_path: Path):
    torch.manual_seed(0)
    source = build_model(get_spec("dino"), depth=1)
    student = {f"module.backbone.{k}": v + 1 for k, v in source.state_dict().items()}  # DDP-wrapped
    student["module.head.last_layer.weight_g"] = torch.ones(8, 1)
    teacher = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    teacher["head.mlp.0.weight"] = torch.zeros(4, 4)
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    param.sum().backward()
    optimizer.step()
    torch.save(
        {
            "student": student,
            "teacher": teacher,
            "optimizer": optimizer.state_dict(),
            "epoch": 100,
            "args": _dino_training_args(),
            "dino_loss": {"center": torch.zeros(1, 8)},
            "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "growth_interval": 2000, "_growth_tracker": 0},
        },
        tmp_path / "checkpoint.pth",
    )
    backbone = create_backbone("dino", tmp_path / "checkpoint.pth", depth=1)
    for key, value in source.state_dict().items():  # the teacher, not the student
        assert torch.equal(backbone.model.state_dict()[key], value), key


class _Payload:
    """Pickles as a call to ``open(marker, "w")``: if it ever ran, the marker file would exist."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("where", ["top", "inside_args"])
def test_a_pickled_payload_never_runs(tmp_path: Path, where: str):
    marker = tmp_path / "ran"
    state = build_model(get_spec("dino"), depth=1).state_dict()
    if where == "top":
        content = {"teacher": state, "evil": _Payload(marker)}
    else:  # hidden inside the one allowed non-tensor type
        content = {"teacher": state, "args": argparse.Namespace(lr=0.1, evil=_Payload(marker))}
    torch.save(content, tmp_path / "checkpoint.pth")
    with pytest.raises(WeightsError, match="holds pickled Python objects, not a state dict") as info:
        create_backbone("dino", tmp_path / "checkpoint.pth", depth=1)
    assert "checkpoint.pth" in str(info.value)
    assert not marker.exists()


def test_a_file_that_fits_neither_layout_names_the_keys(tmp_path: Path):
    save_file(build_model(get_spec("dinov2_reg"), depth=1).state_dict(), str(tmp_path / "reg.safetensors"))
    with pytest.raises(WeightsError, match=r"a patch-14 model .* use -b dinov2_reg_vits14"):
        create_backbone("dino", tmp_path / "reg.safetensors", depth=1)
    with pytest.raises(WeightsError) as info:  # resampled on purpose, the keys still do not fit
        create_backbone("dino", tmp_path / "reg.safetensors", resample_weights=True, depth=1)
    message = str(info.value)
    assert "reg.safetensors" in message
    assert "unexpected keys: " in message and "reg_token" in message
    assert "blocks.0.ls1.gamma" in message
    assert "mis-shaped: " in message and "patch_embed.proj.weight" in message


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.pth", None, "not found"),
        ("garbage.safetensors", b"\x00\x01garbage", "cannot read weights"),
        ("garbage.pth", b"not a pickle", "not a weights file objdisc can read"),
        ("weights.npz", b"", "unsupported weights extension"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, name: str, content: bytes | None, message: str):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=message) as info:
        create_backbone("dino", path, depth=1)
    assert str(path) in str(info.value)


class _HubHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/<org>/<repo>/resolve/<rev>/<file>`` like the Hugging Face hub does."""

    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def _lookup(self) -> bytes | None:
        self.requests.append(f"{self.command} {self.path}")
        return self.files.get(self.path.split("?")[0])

    def _headers(self, body: bytes) -> None:
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_HEAD(self) -> None:
        body = self._lookup()
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(body)

    def do_GET(self) -> None:
        body = self._lookup()
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self._headers(body)
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, type[_HubHandler]]]:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    handler = type("Handler", (_HubHandler,), {"files": {}, "requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_hub_weights_download_once_into_the_cache(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    endpoint, handler = hub
    spec = get_spec("dinov2_reg")
    source = build_model(spec, depth=1)
    save_file(source.state_dict(), str(tmp_path / "model.safetensors"))
    body = (tmp_path / "model.safetensors").read_bytes()
    handler.files[f"/timm/{spec.timm_name}/resolve/main/model.safetensors"] = body
    cache = tmp_path / "hub-cache"

    path, source_name = resolve_hub_weights(spec.pretrained_cfg, endpoint=endpoint, cache_dir=cache)
    assert source_name == f"hf-hub:timm/{spec.timm_name}"
    assert path.read_bytes() == body and cache in path.parents
    assert any(
        r.startswith("GET /timm/vit_small_patch14_reg4_dinov2.lvd142m/resolve/main/model.safetensors")
        for r in handler.requests
    )

    # Second time, offline: served from the cache, nothing requested.
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    handler.requests.clear()
    again, _ = resolve_hub_weights(spec.pretrained_cfg, endpoint=endpoint, cache_dir=cache)
    assert again.read_bytes() == body and handler.requests == []


def serve_bin(handler: type[_HubHandler], spec, folder: Path) -> None:
    """Put a one-block ``pytorch_model.bin`` of ``spec`` (and no safetensors) on the test hub."""
    path = folder / "pytorch_model.bin"
    torch.save(build_model(spec, depth=1).state_dict(), path)
    handler.files[f"/timm/{spec.timm_name}/resolve/main/pytorch_model.bin"] = path.read_bytes()


def test_hub_falls_back_to_pytorch_model_bin(hub, tmp_path: Path):
    endpoint, handler = hub
    spec = get_spec("dino")
    serve_bin(handler, spec, tmp_path)
    path, _ = resolve_hub_weights(spec.pretrained_cfg, endpoint=endpoint, cache_dir=tmp_path / "cache")
    assert path.name == "pytorch_model.bin"


def test_hub_offline_and_not_cached_says_what_to_do(tmp_path: Path):
    with pytest.raises(WeightsError, match="--weights FILE") as info:
        resolve_hub_weights(get_spec("dino").pretrained_cfg, cache_dir=tmp_path / "empty-cache")
    assert "dino_deitsmall16_pretrain.pth" in str(info.value)  # the upstream release is named
    assert "HF_HUB_OFFLINE" in str(info.value) and "empty-cache" in str(info.value)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_network_fails_within_seconds_with_one_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Not offline, but nothing answers: one probe, no minute of hub-client retries."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    start = time.perf_counter()
    with pytest.raises(WeightsError) as info:
        resolve_hub_weights(get_spec("dinov2_reg").pretrained_cfg, endpoint=endpoint, cache_dir=tmp_path / "c")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    for needle in ("--weights FILE", "dinov2_vits14_reg4_pretrain.pth", str(tmp_path / "c"), endpoint, "127.0.0.1"):
        assert needle in message, message


def test_a_cached_file_is_used_without_asking_the_hub(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    endpoint, handler = hub
    spec = get_spec("dino")
    serve_bin(handler, spec, tmp_path)
    first, _ = resolve_hub_weights(spec.pretrained_cfg, endpoint=endpoint, cache_dir=tmp_path / "cache")
    handler.requests.clear()
    again, _ = resolve_hub_weights(spec.pretrained_cfg, endpoint=endpoint, cache_dir=tmp_path / "cache")
    assert again == first and handler.requests == []


def test_dinov3_release_rope_periods_are_used(tmp_path: Path):
    spec = get_spec("dinov3_vits16")
    torch.manual_seed(0)
    source = build_model(spec, depth=2)  # block 0 attends with RoPE; keys of block 1 feel it
    exact = source.rope.periods.clone()
    rounded = exact.bfloat16().float()  # how the release files store them
    assert not torch.equal(exact, rounded)
    state = dict(source.state_dict())
    state["rope_embed.periods"] = rounded
    torch.save(state, tmp_path / "dinov3_release.pth")
    backbone = create_backbone("dinov3_vits16", tmp_path / "dinov3_release.pth", depth=2)
    assert torch.equal(backbone.model.rope.periods, rounded)
    x = torch.randn(1, 3, 48, 80)
    assert not torch.equal(keys_of(backbone.model, x), keys_of(source.eval(), x))  # the angles moved
    save_file(source.state_dict(), str(tmp_path / "timm.safetensors"))  # timm's layout has none
    assert torch.equal(
        create_backbone("dinov3_vits16", tmp_path / "timm.safetensors", depth=2).model.rope.periods, exact
    )


def test_a_timm_model_on_the_hub_by_name(hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`-b timm:hf-hub:org/name`: timm's config and the weights both come from the hub."""
    import huggingface_hub.constants

    from objdisc.models.specs import timm_spec

    endpoint, handler = hub
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT sets at import
    template = huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE.replace(
        huggingface_hub.constants._HF_DEFAULT_ENDPOINT, endpoint
    )
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    config = {
        "architecture": "deit_tiny_patch16_224",
        "num_classes": 0,
        "pretrained_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "license": "cc-by-4.0"},
    }
    handler.files["/someone/tiny-vit/resolve/main/config.json"] = json.dumps(config).encode()
    torch.manual_seed(0)
    model = build_model(get_spec("timm:deit_tiny_patch16_224"), depth=1)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    handler.files["/someone/tiny-vit/resolve/main/model.safetensors"] = (tmp_path / "model.safetensors").read_bytes()

    timm_spec.cache_clear()
    spec = get_spec("timm:hf-hub:someone/tiny-vit")
    assert spec.name == "timm:hf-hub:someone/tiny-vit" and spec.timm_name == "hf-hub:someone/tiny-vit"
    assert spec.mean == (0.5, 0.5, 0.5) and spec.license == "cc-by-4.0" and spec.patch_size == 16
    backbone = create_backbone(spec.name, depth=1)
    assert backbone.weights.source == "hf-hub:someone/tiny-vit"
    assert backbone.weights.sha256 == hashlib.sha256((tmp_path / "model.safetensors").read_bytes()).hexdigest()
    assert any(r.startswith("GET /someone/tiny-vit/resolve/main/model.safetensors") for r in handler.requests)


def test_no_weights_offline_is_one_message_naming_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import time

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    images = tmp_path / "images"
    write_image(images / "a.jpg", (56, 70), (10, 10, 40, 40))
    start = time.perf_counter()
    result = invoke("run", "-b", "dinov2_reg", "-d", "folder", "--images", str(images), "--out", str(tmp_path / "o"))
    refused(result, "--weights FILE", "dinov2_vits14_reg4_pretrain.pth", "HF_HUB_OFFLINE", "empty-cache")
    assert time.perf_counter() - start < 20


# Weights of another model, damaged weights, a whole pickled model: refused through the CLI.


def _save(model: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.mark.parametrize(
    ("timm_name", "needles"),
    [
        ("vit_small_patch8_224.dino", ("a patch-8 model", "has patch 16", "-b dino_vits8")),
        ("vit_small_patch16_384.augreg_in21k_ft_in1k", ("24x24 position grid", "a 14x14 grid", "--resample-weights")),
    ],
)
def test_weights_of_another_patch_size_or_grid_are_refused(tmp_path: Path, two_images, timm_name, needles):
    import timm

    path = _save(timm.create_model(timm_name, pretrained=False, num_classes=0, depth=1), tmp_path / "other.safetensors")
    args = ["run", "-b", "dino", "--weights", path, "-d", "folder", "--images", two_images, "--workers", "0"]
    refused(invoke(*args, "--out", tmp_path / "o"), str(path), *needles)
    assert not (tmp_path / "o" / "journal").exists()
    backbone = create_backbone("dino", path, resample_weights=True, depth=1)  # asked for: resampled
    assert backbone.patch_size == 16


def test_weights_with_nan_are_refused(tmp_path: Path, two_images):
    model = build_model(get_spec("dinov2_reg"), depth=1)
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight[3, 3] = float("nan")
    path = _save(model, tmp_path / "nan.safetensors")
    args = ["run", "-b", "dinov2_reg", "--weights", path, "-d", "folder", "--images", two_images]
    refused(invoke(*args, "--out", tmp_path / "o"), str(path), "NaN or infinite", "blocks.0.mlp.fc1.weight")


def test_a_whole_pickled_model_is_refused_with_what_to_save(tmp_path: Path, two_images):
    model = build_model(get_spec("dino"), depth=1)
    torch.save(model, tmp_path / "model.pth")
    args = ["run", "-b", "dino", "--weights", tmp_path / "model.pth", "-d", "folder", "--images", two_images]
    message = refused(invoke(*args, "--out", tmp_path / "o"), "model.pth", "torch.save(model.state_dict()")
    assert "VisionTransformer" in message and "weights_only" not in message
