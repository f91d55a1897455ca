"""Which model a command runs: the options ``run``, ``sweep``, ``norms`` and ``registers find`` share.

:class:`ModelArgs` is what the user gave (``--backbone``, ``--weights``, ``--resample-weights``,
``--test-time-registers``, ``--ttr-top``); :meth:`ModelArgs.resolve` turns it, once, into the
spec, the weights file and the register neurons a run records, and :meth:`ResolvedModel.build`
builds the model from them. Nothing here imports torch until a model is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.errors import OptionError
from objdisc.models.specs import BackboneSpec, get_spec

if TYPE_CHECKING:
    import torch

    from objdisc.models.backbones import Backbone
    from objdisc.models.test_time_registers import RegisterNeurons
    from objdisc.models.weights import WeightsInfo

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelArgs:
    """The model options as given.

    Attributes:
        backbone: a name or alias of :data:`objdisc.models.specs.BACKBONES`, or ``timm:NAME``.
        weights: a local weights file or transformers folder; ``None``: timm's weights from the
            Hugging Face hub cache.
        resample_weights: load a file of another patch size or position grid by resampling it.
        test_time_registers: ``builtin`` or a ``registers find`` file; ``None``: none.
        ttr_top: keep the first K neurons of a found list.
        model_kwargs: extra ``timm.create_model`` arguments (``depth=2`` in tests).
    """

    backbone: str
    weights: Path | None = None
    resample_weights: bool = False
    test_time_registers: str | None = None
    ttr_top: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def spec(self) -> BackboneSpec:
        """The backbone's spec (an unknown or unreadable model raises :class:`~objdisc.errors.BackboneError`)."""
        return get_spec(self.backbone)

    def register_neurons(self, spec: BackboneSpec | None = None) -> RegisterNeurons | None:
        """The test-time registers' neurons (``None`` without).

        Raises:
            OptionError: ``--ttr-top`` without ``--test-time-registers``, or a neurons file that
                does not fit the backbone.
        """
        from objdisc.models.test_time_registers import load_register_neurons

        if self.test_time_registers is None:
            if self.ttr_top is not None:
                raise OptionError("--ttr-top needs --test-time-registers")
            return None
        name = (spec or self.spec()).name
        return load_register_neurons(self.test_time_registers, name, self.ttr_top)

    def resolve(self, backbone: Backbone | None = None) -> ResolvedModel:
        """Spec, weights (file, source, sha256) and register neurons, each found once.

        Args:
            backbone: an already built backbone, whose spec, weights and neurons are taken as
                they are (its test-time registers must agree with :attr:`test_time_registers`).

        Raises:
            OptionError: a built backbone whose test-time registers disagree with the options.
            ObjdiscError: an unknown backbone, a weights file not found, a bad neurons file.
        """
        from objdisc.models.backbones import resolve_weights

        if backbone is not None:
            if (self.test_time_registers is None) != (backbone.test_time_registers is None):
                raise OptionError(
                    "the backbone given and the test-time registers asked for disagree: build the backbone with "
                    "create_backbone(..., test_time_registers=ModelArgs(...).register_neurons())"
                )
            return ResolvedModel(self, backbone.spec, backbone.weights, backbone.test_time_registers, backbone)
        spec = self.spec()
        neurons = self.register_neurons(spec)
        return ResolvedModel(self, spec, resolve_weights(spec, self.weights), neurons)


@dataclass
class ResolvedModel:
    """A model's spec, weights and register neurons, resolved once; the model is built on first use.

    Attributes:
        args: the options it was resolved from.
        spec: the backbone's table entry (or a ``timm:`` spec).
        weights: the weights file, its source and sha256.
        neurons: the test-time registers' neurons, or ``None``.
        backbone: the built model, once :meth:`build` ran (or as given).
    """

    args: ModelArgs
    spec: BackboneSpec
    weights: WeightsInfo
    neurons: RegisterNeurons | None
    backbone: Backbone | None = None

    def __post_init__(self) -> None:
        if self.neurons is not None:
            why = self.neurons.other_weights(self.weights.sha256)
            if why is not None:
                logger.warning("%s", why)

    def build(self, device: str | torch.device) -> Backbone:
        """The model on ``device``, built from the resolved weights the first time only."""
        from objdisc.models.backbones import create_backbone

        if self.backbone is None:
            self.backbone = create_backbone(
                self.spec, self.weights, device, self.neurons, self.args.resample_weights, **self.args.model_kwargs
            )
        self.backbone.model.to(device)
        return self.backbone


__all__ = ["ModelArgs", "ResolvedModel"]
