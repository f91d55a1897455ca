"""``objdisc train-head``: FOUND's saliency head trained on any images, resumable, with provenance.

The loop is :mod:`objdisc.engine.head_training` (FOUND's ``main_found_train.py`` and its
``configs/found_DUTS-TR.yaml``); this module checks the inputs and the output before any model is
built, resumes from the checkpoint beside the output (``HEAD.safetensors.training.pt``: the head,
AdamW's and StepLR's state, the next iteration, the losses; refused when made with other settings,
naming what differs), and writes the head as ``.safetensors`` with what produced it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.datasets import DatasetArgs
from objdisc.engine.head_training import HeadSettings
from objdisc.errors import OptionError
from objdisc.models.args import ModelArgs

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainHeadConfig:
    """What ``objdisc train-head`` was asked.

    Attributes:
        model: the frozen backbone.
        data: the images (any dataset kind; only its images are read).
        out: the ``.safetensors`` file to write.
        settings: FOUND's training settings.
        limit: the first this many images only.
        device: ``auto``, ``cpu``, ``cuda``, ...
        checkpoint_every: iterations between checkpoints.
        cache: a feature cache folder (as ``run --cache``): each image's features computed once and
            read back in later epochs and later trainings; only with ``augment`` off (an augmented
            image differs at every draw).
    """

    model: ModelArgs
    data: DatasetArgs
    out: Path
    settings: HeadSettings = field(default_factory=HeadSettings)
    limit: int | None = None
    device: str = "auto"
    checkpoint_every: int = 50
    cache: Path | None = None


@dataclass(frozen=True)
class TrainHeadResult:
    """What a training gave: the head's file, its losses, whether it resumed."""

    out: Path
    losses: list[float]
    resumed_from: int
    already_done: bool = False


def check_out(out: Path) -> None:
    """Refuse an output objdisc may not write: not ``.safetensors``, a folder, or a file objdisc's
    ``train-head`` did not make.

    Raises:
        OptionError: naming the file and what to do.
    """
    if out.suffix.lower() != ".safetensors":
        raise OptionError(f"--out {out}: give a .safetensors file name for the head")
    if out.is_dir():
        raise OptionError(f"--out {out}: is a folder; give a .safetensors file name")
    if out.exists() and not _our_head(out):
        raise OptionError(f"--out {out}: exists and objdisc train-head did not write it; give another name")


def _our_head(path: Path) -> dict[str, Any] | None:
    """The provenance of a head objdisc wrote, or ``None``."""
    from objdisc.models.saliency_head import METADATA_KEY

    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
        found = json.loads(metadata.get(METADATA_KEY, "null"))
    except Exception:  # not a safetensors file, or not ours
        return None
    return found if isinstance(found, dict) and found.get("producer") == "objdisc train-head" else None


def identity(config: TrainHeadConfig, backbone: Any, n_images: int) -> dict[str, Any]:
    """What decides the head besides the images' content: a checkpoint or head of other values is refused."""
    return {
        "format": CHECKPOINT_FORMAT,
        "backbone": backbone.spec.name,
        "timm_model": backbone.spec.timm_name,
        "weights_sha256": backbone.weights.sha256,
        "images": n_images,
        **config.settings.record(),
    }


def cache_identity(config: TrainHeadConfig, backbone: Any) -> dict[str, Any]:
    """What decides a training image's cached features besides the image: the backbone and its
    weights, and the input (the image resized to ``crop x crop``, float32)."""
    from objdisc.engine.plan import pos_embed_setting, resample_setting

    return {
        "input": "train-head",
        "crop": config.settings.crop,
        "timm_model": backbone.spec.timm_name,
        **pos_embed_setting(backbone.spec),
        **resample_setting(config.model.resample_weights),
        "weights_sha256": backbone.weights.sha256,
        "precision": "fp32",
        "model_kwargs": config.model.model_kwargs,
    }


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> str:
    keys = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    return ", ".join(f"{k}: {saved.get(k)!r} there, {wanted.get(k)!r} now" for k in keys)


def run(
    config: TrainHeadConfig, progress: bool | None = None, echo: Callable[[str], None] | None = None
) -> TrainHeadResult:
    """Train (or resume, or find done) the head of ``config``.

    Raises:
        OptionError: a bad output, a checkpoint or head of other settings, too few images.
        ObjdiscError: the dataset or the weights cannot be used, naming the file.
    """
    import torch
    from tqdm import tqdm

    from objdisc.engine import head_training as training
    from objdisc.images import load_image
    from objdisc.models.backbones import create_backbone
    from objdisc.models.saliency_head import save_head
    from objdisc.utils.device import resolve_device
    from objdisc.utils.provenance import now_iso, producer

    out = Path(config.out)
    check_out(out)
    if config.cache is not None and config.settings.augment:
        raise OptionError(
            "--cache needs --no-augment: an augmented image is another input at every draw, so its features are "
            "never read back"
        )
    dataset = config.data.load()
    records = [r for r in dataset.records if r.member is None][: config.limit]
    if not records:
        raise OptionError(f"{config.data.images or config.data.dataset}: no images to train on")
    device = resolve_device(config.device)
    backbone = create_backbone(
        config.model.spec(),
        config.model.weights,
        device=device,
        resample_weights=config.model.resample_weights,
        **config.model.model_kwargs,
    )
    backbone.model.requires_grad_(False)
    wanted = identity(config, backbone, len(records))
    done = _our_head(out)
    if done is not None:
        if done.get("identity") != wanted:
            differ = _differences(done.get("identity") or {}, wanted)
            raise OptionError(f"--out {out}: a head trained with other settings ({differ}); give another --out")
        return TrainHeadResult(out, list(done.get("losses", [])), int(done.get("iterations", 0)), already_done=True)
    width = backbone.model.embed_dim
    saved_path = training.checkpoint_path(out)
    state = training.new_state(width, config.settings, device)
    if saved_path.exists():
        try:
            saved = torch.load(saved_path, map_location=device, weights_only=True)
        except Exception as exc:
            raise OptionError(
                f"{saved_path}: the training checkpoint cannot be read ({type(exc).__name__}: {exc}); delete it to "
                "start again"
            ) from exc
        if saved.get("identity") != wanted:
            raise OptionError(
                f"{saved_path}: a training checkpoint made with other settings "
                f"({_differences(saved.get('identity') or {}, wanted)}); rerun with those, or delete it to start again"
            )
        state = training.load_state(saved["state"], width, config.settings, device)
    resumed_from = state.next_iteration

    def checkpoint(current: training.TrainingState) -> None:
        temporary = saved_path.with_name(saved_path.name + ".tmp")
        torch.save({"identity": wanted, "state": current.state_dict()}, temporary)
        temporary.replace(saved_path)

    def load(index: int) -> Any:
        return load_image(records[index].path)[0]

    total = config.settings.iterations + 1
    bar = tqdm(total=total, initial=resumed_from, disable=progress is False, desc="train-head", unit="it")

    def report(iteration: int, loss: float) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")

    cached = None
    if config.cache is not None:
        from objdisc.engine.feature_cache import FeatureCache

        cached = training.CachedBatches(FeatureCache(Path(config.cache), cache_identity(config, backbone)),
                                        [r.path for r in records])  # fmt: skip
    try:
        state = training.train(
            backbone, load, len(records), config.settings, state, device, checkpoint, config.checkpoint_every, report,
            cached,
        )  # fmt: skip
    finally:
        bar.close()
    weight, bias = training.head_arrays(state)
    provenance = {
        "producer": "objdisc train-head",
        "identity": wanted,
        "backbone": backbone.spec.name,
        "patch_size": backbone.patch_size,
        "width": width,
        "iterations": state.next_iteration,
        "losses": [round(x, 6) for x in state.losses],
        "images_from": str(config.data.images or config.data.dataset),
        "n_images": len(records),
        "created": now_iso(),
        "run": producer(backbone.spec, backbone.weights, device, "fp32"),
    }
    save_head(out, weight, bias, provenance)
    saved_path.unlink(missing_ok=True)
    if echo is not None:
        first, last = state.losses[0], state.losses[-1]
        echo(f"head       {out} ({state.next_iteration} iterations, loss {first:.4f} -> {last:.4f})")
        if cached is not None:
            echo(f"cache      {cached.cache.folder} ({cached.hits} read, {cached.misses} computed)")
    return TrainHeadResult(out, state.losses, resumed_from)


__all__ = ["TrainHeadConfig", "TrainHeadResult", "cache_identity", "check_out", "run"]
