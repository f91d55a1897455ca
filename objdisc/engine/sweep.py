"""``objdisc sweep``: a grid of feature / method options, one run folder per point, one forward pass.

The first point's run extracts every ``(features, layer)`` of the grid from the same forward
pass and stores them in the feature cache; every later point reads the cache and never builds
the model. Each point is an ordinary ``objdisc run`` folder (resumable, with its own run.json
and metrics.json), so ``objdisc table`` reads them like any other run.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.methods import make_method
from objdisc.models.features import FeatureSpec
from objdisc.utils.jsonio import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: method, features, layer, Gram bias (LOST only)."""

    method: str
    features: str
    layer: int
    gram_bias: float

    @property
    def slug(self) -> str:
        """Folder name, e.g. ``lost_k_l-1_gb0`` or ``tokencut_v_l-2``."""
        base = f"{self.method}_{self.features}_l{self.layer}"
        return f"{base}_gb{self.gram_bias:g}" if self.method == "lost" else base


def grid(methods: list[str], features: list[str], layers: list[int], gram_biases: list[float]) -> list[SweepPoint]:
    """Every point of the grid; TokenCut takes no Gram bias, so it gets one point per feature/layer."""
    points: list[SweepPoint] = []
    for method, kind, layer in itertools.product(methods, features, layers):
        FeatureSpec(kind, layer)  # checks the kind now, not after an hour of sweeping
        biases = gram_biases if method == "lost" else [0.0]
        for bias in biases:
            make_method(method, gram_bias=bias)  # checks the method and its options
            points.append(SweepPoint(method, kind, layer, bias))
    return list(dict.fromkeys(points))


def sweep(base: Any, points: list[SweepPoint], out: Path, progress: bool | None = None) -> list[dict[str, Any]]:
    """Run every point into ``out/<slug>/``, filling and reusing ``base.cache``.

    Args:
        base: a :class:`~objdisc.engine.runner.RunConfig` whose ``out`` is ignored and whose
            ``cache`` must be set (``objdisc sweep`` defaults it to ``out/cache``).
        points: the grid (see :func:`grid`).
        out: the sweep folder.

    Returns:
        One summary row per point (also written to ``out/summary.json`` and ``summary.csv``).
    """
    from objdisc.engine.runner import run

    if base.cache is None:
        raise ValueError("a sweep needs a feature cache")
    specs = list(dict.fromkeys(FeatureSpec(p.features, p.layer) for p in points))
    rows = []
    for n, point in enumerate(points):
        config = dataclasses.replace(
            base,
            out=out / point.slug,
            method=point.method,
            features=point.features,
            layer=point.layer,
            gram_bias=point.gram_bias,
            # each method keeps only its own options: --tau is TokenCut's, --k-patches LOST's
            tau=base.tau if point.method == "tokencut" else 0.2,
            k_patches=base.k_patches if point.method == "lost" else 100,
        )
        logger.info("sweep point %d/%d: %s", n + 1, len(points), point.slug)
        result = run(config, progress=progress, cache_features=specs, label=f"{n + 1}/{len(points)} {point.slug}")
        m = result.metrics
        rows.append(
            {
                **dataclasses.asdict(point),
                "run": point.slug,
                "corloc": m.get("corloc"),
                "n_images": m.get("n_images"),
                "n_hits": m.get("n_hits"),
                "n_skipped": m.get("n_skipped"),
                "seconds": m.get("seconds"),
            }
        )
    if rows and rows[0]["n_images"] is not None:  # rank 0 writes the summary
        write_json_atomic(out / "summary.json", {"points": rows})
        header = list(rows[0])
        lines = [",".join(header)] + [",".join("" if r[k] is None else str(r[k]) for k in header) for r in rows]
        write_text_atomic(out / "summary.csv", "\n".join(lines) + "\n")
    return rows


__all__ = ["SweepPoint", "grid", "sweep"]
