"""objdisc: unsupervised object discovery on ViT features, with and without registers.

Public API (imported on first use, so that ``objdisc --help`` does not wait for torch)::

    from objdisc import run, RunConfig, ModelArgs, DatasetArgs, create_backbone, Objects, METHODS

The package by floor, each importing only from the floors below it (a test walks the imports):
``errors``, ``utils``, ``version`` < ``geometry``, ``objects``, ``images``, ``interop`` < ``models`` <
``refinement`` < ``methods`` < ``datasets`` < ``evaluation`` < ``registers`` < ``engine`` <
``reports`` < ``commands`` (one module per subcommand) < ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from objdisc.version import __version__

# name -> the module that defines it
_EXPORTS = {
    "ALIASES": "objdisc.models.specs",
    "BACKBONES": "objdisc.models.specs",
    "BackboneSpec": "objdisc.models.specs",
    "get_spec": "objdisc.models.specs",
    "Backbone": "objdisc.models.backbones",
    "create_backbone": "objdisc.models.backbones",
    "ModelArgs": "objdisc.models.args",
    "FeatureExtractor": "objdisc.models.features",
    "FeatureSpec": "objdisc.models.features",
    "KeyExtractor": "objdisc.models.features",
    "RegisterNeurons": "objdisc.models.test_time_registers",
    "TestTimeRegisters": "objdisc.models.test_time_registers",
    "load_register_neurons": "objdisc.models.test_time_registers",
    "Dataset": "objdisc.datasets",
    "DatasetArgs": "objdisc.datasets",
    "ImageRecord": "objdisc.datasets",
    "load_dataset": "objdisc.datasets",
    "ObjdiscError": "objdisc.errors",
    "METHODS": "objdisc.methods",
    "Method": "objdisc.methods",
    "DinoSeg": "objdisc.methods",
    "Lost": "objdisc.methods",
    "MaskCut": "objdisc.methods",
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
    "discover": "objdisc.engine.discover",
    "RunResult": "objdisc.engine.runner",
    "RunConfig": "objdisc.commands.run",
    "run": "objdisc.commands.run",
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
    "DatasetArgs",
    "DinoSeg",
    "FeatureExtractor",
    "FeatureSpec",
    "ImageRecord",
    "KeyExtractor",
    "Lost",
    "MaskCut",
    "Method",
    "ModelArgs",
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
]  # test_cli checks: _EXPORTS and __version__


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'objdisc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:
    from objdisc.commands.run import RunConfig, run
    from objdisc.datasets import Dataset, DatasetArgs, ImageRecord, load_dataset
    from objdisc.engine.discover import discover
    from objdisc.engine.runner import RunResult
    from objdisc.errors import ObjdiscError
    from objdisc.evaluation import EVALUATORS
    from objdisc.evaluation.corloc import CorLoc, CorLocEvaluator, CorLocResult
    from objdisc.methods import METHODS, DinoSeg, Lost, MaskCut, Method, TokenCut, make_method
    from objdisc.methods.lost import lost, lost_batch
    from objdisc.models.args import ModelArgs
    from objdisc.models.backbones import Backbone, create_backbone
    from objdisc.models.features import FeatureExtractor, FeatureSpec, KeyExtractor
    from objdisc.models.specs import ALIASES, BACKBONES, BackboneSpec, get_spec
    from objdisc.models.test_time_registers import RegisterNeurons, TestTimeRegisters, load_register_neurons
    from objdisc.objects import Objects, ObjectsBatch
    from objdisc.registers.neuron_search import find_register_neurons
