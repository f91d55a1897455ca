"""``objdisc sweep``: a grid of methods, features, layers and method options; one forward pass.

The first point's run extracts every ``(features, layer)`` of the grid from the same forward
pass and stores them in the feature cache; every later point reads the cache and never builds
the model. Each point is an ordinary ``objdisc run`` folder (resumable, with its own run.json
and metrics.json), so ``objdisc table`` reads them like any other run; the sweep writes
``summary.json``, ``summary.csv`` and ``summary.md`` (every metric of every point, read from
the points' ``metrics.json``).

The grid, per method: the feature kinds asked that the method reads (its own default kind when
none was asked), times the layers, times every value list of the method's own options (an
option given for a method that does not have it is left out for that method; an option no
asked method has is an error). Every point is checked before the first one runs.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objdisc.commands.run import RunConfig
from objdisc.commands.run import run as run_point
from objdisc.errors import ObjdiscError, OptionError
from objdisc.methods import check_method_options, method_class, owners
from objdisc.methods.options import options_of
from objdisc.models.feature_spec import FeatureSpec
from objdisc.utils.jsonio import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepPoint:
    """One grid point: method, features, layer, and the method options swept (name, value) pairs."""

    method: str
    features: str
    layer: int
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def slug(self) -> str:
        """Folder name, e.g. ``lost_k_l-1_gb0.1`` or ``tokencut_v_l-2_tau0.3``."""
        shorts = {o.name: o.short or o.name for o in options_of(method_class(self.method))}
        parts = [f"{self.method}_{self.features}_l{self.layer}"]
        parts += [f"{shorts[name]}{_text(value)}" for name, value in self.options]
        return "_".join(parts)


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def grid(
    methods: list[str],
    features: list[str] | None,
    layers: list[int],
    option_values: dict[str, list[Any]] | None = None,
) -> list[SweepPoint]:
    """Every point of the grid (module docstring), each checked.

    Args:
        methods: method names.
        features: feature kinds, or ``None`` / empty: each method's own default kind.
        layers: block indices.
        option_values: method option name -> values to sweep.

    Raises:
        OptionError: an empty axis, an unknown method, a feature kind no asked method reads,
            an option no asked method has, or a value an option refuses.
    """
    option_values = option_values or {}
    if not methods:
        raise OptionError("--method: no method given (the grid would be empty)")
    if not layers:
        raise OptionError("--layer: no layer given (the grid would be empty)")
    if features is not None and not features:
        raise OptionError("--features: no feature kind given (the grid would be empty)")
    for kind in features or []:
        FeatureSpec(kind)  # an unknown kind, before anything else
    for name, values in option_values.items():
        if not values:
            raise OptionError(f"--{name.replace('_', '-')}: no value given (the grid would be empty)")
        if not any(name in {o.name for o in options_of(method_class(m))} for m in methods):
            having = owners(name)
            raise OptionError(
                f"--{name.replace('_', '-')} is an option of {', '.join(having) or 'no method'}, "
                f"none of which is swept ({', '.join(methods)})"
            )
    points: list[SweepPoint] = []
    for method in methods:
        kinds = method_class(method).feature_kinds
        wanted = [k for k in features if k in kinds] if features else [kinds[0]]
        if features and not wanted:
            raise OptionError(f"--features {','.join(features)}: {method} reads {' or '.join(kinds)}")
        own = {o.name for o in options_of(method_class(method))}
        axes = [(name, values) for name, values in option_values.items() if name in own]
        for kind, layer in itertools.product(wanted, layers):
            FeatureSpec(kind, layer)  # checks the kind now, not after an hour of sweeping
            for combo in itertools.product(*(values for _, values in axes)):
                options = tuple((name, value) for (name, _), value in zip(axes, combo, strict=True))
                check_method_options(method, **dict(options))  # every value, before the first run
                points.append(SweepPoint(method, kind, layer, options))
    return list(dict.fromkeys(points))


def sweep(base: RunConfig, points: list[SweepPoint], out: Path, progress: bool | None = None) -> list[dict[str, Any]]:
    """Run every point into ``out/<slug>/``, filling and reusing ``base.cache``; write the summary.

    Args:
        base: a :class:`~objdisc.commands.run.RunConfig` whose ``out``, ``method``,
            ``features``, ``layer`` and ``method_options`` are replaced per point and whose
            ``cache`` must be set (``objdisc sweep`` defaults it to ``out/cache``).
        points: the grid (see :func:`grid`).
        out: the sweep folder.

    Returns:
        One summary row per point (also in ``out/summary.json``, ``summary.csv``, ``summary.md``).

    Raises:
        OptionError: a layer of the grid that the model does not have (checked before any run).
    """
    from objdisc.models.backbones import model_depth

    if base.cache is None:
        raise ValueError("a sweep needs a feature cache")
    if not points:
        raise OptionError("the sweep grid is empty")
    depth = model_depth(base.model.spec(), **base.model.model_kwargs)
    for point in points:  # every layer of the grid exists, before the first point writes anything
        FeatureSpec(point.features, point.layer).block(depth)
    specs = list(dict.fromkeys(FeatureSpec(p.features, p.layer) for p in points))
    rows = []
    for n, point in enumerate(points):
        config = dataclasses.replace(
            base,
            out=out / point.slug,
            method=point.method,
            features=point.features,
            layer=point.layer,
            method_options=dict(point.options),
        )
        logger.info("sweep point %d/%d: %s", n + 1, len(points), point.slug)
        result = run_point(config, progress=progress, cache_features=specs, label=f"{n + 1}/{len(points)} {point.slug}")
        m = result.metrics
        row = {
            "run": point.slug,
            "method": point.method,
            "features": point.features,
            "layer": point.layer,
            **dict(point.options),
            "n_images": m.get("n_images"),
            "n_objects": m.get("n_objects"),
            "n_skipped": m.get("n_skipped"),
            "seconds": m.get("seconds"),
        }
        for block in (m.get("metrics") or {}).values():
            row.update(block.get("values") or {})
        rows.append(row)
    if rows and rows[0]["n_images"] is not None:  # rank 0 writes the summary
        write_summary(out, rows, [out / point.slug for point in points])
    return rows


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``objdisc sweep`` takes.

    Attributes:
        base: the options every point shares (its ``cache`` defaults to ``OUT/cache``).
        out: the sweep folder: one run folder per point, and the summary.
        methods: the methods swept.
        features: the feature kinds (``None``: each method's own).
        layers: the blocks.
        options: method option name -> the values swept.
    """

    base: RunConfig
    out: Path
    methods: list[str]
    features: list[str] | None = None
    layers: list[int] = field(default_factory=lambda: [-1])
    options: dict[str, list[Any]] = field(default_factory=dict)


def run(config: SweepConfig, progress: bool | None = None) -> list[dict[str, Any]]:
    """The grid, checked, then every point (:func:`sweep`); the summary rows (empty on ranks other than 0)."""
    points = grid(config.methods, config.features, config.layers, config.options)
    base = config.base
    if base.cache is None:
        base = dataclasses.replace(base, cache=config.out / "cache")
    return sweep(base, points, config.out, progress)


def report(config: SweepConfig, rows: list[dict[str, Any]]) -> str:
    """What ``objdisc sweep`` prints: the summary table and where the files are."""
    files = "summary.md, summary.csv, summary.json"
    return (config.out / "summary.md").read_text() + f"\n{len(rows)} runs in {config.out}/ ({files})"


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """``summary.csv``: a header of every key in first-seen order, one row per point, quoted where
    needed (csv module); numbers as Python writes them (ints stay ints), booleans ``True`` /
    ``False``, missing values empty, so that ``pandas.read_csv`` gives typed columns (``int64``,
    ``float64``, ``bool``; a column missing for some points, a method option other methods lack,
    becomes ``float64`` with NaN, or ``object``)."""
    import csv
    import io

    header = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if row.get(k) is None else row[k] for k in header])
    return buffer.getvalue()


def write_summary(out: Path, rows: list[dict[str, Any]], folders: list[Path]) -> None:
    """``summary.json`` and ``summary.csv`` (one row per point), ``summary.md`` (the table of the points)."""
    from objdisc.reports.table import table

    write_json_atomic(out / "summary.json", {"points": rows})
    write_text_atomic(out / "summary.csv", summary_csv(rows))
    try:
        text, _ = table(folders, "md")
    except ObjdiscError as exc:  # nothing to tabulate (a dataset without ground truth)
        text = f"no table: {exc}\n"
    write_text_atomic(out / "summary.md", text)


__all__ = ["SweepConfig", "SweepPoint", "grid", "report", "run", "summary_csv", "sweep", "write_summary"]
