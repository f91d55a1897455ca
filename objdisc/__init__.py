"""objdisc: unsupervised object discovery (LOST, TokenCut, DINO-seg) on ViT features, with and without registers.

Public API (imported on first use, so that ``objdisc --help`` does not wait for torch)::

    from objdisc import lost, create_backbone, KeyExtractor, run, RunConfig, Objects, METHODS
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ALIASES": "objdisc.models.specs",
    "BACKBONES": "objdisc.models.specs",
    "Backbone": "objdisc.models.backbones",
    "BackboneSpec": "objdisc.models.specs",
    "create_backbone": "objdisc.models.backbones",
    "get_spec": "objdisc.models.specs",
    "Dataset": "objdisc.datasets",
    "ImageRecord": "objdisc.datasets",
    "load_dataset": "objdisc.datasets",
    "ObjdiscError": "objdisc.errors",
    "FeatureExtractor": "objdisc.models.features",
    "FeatureSpec": "objdisc.models.features",
    "KeyExtractor": "objdisc.models.features",
    "METHODS": "objdisc.methods",
    "DinoSeg": "objdisc.methods",
    "Lost": "objdisc.methods",
    "TokenCut": "objdisc.methods",
    "make_method": "objdisc.methods",
    "lost": "objdisc.methods.lost",
    "lost_batch": "objdisc.methods.lost",
    "Objects": "objdisc.objects",
    "ObjectsBatch": "objdisc.objects",
    "EVALUATORS": "objdisc.evaluation",
    "CorLoc": "objdisc.evaluation.corloc",
    "CorLocEvaluator": "objdisc.evaluation.corloc",
    "CorLocResult": "objdisc.evaluation.corloc",
    "RunConfig": "objdisc.engine.runner",
    "RunResult": "objdisc.engine.runner",
    "discover": "objdisc.engine.discover",
    "run": "objdisc.engine.runner",
    "RegisterNeurons": "objdisc.models.test_time_registers",
    "TestTimeRegisters": "objdisc.models.test_time_registers",
    "load_register_neurons": "objdisc.models.test_time_registers",
    "find_register_neurons": "objdisc.registers.neuron_search",
}

__all__ = [
    "ALIASES",
    "BACKBONES",
    "EVALUATORS",
    "METHODS",
    "Backbone",
    "BackboneSpec",
    "CorLoc",
    "CorLocEvaluator",
    "CorLocResult",
    "Dataset",
    "DinoSeg",
    "FeatureExtractor",
    "FeatureSpec",
    "ImageRecord",
    "KeyExtractor",
    "Lost",
    "ObjdiscError",
    "Objects",
    "ObjectsBatch",
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
    "make_method",
    "run",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'objdisc' has no attribute {name!r}")


if TYPE_CHECKING:
    from objdisc.datasets import Dataset, ImageRecord, load_dataset
    from objdisc.engine.discover import discover
    from objdisc.engine.runner import RunConfig, RunResult, run
    from objdisc.errors import ObjdiscError
    from objdisc.evaluation import EVALUATORS
    from objdisc.evaluation.corloc import CorLoc, CorLocEvaluator, CorLocResult
    from objdisc.methods import METHODS, DinoSeg, Lost, TokenCut, make_method
    from objdisc.methods.lost import lost, lost_batch
    from objdisc.models.backbones import Backbone, create_backbone
    from objdisc.models.features import FeatureExtractor, FeatureSpec, KeyExtractor
    from objdisc.models.specs import ALIASES, BACKBONES, BackboneSpec, get_spec
    from objdisc.models.test_time_registers import RegisterNeurons, TestTimeRegisters, load_register_neurons
    from objdisc.objects import Objects, ObjectsBatch
    from objdisc.registers.neuron_search import find_register_neurons
