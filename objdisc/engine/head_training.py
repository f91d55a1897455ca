"""Training FOUND's saliency head as ``main_found_train.py`` does, from a frozen backbone.

FOUND's ``configs/found_DUTS-TR.yaml`` and its training loop, per iteration ``n`` (0, 1, ...,
``iterations``: its loop updates once more at ``n_iter == max_iter`` before it stops):

1. a batch of images (``batch_size``, the epoch's order shuffled), each augmented as FOUND's
   ``FoundDataset``: the shorter side resized to ``crop`` (bilinear), scaled by ``s`` drawn in
   ``scale_range``, resized to ``crop x crop``, Gaussian-blurred with probability 1/2 (kernel 10 % of
   the side, odd; sigma in [0.1, 2]); or, without augmentation, resized to ``crop x crop`` once;
2. the frozen backbone's last-block keys ``k`` and CLS attention; the head's logits ``z`` (a 1x1
   convolution, i.e. ``k w + b`` per patch);
3. ``M = z > 0``; its bilateral-solver refinement ``M_bs`` (:func:`refine_with_solver`); loss
   ``w_bs * BCE(z, M_bs)``;
4. while ``n < stop_bkg_loss``: plus ``BCE(z, B_bs)`` with ``B`` FOUND's training-free object mask
   (:func:`objdisc.methods.found.background`, negated) refined the same way; afterwards plus
   ``w_self * BCE(z, M)``;
5. AdamW (``lr``), then StepLR (``step_lr`` iterations, ``gamma``).

Everything random is drawn from generators seeded by ``(seed, epoch[, position])``, so that a
resumed training repeats exactly the batches an uninterrupted one would: the head's initial weights
(torch's ``Conv2d`` initialisation under ``seed``), each epoch's order, each image's scale, blur
and sigma. FOUND draws them from global generators and data-loader workers; its numbers cannot be
reproduced bit for bit, by it or by objdisc.

The solver image: FOUND un-normalises the normalised float image and converts it back to bytes by
truncation (``ToPILImage``), which objdisc repeats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from objdisc.models.backbones import Backbone


@dataclass(frozen=True)
class HeadSettings:
    """FOUND's training settings (``configs/found_DUTS-TR.yaml``); what decides the trained head."""

    iterations: int = 500
    batch_size: int = 50
    lr: float = 5e-2
    step_lr: int = 50
    gamma: float = 0.95
    w_bs_loss: float = 1.5
    w_self_loss: float = 4.0
    stop_bkg_loss: int = 100
    crop: int = 224
    scale_min: float = 0.1
    scale_max: float = 3.0
    augment: bool = True
    bkg_th: float = 0.3
    seed: int = 0

    def record(self) -> dict[str, Any]:
        """JSON-able."""
        return asdict(self)


def augment(image: np.ndarray, settings: HeadSettings, rng: np.random.Generator) -> np.ndarray:
    """One training image as FOUND's dataset makes it (module docstring, step 1).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        settings: crop side, scale range, whether to augment.
        rng: this image's generator at this epoch.

    Returns:
        ``(crop, crop, 3)`` uint8 RGB.
    """
    import cv2
    from PIL import Image

    side = settings.crop
    picture = Image.fromarray(image)
    if not settings.augment:
        return np.asarray(picture.resize((side, side), Image.BILINEAR))
    w, h = picture.size
    if w > h:  # FOUND's compute_size, edge "shorter"
        w, h = int(float(w) / h * side), side
    else:
        w, h = side, int(float(h) / w * side)
    picture = picture.resize((w, h), Image.BILINEAR)
    scale = rng.uniform(settings.scale_min, settings.scale_max)
    picture = picture.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)
    out = np.asarray(picture.resize((side, side), Image.BILINEAR))
    blur, sigma = rng.random(), rng.random()
    if blur < 0.5:
        kernel = int((0.1 * side // 2 * 2) + 1)
        out = cv2.GaussianBlur(np.ascontiguousarray(out), (kernel, kernel), (2.0 - 0.1) * sigma + 0.1)
    return out


def solver_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The image FOUND hands its bilateral solver: normalised, un-normalised, times 255, truncated."""
    x = image.astype(np.float32) / np.float32(255.0)
    m, s = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    back = ((x - m) / s) * s + m
    return np.clip(np.floor(back * np.float32(255.0)), 0, 255).astype(np.uint8)


def refine_with_solver(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """FOUND's ``apply_bilateral_solver`` with ``get_all_cc``, back on the grid.

    The ``(h, w)`` 0/1 grid mask is resized to the image (OpenCV bilinear), refined by the
    bilateral solver (:func:`objdisc.refinement.bilateral.bilateral_solve`, sigmas 16 / 16 / 8),
    thresholded at 0.5 with holes filled; every 4-connected component is kept but the one of the
    most pixels (counting the background as a component, as FOUND does). When that agrees with
    the resized mask (IoU above 0.5, both at 0.5) it is brought back to the grid (bilinear, any
    non-zero value counts) and returned; else the mask itself.

    Returns:
        ``(h, w)`` float32 0/1.
    """
    import cv2
    import scipy.ndimage
    import torch
    import torch.nn.functional as F

    from objdisc.refinement.bilateral import bilateral_solve

    height, width = image.shape[:2]
    resized = cv2.resize(mask.astype(np.float32), (width, height))
    soft = bilateral_solve(image, resized.astype(np.float64))
    labels, count = scipy.ndimage.label(scipy.ndimage.binary_fill_holes(soft > 0.5))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    largest = int(np.argsort(sizes, kind="stable")[-1])
    refined = (labels != largest).astype(np.float32)
    a, b = resized > 0.5, refined > 0.5
    union = np.logical_or(a, b).sum()
    iou = np.logical_and(a, b).sum() / union if union else float("nan")
    if not iou > 0.5:
        return mask.astype(np.float32)
    down = F.interpolate(torch.from_numpy(refined)[None, None], size=mask.shape, mode="bilinear", align_corners=False)
    return (down[0, 0] != 0).float().numpy()


def initial_head(width: int, seed: int) -> torch.nn.Conv2d:
    """FOUND's decoder, ``Conv2d(width, 1, 1)``, initialised by torch under ``seed``."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Conv2d(width, 1, (1, 1))


def epoch_batches(n_images: int, settings: HeadSettings, epoch: int) -> list[list[int]]:
    """The epoch's batches of image indices (the order shuffled by ``(seed, epoch)``; the last batch
    may be short, as a data loader's)."""
    order = np.random.default_rng([settings.seed, epoch]).permutation(n_images)
    return [order[i : i + settings.batch_size].tolist() for i in range(0, n_images, settings.batch_size)]


def schedule(n_images: int, settings: HeadSettings) -> Iterator[tuple[int, int, list[int]]]:
    """``(iteration, epoch, image indices)`` for iterations ``0 .. settings.iterations``."""
    iteration, epoch = 0, 0
    while True:
        for batch in epoch_batches(n_images, settings, epoch):
            yield iteration, epoch, batch
            if iteration == settings.iterations:
                return
            iteration += 1
        epoch += 1


@dataclass
class TrainingState:
    """Where a training is: the head, the optimiser and scheduler, the next iteration, the losses."""

    head: torch.nn.Conv2d
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    next_iteration: int
    losses: list[float]

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and lists only (torch's restricted unpickler reads it back)."""
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "next_iteration": self.next_iteration,
            "losses": list(self.losses),
        }


def new_state(width: int, settings: HeadSettings, device: torch.device) -> TrainingState:
    """A fresh head with FOUND's optimiser and schedule."""
    import torch

    head = initial_head(width, settings.seed).to(device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.step_lr, gamma=settings.gamma)
    return TrainingState(head, optimizer, scheduler, 0, [])


def load_state(saved: dict[str, Any], width: int, settings: HeadSettings, device: torch.device) -> TrainingState:
    """A training state from :meth:`TrainingState.state_dict`."""
    state = new_state(width, settings, device)
    state.head.load_state_dict(saved["head"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.next_iteration = int(saved["next_iteration"])
    state.losses = [float(x) for x in saved["losses"]]
    return state


def train_step(
    backbone: Backbone,
    extractor: Any,
    images: list[np.ndarray],
    iteration: int,
    state: TrainingState,
    settings: HeadSettings,
    device: torch.device,
    feats: torch.Tensor | None = None,
) -> float:
    """One iteration (module docstring, steps 2-5) on a batch of augmented ``(crop, crop, 3)`` images.

    Args:
        feats: the batch's ``kattn`` features ``(B, N, C + heads)`` float32 when already known (a
            feature cache), else computed here (:func:`batch_features`).

    Returns:
        The batch's loss.
    """
    import torch
    import torch.nn.functional as F

    from objdisc.methods.found import background, split

    patch = backbone.patch_size
    h, w = images[0].shape[0] // patch, images[0].shape[1] // patch
    if feats is None:
        feats = batch_features(backbone, extractor, images, device)
    keys, attention = split(feats.clone(), 0)
    keys = keys.clone()
    logits = state.head(keys.reshape(len(images), h, w, -1).permute(0, 3, 1, 2))[:, 0]  # (B, h, w), FOUND's decoder
    flat = logits.reshape(-1, 1)
    with torch.no_grad():
        predicted = (logits > 0).float()
    shown = [solver_image(im, backbone.spec.mean, backbone.spec.std) for im in images]
    refined = np.stack([refine_with_solver(m, im) for m, im in zip(predicted.cpu().numpy(), shown, strict=True)])
    target = torch.from_numpy(refined).to(device).reshape(-1, 1)
    loss = settings.w_bs_loss * F.binary_cross_entropy_with_logits(flat, target)
    if iteration < settings.stop_bkg_loss:
        with torch.no_grad():
            objects = (~background(keys, attention.clone(), settings.bkg_th)).float().view(-1, h, w).cpu().numpy()
        pseudo = np.stack([refine_with_solver(m, im) for m, im in zip(objects, shown, strict=True)])
        loss = loss + F.binary_cross_entropy_with_logits(flat, torch.from_numpy(pseudo).to(device).reshape(-1, 1))
    else:
        loss = loss + settings.w_self_loss * F.binary_cross_entropy_with_logits(flat, predicted.reshape(-1, 1))
    state.optimizer.zero_grad()
    loss.backward()
    state.optimizer.step()
    state.scheduler.step()
    return float(loss.detach())


def batch_features(backbone: Backbone, extractor: Any, images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """The frozen backbone's ``kattn`` features ``(B, N, C + heads)`` float32 of same-size images."""
    import torch

    from objdisc.images import make_batch

    tensors = [torch.from_numpy(np.array(im)) for im in images]
    x = make_batch(tensors, backbone.patch_size, backbone.spec.mean, backbone.spec.std, device)
    with torch.inference_mode():
        return extractor.extract(x)[extractor.specs[0]].float()


class CachedBatches:
    """Features of un-augmented training images read from a feature cache, the missing ones
    computed in one batch and stored (:mod:`objdisc.engine.feature_cache`).

    Without augmentation an image is always the same ``crop x crop`` input, so its features are
    computed once: in later epochs, and in later trainings on the same backbone and crop (other
    learning rates, losses, seeds), they are read back. Entries are the float32 features as
    computed; a training that reads them is bit-identical to the one that wrote them.

    Args:
        cache: a :class:`~objdisc.engine.feature_cache.FeatureCache` whose identity includes the crop.
        paths: image index -> its file (the cache names an entry by the file's sha256).
    """

    def __init__(self, cache: Any, paths: Sequence[Path]) -> None:
        from objdisc.models.feature_spec import FeatureSpec

        self.cache, self.paths = cache, list(paths)
        self.spec = FeatureSpec("kattn", -1)
        self.hits = self.misses = 0

    def features(
        self, backbone: Backbone, extractor: Any, batch: Sequence[int], images: list[np.ndarray], device: torch.device
    ) -> torch.Tensor:
        """``(B, N, C + heads)`` float32 on ``device`` for the images ``batch`` (``images`` in that order)."""
        import torch

        found: list[torch.Tensor | None] = []
        for index in batch:
            entry = self.cache.get(self.paths[index], self.spec)
            found.append(None if entry is None else entry.features)
        missing = [k for k, f in enumerate(found) if f is None]
        self.hits += len(batch) - len(missing)
        self.misses += len(missing)
        if missing:
            computed = batch_features(backbone, extractor, [images[k] for k in missing], device)
            patch = backbone.patch_size
            grid = (images[0].shape[0] // patch, images[0].shape[1] // patch)
            for row, k in enumerate(missing):
                side = images[k].shape[:2]
                self.cache.put(self.paths[batch[k]], self.spec, computed[row], grid, side, side)
                found[k] = computed[row]
        return torch.stack([f.to(device=device, dtype=torch.float32) for f in found])  # type: ignore[union-attr]


def train(
    backbone: Backbone,
    load: Callable[[int], np.ndarray],
    n_images: int,
    settings: HeadSettings,
    state: TrainingState,
    device: torch.device,
    checkpoint: Callable[[TrainingState], None],
    checkpoint_every: int,
    progress: Callable[[int, float], None] | None = None,
    cached: CachedBatches | None = None,
) -> TrainingState:
    """Train from ``state.next_iteration`` to the end (module docstring), checkpointing every
    ``checkpoint_every`` iterations and at the end.

    Args:
        backbone: the frozen backbone.
        load: image index -> ``(H, W, 3)`` uint8 RGB.
        n_images: how many images.
        settings: the training settings.
        state: where to start.
        device: where the model and head are.
        checkpoint: called with the state to save.
        checkpoint_every: iterations between checkpoints.
        progress: called with ``(iteration, loss)`` after each iteration.
        cached: read and store the features in a feature cache (only without augmentation).
    """
    from objdisc.models.feature_spec import FeatureSpec
    from objdisc.models.features import FeatureExtractor

    with FeatureExtractor(backbone.model, [FeatureSpec("kattn", -1)]) as extractor:
        for iteration, epoch, batch in schedule(n_images, settings):
            if iteration < state.next_iteration:
                continue
            images = [augment(load(i), settings, np.random.default_rng([settings.seed, epoch, i])) for i in batch]
            feats = None if cached is None else cached.features(backbone, extractor, batch, images, device)
            loss = train_step(backbone, extractor, images, iteration, state, settings, device, feats)
            if not math.isfinite(loss):
                raise FloatingPointError(f"the loss is {loss} at iteration {iteration}")
            state.losses.append(loss)
            state.next_iteration = iteration + 1
            if progress is not None:
                progress(iteration, loss)
            if state.next_iteration % checkpoint_every == 0:
                checkpoint(state)
    checkpoint(state)
    return state


def head_arrays(state: TrainingState) -> tuple[np.ndarray, float]:
    """``(weight (C,) float32, bias)`` of the trained head."""
    weight = state.head.weight.detach().cpu().reshape(-1).numpy().astype(np.float32)
    return weight, float(state.head.bias.detach().cpu()[0])


def checkpoint_path(out: Path) -> Path:
    """Where a training into ``out`` keeps its state until it is done."""
    return out.with_name(out.name + ".training.pt")


__all__ = [
    "CachedBatches",
    "HeadSettings",
    "TrainingState",
    "augment",
    "batch_features",
    "checkpoint_path",
    "epoch_batches",
    "head_arrays",
    "initial_head",
    "load_state",
    "new_state",
    "refine_with_solver",
    "schedule",
    "solver_image",
    "train",
    "train_step",
]
