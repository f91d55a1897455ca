"""What every object-discovery method is: a frozen dataclass of options, called on a batch of features.

A method is one file: a dataclass deriving from :class:`Method` whose fields are declared
with :func:`objdisc.methods.options.option`, plus one entry in :data:`objdisc.methods.METHODS`.
Called as ``method(feats, grid_hw, patch_size, image_hws)`` it returns an
:class:`~objdisc.objects.ObjectsBatch`; the engine, the journal, the exports, the evaluators,
``sweep``, ``table`` and ``visualize`` need nothing else from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from objdisc.methods.options import check_options, options_of

if TYPE_CHECKING:
    import torch

    from objdisc.objects import Objects, ObjectsBatch


class Method:
    """What every method is: a frozen dataclass of options, called on a batch of features
    (subclasses are ``@dataclass(frozen=True)`` and define ``__call__``).

    Class attributes a method sets:
        name: registry name (``lost``).
        title: the method and its paper, for ``--help`` and the README.
        feature_kinds: the feature kinds it reads (:data:`objdisc.models.features.FEATURE_KINDS`),
            the first being its default.
        map_label: what :meth:`display_map` shows, for ``objdisc visualize``.
        needs_image: :meth:`finalize` reads the image's pixels (the engine then decodes it
            again for cached features).
        pads: its release evaluates saliency on images zero-padded to a patch multiple, not
            resized to one (FOUND): no ``--patch-resize`` by default on the saliency sets.
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    feature_kinds: ClassVar[tuple[str, ...]] = ("k", "q", "v")
    map_label: ClassVar[str] = "score map"
    needs_image: ClassVar[bool] = False
    pads: ClassVar[bool] = False

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch:
        """The objects of a batch sharing one patch grid.

        Args:
            feats: ``(B, N, C)`` patch features of the kind the method reads, row-major over ``grid_hw``.
            grid_hw: ``(h, w)`` patch grid of the padded model input.
            patch_size: patch side in pixels.
            image_hws: ``(B, 2)`` int64 unpadded model-input sizes ``(H, W)`` in pixels.

        Returns:
            :class:`~objdisc.objects.ObjectsBatch` on the features' device (or the host), boxes in
            model-input pixels.
        """
        raise NotImplementedError

    def __post_init__(self) -> None:
        check_options(self)

    def options(self, deciding_only: bool = False) -> dict[str, Any]:
        """The method's name and every option value, JSON-able (``run.json``); with
        ``deciding_only`` those that decide the objects (the journal's settings)."""
        chosen = [o for o in options_of(type(self)) if o.decides or not deciding_only]
        return {"method": self.name, **{o.name: getattr(self, o.name) for o in chosen}}

    @staticmethod
    def legacy_settings(settings: dict[str, Any]) -> dict[str, Any] | None:
        """The settings objdisc 0.1 journaled for the run whose settings are ``settings`` (so that
        its journals still resume), or ``None``: no 0.1 journal can hold this method's objects."""
        return None

    def display_map(self, score_map: np.ndarray) -> np.ndarray:
        """The per-patch map as ``objdisc visualize`` draws it (brighter = more object)."""
        return score_map

    def input_side(self, patch_size: int) -> int | None:
        """A square side in pixels every image is resized to before the model, or ``None`` (the
        engine's own sizing: native, or ``--max-side``)."""
        return None

    def check_ready(self) -> None:
        """Refuse, before any model is built, a run this machine cannot finish (a missing optional
        dependency); by default every method is ready.

        Raises:
            OptionError: naming what to install, or the option that avoids it.
        """

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects:
        """The objects of one image in its original pixels.

        Args:
            objects: what the call found, boxes in model-input pixels.
            load: decodes the original image (``(H, W, 3)`` uint8 RGB), for methods that refine
                at pixel level (:attr:`needs_image`).
            image_hw: ``(H, W)`` of the original image.

        Returns:
            By default the boxes mapped to the original size (``--max-side``); the masks stay on
            the grid, their geometry says how they map.
        """
        return objects.at_image_size(image_hw)

    def saliency_map(self, objects: Objects, image_hw: tuple[int, int]) -> np.ndarray | None:
        """The soft saliency map the method's release scores (FOUND's "multi" mode: the head's
        sigmoid map), ``(H, W)`` float in ``[0, 1]`` at the original size; ``None`` by default: the
        union of the objects' pixel masks is scored.

        Args:
            objects: the image's objects after :meth:`finalize`.
            image_hw: ``(H, W)`` of the original image.
        """
        return None


def objdisc_0_1_settings(settings: dict[str, Any]) -> dict[str, Any] | None:
    """What objdisc 0.1 journaled for a LOST or TokenCut run on keys, queries or values: no
    ``format``, and LOST's ``k_patches`` at the top level (100 unless given)."""
    if settings["features"] not in ("k", "q", "v"):
        return None
    old = {k: v for k, v in settings.items() if k != "format"}
    old["k_patches"] = settings.get("k_patches", 100)
    return old


__all__ = ["Method", "objdisc_0_1_settings"]
