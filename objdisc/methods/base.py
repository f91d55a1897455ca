"""What every object-discovery method is: a frozen dataclass of options, called on a batch of features.

A method is one file: a dataclass deriving from :class:`MethodBase` whose fields are declared
with :func:`objdisc.methods.options.option`, plus one entry in :data:`objdisc.methods.METHODS`.
Called as ``method(feats, grid_hw, patch_size, image_hws)`` it returns an
:class:`~objdisc.objects.ObjectsBatch`; the engine, the journal, the exports, the evaluators,
``sweep``, ``table`` and ``visualize`` need nothing else from it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from objdisc.methods.options import check_options, options_of

if TYPE_CHECKING:
    import torch

    from objdisc.objects import Objects, ObjectsBatch


class Method(Protocol):
    """What the engine calls for a batch of features."""

    name: ClassVar[str]
    feature_kinds: ClassVar[tuple[str, ...]]
    map_label: ClassVar[str]

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> ObjectsBatch: ...

    def options(self) -> dict[str, Any]: ...

    def display_map(self, score_map: np.ndarray) -> np.ndarray: ...

    def input_side(self, patch_size: int) -> int | None: ...

    def check_ready(self) -> None: ...

    def finalize(self, objects: Objects, load: Callable[[], np.ndarray], image_hw: tuple[int, int]) -> Objects: ...


class MethodBase:
    """Shared behaviour of the method dataclasses (subclasses are ``@dataclass(frozen=True)``).

    Class attributes a method sets:
        name: registry name (``lost``).
        title: the method and its paper, for ``--help`` and the README.
        feature_kinds: the feature kinds it reads (:data:`objdisc.models.features.FEATURE_KINDS`),
            the first being its default.
        map_label: what :meth:`display_map` shows, for ``objdisc visualize``.
        needs_image: :meth:`finalize` reads the image's pixels (the engine then decodes it
            again for cached features).
    """

    name: ClassVar[str]
    title: ClassVar[str] = ""
    feature_kinds: ClassVar[tuple[str, ...]] = ("k", "q", "v")
    map_label: ClassVar[str] = "score map"
    needs_image: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_options(self)

    def options(self) -> dict[str, Any]:
        """The method's name and every option value, JSON-able (journal settings, ``run.json``)."""
        return {"method": self.name, **{o.name: getattr(self, o.name) for o in options_of(type(self))}}

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


__all__ = ["Method", "MethodBase"]
