"""Test-time registers (Jiang, Dravid, Efros, Gandelsman, "Vision Transformers Don't Need Trained
Registers", NeurIPS 2025; code: nickjiang2378/test-time-registers).

A sparse set of MLP hidden units ("register neurons") writes the high-norm activations into the
outlier patch tokens of a ViT trained without registers. At test time one extra token, all zeros
and without a position embedding, is appended after the patch tokens; in every block that holds
register neurons, for each image, that token's activation of every selected neuron is set to the
single value of largest magnitude (sign kept) among all tokens' activations of the block's
selected neurons, and the patch tokens' activations of those neurons are set to zero (CLS and
trained registers untouched). The outliers move into the extra token, as into a trained register.

The hidden units are read where the MLP's second projection (``fc2``) reads them: for timm's
``Mlp`` that is exactly the output of ``mlp.act`` (its dropout is the identity in eval and its
``norm`` the identity, checked), for the gated MLP of ViT-g it is the gated product (what the
release code's ``hidden_identity`` reads). A model with a normalisation inside its MLP is refused.

:class:`TestTimeRegisters` installs this on one model instance: the extra token comes from a
wrapper of the instance's ``_pos_embed``, the intervention from one forward pre-hook on each
selected block's ``mlp.fc2``, registered once. :func:`extra_tokens` tells feature readers how
many tokens to drop from the end, as they drop the prefix tokens from the start.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from objdisc.errors import OptionError

if TYPE_CHECKING:  # the neuron lists are read by `objdisc table`, which never needs torch
    import torch

# The published register neurons of DINOv2 ViT-L/14 (block: hidden units), from the paper's
# code (dinov2/hub/register_neurons.py). The list is not ranked: --ttr-top cannot cut it.
PUBLISHED: dict[str, dict[int, tuple[int, ...]]] = {
    "dinov2_vitl14": {
        12: (3168,),
        13: (2400,),
        14: (2110, 1510, 1082, 2711, 2464, 147, 543, 581),
        15: (1714, 3507, 2492, 2680, 131, 720, 3499, 3062, 2625),
        16: (2301, 3576, 1940, 3463, 1244, 407, 3152, 2517, 3465),
        17: (884, 133, 1427, 3464, 2373, 2436, 841, 3574, 2129, 3355, 4047, 3341, 1330, 4031, 844, 944, 464),
    }
}

BUILTIN = "builtin"


@dataclass(frozen=True)
class RegisterNeurons:
    """The register neurons test-time registers act on.

    Attributes:
        neurons: ``(block, hidden unit)`` pairs, ranked (a found list) or in published order.
        source: ``builtin:<backbone>`` or the path of a ``registers find`` file.
        ranked: whether the order is a ranking (``--ttr-top`` keeps the first K).
        found_on: sha256 of the weights a ``registers find`` file was made with (``None``: the
            published list, or a file that does not say); not part of the identity.
    """

    neurons: tuple[tuple[int, int], ...]
    source: str
    ranked: bool = True
    found_on: str | None = field(default=None, compare=False)

    def other_weights(self, sha256: str) -> str | None:
        """Why using these neurons on the weights of ``sha256`` deserves a warning, or ``None``."""
        if self.found_on is None or self.found_on == sha256:
            return None
        return (
            f"--test-time-registers {self.source}: these register neurons were found on other weights "
            f"(sha256 {self.found_on[:12]}…) than the run's (sha256 {sha256[:12]}…); register neurons are a "
            "property of the trained weights: find them on these (`objdisc registers find`) unless the two are meant "
            "to share them"
        )

    def by_block(self) -> dict[int, list[int]]:
        """Block index -> its hidden units, blocks ascending, units in list order."""
        out: dict[int, list[int]] = {}
        for block, unit in self.neurons:
            out.setdefault(block, []).append(unit)
        return dict(sorted(out.items()))

    @property
    def sha256(self) -> str:
        """Digest of the neuron set (order-free): what decides the features."""
        canonical = json.dumps(sorted([b, u] for b, u in self.neurons))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def identity(self) -> dict[str, Any]:
        """What journals, caches and tables compare: the neuron count and digest."""
        return {"n_neurons": len(self.neurons), "neurons_sha256": self.sha256}

    def describe(self) -> dict[str, Any]:
        """The ``run.json`` record: source, count, digest and the neurons by block."""
        blocks = {str(b): units for b, units in self.by_block().items()}
        return {"source": self.source, **self.identity(), "neurons": blocks}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RegisterNeurons:
        """Back from :meth:`describe` (a run's ``run.json``): same set, same digest."""
        pairs = tuple((int(b), int(u)) for b, units in record["neurons"].items() for u in units)
        neurons = cls(pairs, str(record["source"]), ranked=False)
        if neurons.sha256 != record["neurons_sha256"]:
            raise OptionError("the recorded register neurons do not match their recorded sha256")
        return neurons

    @property
    def label(self) -> str:
        """Short name for table rows: ``builtin`` or ``<n> neurons <sha prefix>``."""
        if self.source.startswith(f"{BUILTIN}:"):
            return BUILTIN
        return f"{len(self.neurons)}n {self.sha256[:6]}"


def _pairs(raw: Iterable[Any], where: str) -> tuple[tuple[int, int], ...]:
    out = []
    for item in raw:
        try:
            block, unit = (item["block"], item["neuron"]) if isinstance(item, Mapping) else item
            pair = (int(block), int(unit))
        except (KeyError, TypeError, ValueError):
            raise OptionError(f"{where}: {item!r} is not a (block, neuron) pair") from None
        if min(pair) < 0 or pair != (block, unit):
            raise OptionError(f"{where}: {item!r} is not a pair of non-negative integers")
        out.append(pair)
    if len(set(out)) != len(out):
        raise OptionError(f"{where}: a (block, neuron) pair is listed twice")
    return tuple(out)


def load_register_neurons(value: str, backbone: str, top: int | None = None) -> RegisterNeurons:
    """The neurons ``--test-time-registers VALUE`` names, for backbone ``backbone`` (its table name).

    Args:
        value: ``builtin`` (the published list, where one exists) or the path of a file written
            by ``objdisc registers find`` (its ``ranked`` list), or any JSON file holding a
            ``ranked`` / ``neurons`` list of ``{"block", "neuron"}`` objects or ``[block, neuron]``
            pairs.
        backbone: the backbone's table name; a found file made for another model is refused.
        top: keep the first ``top`` of a ranked list (``--ttr-top``); ``None`` keeps all.

    Raises:
        OptionError: no published list for this backbone, an unreadable or foreign file, an
            empty result, or ``top`` on an unranked list.
    """
    if top is not None and top < 1:
        raise OptionError(f"--ttr-top {top}: must be at least 1")
    if value == BUILTIN:
        if backbone not in PUBLISHED:
            raise OptionError(
                f"--test-time-registers builtin: no published register neurons for {backbone} "
                f"(published: {', '.join(PUBLISHED)}); find them with `objdisc registers find -b {backbone} ...` "
                "and pass the file"
            )
        if top is not None:
            raise OptionError("--ttr-top: the published list is not ranked; pass a `registers find` file to cut it")
        pairs = tuple((b, u) for b, units in PUBLISHED[backbone].items() for u in units)
        return RegisterNeurons(pairs, f"{BUILTIN}:{backbone}", ranked=False)
    path = Path(value).expanduser()
    where = f"--test-time-registers {path}"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise OptionError(f"{where}: file not found (give `builtin` or a `registers find` file)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OptionError(f"{where}: not a JSON file ({exc})") from None
    found_on = None
    if isinstance(data, Mapping):
        made_by = data.get("producer") or {}
        made_for = made_by.get("backbone")
        if made_for is not None and made_for != backbone:
            raise OptionError(f"{where}: register neurons of {made_for}, not of {backbone}")
        found_on = (made_by.get("weights") or {}).get("sha256")
        raw = data.get("ranked", data.get("neurons"))
    else:
        raw = data
    if not isinstance(raw, list):
        raise OptionError(f"{where}: no 'ranked' list of register neurons")
    pairs = _pairs(raw, where)[:top]
    if not pairs:
        raise OptionError(f"{where}: the list of register neurons is empty")
    return RegisterNeurons(pairs, str(path), found_on=found_on if isinstance(found_on, str) else None)


def extra_tokens(model: torch.nn.Module) -> int:
    """Tokens appended after the patch tokens of ``model`` (1 with test-time registers, else 0)."""
    ttr = getattr(model, "objdisc_ttr", None)
    return 1 if ttr is not None and ttr.enabled else 0


def sign_max(values: torch.Tensor) -> torch.Tensor:
    """Per image, the entry of largest magnitude, sign kept (a tie goes to the negative one).

    Args:
        values: ``(B, ...)``.

    Returns:
        ``(B,)``.
    """
    import torch

    flat = values.reshape(values.shape[0], -1)
    high, low = flat.amax(dim=1), flat.amin(dim=1)
    return torch.where(high.abs() > low.abs(), high, low)


class TestTimeRegisters:
    """One extra token and the register-neuron intervention, installed on a timm ViT instance.

    Args:
        model: a timm ``VisionTransformer`` (learned absolute position embedding, no RoPE).
        neurons: the register neurons.

    ``enabled`` switches both the token and the intervention off and on (``objdisc norms``
    compares the two); :meth:`close` (or leaving a ``with`` block) removes them.

    Raises:
        OptionError: the model cannot take test-time registers, or a neuron does not exist in it.
    """

    __test__ = False  # not a pytest class

    def __init__(self, model: torch.nn.Module, neurons: RegisterNeurons) -> None:
        import torch
        from timm.models.vision_transformer import VisionTransformer

        if getattr(model, "objdisc_ttr", None) is not None:
            raise OptionError("this model already has test-time registers")
        if not isinstance(model, VisionTransformer):  # EVA: RoPE would rotate the extra token as a patch
            raise OptionError(
                f"{type(model).__name__}: test-time registers need a timm VisionTransformer (learned absolute "
                "position embeddings); in RoPE models (DINOv3, EVA) the rotary table would treat the extra token "
                "as a patch"
            )
        blocks = model.blocks
        for block, units in neurons.by_block().items():
            if block >= len(blocks):
                raise OptionError(f"register neuron block {block} does not exist in a model of {len(blocks)} blocks")
            mlp = blocks[block].mlp
            fc2 = getattr(mlp, "fc2", None)
            if not isinstance(fc2, torch.nn.Linear) or not isinstance(
                getattr(mlp, "norm", torch.nn.Identity()), torch.nn.Identity
            ):
                raise OptionError(f"block {block}: {type(mlp).__name__} is not an MLP whose hidden units fc2 reads")
            if max(units) >= fc2.in_features:
                raise OptionError(
                    f"register neuron {max(units)} of block {block} does not exist (the MLP has {fc2.in_features})"
                )
        self.model = model
        self.neurons = neurons
        self.enabled = True
        self._pos_embed = model._pos_embed
        # an objdisc.models.position_embeddings recipe, or timm's method
        self._own_pos_embed = "_pos_embed" in vars(model)
        model._pos_embed = self._append_token
        self._handles = [
            blocks[block].mlp.fc2.register_forward_pre_hook(self._make_hook(units, blocks[block].mlp.fc2.weight.device))
            for block, units in neurons.by_block().items()
        ]
        model.objdisc_ttr = self

    def _append_token(self, x: torch.Tensor) -> Any:
        import torch

        tokens = self._pos_embed(x)
        if not self.enabled:
            return tokens
        zero = tokens.new_zeros(tokens.shape[0], 1, tokens.shape[2])
        return torch.cat([tokens, zero], dim=1)

    def _make_hook(self, units: Sequence[int], device: torch.device) -> Any:
        import torch

        # Made here, on the model's device: a host list copied in the forward pass would be a
        # pageable host-to-device copy, which waits for the GPU queue.
        index = {device: torch.tensor(units, device=device)}

        def hook(fc2: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if not self.enabled:
                return None
            hidden = args[0]  # (B, T, H): prefix tokens, patches, then the extra token
            if hidden.device not in index:  # the model moved since
                index[hidden.device] = torch.tensor(units, device=hidden.device)
            cols = index[hidden.device]
            value = sign_max(hidden[:, :, cols])  # (B,): over every token and selected unit
            first = int(self.model.num_prefix_tokens)
            hidden[:, first:-1, cols] = 0  # in place: fc2 reads this very tensor
            hidden[:, -1, cols] = value[:, None].to(hidden.dtype)
            return None

        return hook

    def __enter__(self) -> TestTimeRegisters:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the extra token and the hooks from the model."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        if self._own_pos_embed:
            self.model._pos_embed = self._pos_embed
        else:
            del self.model._pos_embed
        self.model.objdisc_ttr = None


__all__ = [
    "BUILTIN",
    "PUBLISHED",
    "RegisterNeurons",
    "TestTimeRegisters",
    "extra_tokens",
    "load_register_neurons",
    "sign_max",
]
