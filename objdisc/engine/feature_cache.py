"""Per-image feature cache: run the backbone once, re-run any method with other options for free.

Layout under ``--cache DIR``::

    DIR/<identity hash>/identity.json           what made these features (below)
    DIR/<identity hash>/<kind>_l<layer>/<ab>/<image sha256>.safetensors

The identity is everything that decides the features besides the image: timm model name,
weights sha256, precision, ``--max-side``, extra model arguments and the cache format
version. The image is named by the sha256 of its file's bytes, so a changed image is a miss,
and the same photo under two datasets is one entry. Each file holds one tensor
``features`` ``(N, C)`` in the dtype the model produced (so a cached run gives bit-identical
boxes), and its metadata repeats the identity, the feature kind and layer, the patch grid,
the image sizes, the objdisc version and the sha256 of the tensor's bytes; :meth:`FeatureCache.get`
checks all of it, so an entry made with other settings, or damaged on disk with its header
intact, is never used (it is a miss: the model recomputes it).

Size: ``N x C x 4`` bytes in fp32 (a 500 x 375 VOC image with ViT-S/14: 0.9 MB; half that in
bf16).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from objdisc.errors import ObjdiscError
from objdisc.models.feature_spec import FeatureSpec
from objdisc.utils.hashing import sha256_file
from objdisc.utils.jsonio import write_json_atomic

logger = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: every entry carries the sha256 of its data (1's entries are misses, recomputed)


class CacheError(ObjdiscError):
    """The cache folder cannot be used."""


@dataclass(frozen=True)
class CachedFeatures:
    """One cache entry.

    Attributes:
        features: ``(N, C)`` tensor, row-major over ``grid_hw``.
        grid_hw: ``(h, w)`` patch grid.
        image_hw: ``(H, W)`` pixels the model saw (after any ``--max-side`` resize), unpadded.
        original_hw: ``(H, W)`` pixels of the file.
    """

    features: torch.Tensor
    grid_hw: tuple[int, int]
    image_hw: tuple[int, int]
    original_hw: tuple[int, int]


class FeatureCache:
    """Features of one model identity under ``root``.

    Args:
        root: the ``--cache`` folder (created if missing).
        identity: JSON-able dict of what decides the features (see the module docstring).
    """

    def __init__(self, root: Path, identity: dict[str, Any]) -> None:
        from objdisc.version import __version__

        self.identity = {**identity, "cache_format": CACHE_FORMAT}
        blob = json.dumps(self.identity, sort_keys=True)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:16]
        self.folder = Path(root).expanduser() / self.key
        self.version = __version__
        self._digests: dict[Path, str] = {}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not (self.folder / "identity.json").exists():
                write_json_atomic(self.folder / "identity.json", self.identity)
        except OSError as exc:
            raise CacheError(f"{root}: cannot use as a feature cache: {exc}") from exc

    def digest(self, path: Path) -> str:
        """sha256 of an image file, remembered for this cache object's life."""
        path = Path(path)
        if path not in self._digests:
            self._digests[path] = sha256_file(path)
        return self._digests[path]

    def path(self, image: Path, spec: FeatureSpec) -> Path:
        """Where the entry for ``image`` and ``spec`` lives."""
        digest = self.digest(image)
        return self.folder / spec.slug / digest[:2] / f"{digest}.safetensors"

    def has(self, image: Path, spec: FeatureSpec) -> bool:
        """Whether an entry exists (not yet checked: :meth:`get` does that)."""
        try:
            return self.path(image, spec).is_file()
        except OSError:  # the image itself is unreadable: not cached, the run reports it
            return False

    def get(self, image: Path, spec: FeatureSpec) -> CachedFeatures | None:
        """The entry for ``image`` and ``spec``, or ``None`` when missing, unreadable or
        made with other settings (logged)."""
        from safetensors import safe_open

        path = self.path(image, spec)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["objdisc"])
                features = f.get_tensor("features")
        except Exception as exc:  # a torn or foreign file is a miss, never a crash
            logger.warning("%s: unreadable cache entry (%s); recomputing", path, exc)
            return None
        expected = {
            "identity": self.identity,
            "kind": spec.kind,
            "layer": spec.layer,
            "image_sha256": self.digest(image),
        }
        if any(meta.get(k) != v for k, v in expected.items()):
            logger.warning("%s: cache entry made with other settings; recomputing", path)
            return None
        if meta.get("data_sha256") != tensor_digest(features):
            logger.warning("%s: cache entry damaged (its data does not match its checksum); recomputing", path)
            return None
        grid = (int(meta["grid_hw"][0]), int(meta["grid_hw"][1]))
        if features.shape[0] != grid[0] * grid[1]:
            logger.warning("%s: %d features for a %s grid; recomputing", path, features.shape[0], grid)
            return None
        return CachedFeatures(features, grid, tuple(meta["image_hw"]), tuple(meta["original_hw"]))  # type: ignore[arg-type]

    def put(
        self,
        image: Path,
        spec: FeatureSpec,
        features: torch.Tensor,
        grid_hw: tuple[int, int],
        image_hw: tuple[int, int],
        original_hw: tuple[int, int],
    ) -> None:
        """Store one image's features ``(N, C)`` atomically (write to a temp file, rename)."""
        from safetensors.torch import save_file

        path = self.path(image, spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        features = features.detach().cpu().contiguous()
        meta = {
            "identity": self.identity,
            "kind": spec.kind,
            "layer": spec.layer,
            "image_sha256": self.digest(image),
            "image_file": str(image),
            "grid_hw": list(grid_hw),
            "image_hw": list(image_hw),
            "original_hw": list(original_hw),
            "objdisc_version": self.version,
            "data_sha256": tensor_digest(features),
        }
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file({"features": features}, tmp, metadata={"objdisc": json.dumps(meta)})
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def tensor_digest(tensor: torch.Tensor) -> str:
    """sha256 of a tensor's bytes (any dtype, bfloat16 included), as stored."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return hashlib.sha256(memoryview(data)).hexdigest()


__all__ = ["CacheError", "CachedFeatures", "FeatureCache", "tensor_digest"]
