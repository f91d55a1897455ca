"""Which features a method reads: a kind (``k``, ``q``, ``v``, ``attn``, ``kattn``) of one block. No torch here."""

from __future__ import annotations

from dataclasses import dataclass

from objdisc.errors import OptionError

FEATURE_KINDS = ("k", "q", "v", "attn", "kattn")


@dataclass(frozen=True)
class FeatureSpec:
    """Which features: ``kind`` in ``k``, ``q``, ``v`` (heads concatenated), ``attn`` (the CLS
    token's attention per head) or ``kattn`` (the keys, then the CLS attention per head: what
    FOUND reads), of block ``layer`` (Python index, -1 = last)."""

    kind: str = "k"
    layer: int = -1

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise OptionError(f"unknown features {self.kind!r}; use one of {', '.join(FEATURE_KINDS)}")

    def block(self, depth: int) -> int:
        """Absolute block index in a model of ``depth`` blocks.

        Raises:
            OptionError: the layer does not exist in that model.
        """
        if not -depth <= self.layer < depth:
            raise OptionError(f"--layer {self.layer} does not exist in a model of {depth} blocks")
        return self.layer % depth

    @property
    def slug(self) -> str:
        """Short name for folders and tables, e.g. ``k_l-1``."""
        return f"{self.kind}_l{self.layer}"


LAST_KEYS = FeatureSpec("k", -1)
"""LOST's features: the last block's keys."""


__all__ = ["FEATURE_KINDS", "LAST_KEYS", "FeatureSpec"]
