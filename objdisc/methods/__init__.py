"""Object-discovery methods: patch features of a batch -> one box per image.

Each method is a small frozen dataclass holding its options (their defaults are the one
source of the defaults, read by ``objdisc table`` too) and called as
``method(feats, grid_hw, patch_size, image_hws) -> Boxes``; :data:`METHODS` maps names to
them. Nothing here reads files or imports torch until a method runs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from objdisc.errors import OptionError

if TYPE_CHECKING:  # torch is imported when a method runs, so the option defaults here stay light
    import torch

    from objdisc.methods.components import Boxes


class Method(Protocol):
    """What the engine calls for a batch of features."""

    name: ClassVar[str]

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> Boxes: ...

    def options(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Lost:
    """LOST seed expansion (see :mod:`objdisc.methods.lost`); never syncs with the device."""

    k_patches: int = 100
    gram_bias: float = 0.0
    name: ClassVar[str] = "lost"

    def __post_init__(self) -> None:
        if self.k_patches < 1:
            raise ValueError(f"k_patches must be >= 1, got {self.k_patches}")
        if not math.isfinite(self.gram_bias):
            raise OptionError(f"--gram-bias must be a finite number, got {self.gram_bias}")

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> Boxes:
        from objdisc.methods.lost import lost_device

        return lost_device(feats, grid_hw, patch_size, image_hws, self.k_patches, self.gram_bias)

    def options(self) -> dict[str, Any]:
        """The options that decide the boxes, JSON-able."""
        return {"method": self.name, **asdict(self)}


@dataclass(frozen=True)
class TokenCut:
    """TokenCut normalised cut (see :mod:`objdisc.methods.tokencut`)."""

    tau: float = 0.2
    eps: float = 1e-5
    name: ClassVar[str] = "tokencut"

    def __post_init__(self) -> None:
        if not math.isfinite(self.tau):
            raise OptionError(f"--tau must be a finite number, got {self.tau}")
        if not (math.isfinite(self.eps) and self.eps > 0):
            raise OptionError(f"TokenCut eps must be a finite number > 0, got {self.eps}")

    def __call__(
        self, feats: torch.Tensor, grid_hw: tuple[int, int], patch_size: int, image_hws: torch.Tensor
    ) -> Boxes:
        from objdisc.methods.tokencut import tokencut_device

        return tokencut_device(feats, grid_hw, patch_size, image_hws, self.tau, self.eps)

    def options(self) -> dict[str, Any]:
        """The options that decide the boxes, JSON-able."""
        return {"method": self.name, **asdict(self)}


METHODS: dict[str, type[Lost] | type[TokenCut]] = {"lost": Lost, "tokencut": TokenCut}


def make_method(name: str, k_patches: int = 100, gram_bias: float = 0.0, tau: float = 0.2) -> Lost | TokenCut:
    """Build a method from CLI-style options; options the method does not use must be defaults.

    Raises:
        OptionError: unknown name, or an option the method has no use for (e.g. a Gram bias
            for TokenCut, whose graph is thresholded cosine similarity).
    """
    if name == "lost":
        if tau != 0.2:
            raise OptionError("--tau is a TokenCut option; LOST has no similarity threshold")
        return Lost(k_patches, gram_bias)
    if name == "tokencut":
        if gram_bias:
            raise OptionError("--gram-bias is a LOST option; TokenCut thresholds cosine similarity instead")
        if k_patches != 100:
            raise OptionError("--k-patches is a LOST option; TokenCut has no seed expansion")
        return TokenCut(tau)
    raise OptionError(f"unknown method {name!r}; known: {', '.join(METHODS)}")


__all__ = ["METHODS", "Lost", "Method", "TokenCut", "make_method"]
