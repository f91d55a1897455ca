"""objdisc: unsupervised object discovery (LOST, TokenCut) on ViT features, with and without registers.

Public API (imported on first use, so that ``objdisc --help`` does not wait for torch)::

    from objdisc import lost, create_backbone, KeyExtractor, run, RunConfig, CorLoc
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ALIASES": "objdisc.backbones",
    "BACKBONES": "objdisc.backbones",
    "Backbone": "objdisc.backbones",
    "BackboneSpec": "objdisc.backbones",
    "create_backbone": "objdisc.backbones",
    "get_spec": "objdisc.backbones",
    "Dataset": "objdisc.datasets",
    "ImageRecord": "objdisc.datasets",
    "load_dataset": "objdisc.datasets",
    "ObjdiscError": "objdisc.errors",
    "FeatureExtractor": "objdisc.features",
    "FeatureSpec": "objdisc.features",
    "KeyExtractor": "objdisc.features",
    "Lost": "objdisc.methods",
    "TokenCut": "objdisc.methods",
    "LostResult": "objdisc.methods.lost",
    "lost": "objdisc.methods.lost",
    "lost_batch": "objdisc.methods.lost",
    "CorLoc": "objdisc.metrics",
    "CorLocResult": "objdisc.metrics",
    "RunConfig": "objdisc.runner",
    "RunResult": "objdisc.runner",
    "discover": "objdisc.pipeline",
    "run": "objdisc.runner",
    "RegisterNeurons": "objdisc.ttr",
    "TestTimeRegisters": "objdisc.ttr",
    "load_register_neurons": "objdisc.ttr",
    "find_register_neurons": "objdisc.neurons",
}

__all__ = [
    "ALIASES",
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "CorLoc",
    "CorLocResult",
    "Dataset",
    "FeatureExtractor",
    "FeatureSpec",
    "ImageRecord",
    "KeyExtractor",
    "Lost",
    "LostResult",
    "ObjdiscError",
    "RegisterNeurons",
    "RunConfig",
    "RunResult",
    "TestTimeRegisters",
    "TokenCut",
    "__version__",
    "create_backbone",
    "discover",
    "find_register_neurons",
    "get_spec",
    "load_dataset",
    "load_register_neurons",
    "lost",
    "lost_batch",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'objdisc' has no attribute {name!r}")


if TYPE_CHECKING:
    from objdisc.backbones import ALIASES, BACKBONES, Backbone, BackboneSpec, create_backbone, get_spec
    from objdisc.datasets import Dataset, ImageRecord, load_dataset
    from objdisc.errors import ObjdiscError
    from objdisc.features import FeatureExtractor, FeatureSpec, KeyExtractor
    from objdisc.methods import Lost, TokenCut
    from objdisc.methods.lost import LostResult, lost, lost_batch
    from objdisc.metrics import CorLoc, CorLocResult
    from objdisc.neurons import find_register_neurons
    from objdisc.pipeline import discover
    from objdisc.runner import RunConfig, RunResult, run
    from objdisc.ttr import RegisterNeurons, TestTimeRegisters, load_register_neurons
