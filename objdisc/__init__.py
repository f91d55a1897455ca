"""objdisc: unsupervised object discovery (LOST) on ViT keys, with and without registers.

Public API::

    from objdisc import lost, create_backbone, KeyExtractor, run, RunConfig, CorLoc
"""

from __future__ import annotations

__version__ = "0.1.0"

from objdisc.backbones import ALIASES, BACKBONES, Backbone, BackboneSpec, create_backbone, get_spec
from objdisc.datasets import Dataset, ImageRecord, load_dataset
from objdisc.errors import ObjdiscError
from objdisc.keys import KeyExtractor
from objdisc.lost import LostResult, lost, lost_batch
from objdisc.metrics import CorLoc, CorLocResult
from objdisc.pipeline import RunConfig, RunResult, discover, run

__all__ = [
    "ALIASES",
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "CorLoc",
    "CorLocResult",
    "Dataset",
    "ImageRecord",
    "KeyExtractor",
    "LostResult",
    "ObjdiscError",
    "RunConfig",
    "RunResult",
    "__version__",
    "create_backbone",
    "discover",
    "get_spec",
    "load_dataset",
    "lost",
    "lost_batch",
    "run",
]
