"""``objdisc registers find``: rank the register neurons of a model, for test-time registers.

The ranking is :func:`objdisc.registers.neuron_search.find_register_neurons`; this module
resolves the model and the dataset, claims ``--out`` (a file ``registers find`` wrote, or a new
one) and writes the ranked list with what produced it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objdisc.datasets import DatasetArgs
from objdisc.engine.out_folder import claim_file
from objdisc.errors import OptionError
from objdisc.models.args import ModelArgs
from objdisc.registers.neuron_search import DEFAULT_TOP, find_register_neurons
from objdisc.utils.device import resolve_device, resolve_precision
from objdisc.utils.jsonio import write_json_atomic
from objdisc.utils.provenance import producer

METHOD = "register neurons (Jiang et al., NeurIPS 2025)"


@dataclass(frozen=True)
class FindConfig:
    """Everything ``objdisc registers find`` takes.

    Attributes:
        model: which model (no test-time registers: they are what is being found).
        data: which images (default kind: ``folder``).
        out: the neurons file to write (JSON).
        limit: the first N images.
        layer: the block whose output decides the outliers.
        threshold: the outlier norm threshold (``None``: the bimodal gap ``objdisc norms`` finds).
        top: ranked neurons to keep.
        max_side: resize larger images first.
        device, precision: where and how the model runs.
        overwrite: replace an earlier ``registers find`` file at ``out``.
    """

    model: ModelArgs
    data: DatasetArgs
    out: Path
    limit: int = 500
    layer: int = -1
    threshold: float | None = None
    top: int = DEFAULT_TOP
    max_side: int | None = None
    device: str = "auto"
    precision: str = "fp32"
    overwrite: bool = False


def is_neurons_file(path: Path) -> bool:
    """Whether ``path`` is a file ``objdisc registers find`` wrote."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("method", "")).startswith("register neurons") and "ranked" in data


def run(config: FindConfig, progress: bool | None = None) -> dict[str, Any]:
    """Rank the register neurons and write them to ``config.out`` (JSON).

    Returns:
        The file's content (:func:`~objdisc.registers.neuron_search.find_register_neurons` plus
        ``producer`` and ``method``).

    Raises:
        ObjdiscError: a bad option, dataset, backbone or weights file; an ``out`` that is a folder,
            a file ``registers find`` did not write, or its own earlier file without ``overwrite``.
    """
    out = Path(config.out)
    if config.threshold is not None and not (config.threshold > 0 and config.threshold < float("inf")):
        raise OptionError(f"--threshold {config.threshold}: a positive finite number or auto")
    claim_file(out, "objdisc registers find", config.overwrite, is_neurons_file)  # before the slow work
    data = config.data.load()
    where = resolve_device(config.device)
    used = resolve_precision(config.precision, where)
    model = config.model.resolve()
    backbone = model.build(where)
    found = find_register_neurons(
        backbone, data.records[: config.limit], where, config.layer, config.threshold, config.top, used,
        config.max_side, progress,
    )  # fmt: skip
    made_by = {**producer(model.spec, model.weights, where, used), "dataset": data.name, "limit": config.limit}
    content = {"producer": made_by, "method": METHOD, **found}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, content)
    except OSError as exc:
        raise OptionError(f"--out {out}: cannot write the file ({exc.strerror or exc})") from exc
    return content


def report(found: dict[str, Any], out: Path) -> str:
    """What ``objdisc registers find`` prints."""
    best = found["ranked"][0]
    return "\n".join(
        [
            f"{found['n_images']} images ({found['n_images_with_outliers']} with outliers), threshold "
            f"{found['threshold']:.2f} ({found['threshold_source']}), {100 * found['share_outlier_tokens']:.2f}% "
            f"of tokens above it after block {found['block']}",
            f"top neuron: block {best['block']} unit {best['neuron']} (score {best['score']:.3g})",
            f"{len(found['ranked'])} ranked neurons in {out}; use: objdisc run --test-time-registers {out}",
        ]
    )


__all__ = ["FindConfig", "is_neurons_file", "report", "run"]
