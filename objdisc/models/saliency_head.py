"""FOUND's saliency head: one 1x1 convolution from a ViT's patch keys to a foreground logit.

Two files hold one:

- FOUND's own (``data/weights/decoder_weights.pt``, and the ``decoder_weights_niter*.pt`` its
  training writes): ``{"decoder": {"weight": (1, C, 1, 1), "bias": (1,)}}``, read with torch's
  restricted unpickler (tensors only; a pickle with code in it is refused). It does not say which
  backbone it was trained on: the released file (known by its sha256) is DINO ViT-S/8's; for
  any other only the width can be checked.
- objdisc's (``objdisc train-head``): a ``.safetensors`` file with ``weight`` ``(1, C, 1, 1)``
  and ``bias`` ``(1,)``, and its provenance in the metadata (``objdisc_head``: JSON with the
  backbone, its patch size and width, the weights' sha256, the training settings, versions).
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from objdisc.errors import OptionError

RELEASED = {  # sha256 of FOUND's released data/weights/decoder_weights.pt -> what it was trained on
    "47ff2a4af3dbc6c80cb832cc81f8ed8ae81809e52576d0de5f9c754cf46ef9b5": {"backbone": "dino_vits8", "patch_size": 8},
}
METADATA_KEY = "objdisc_head"


@dataclass(frozen=True)
class SaliencyHead:
    """A loaded head.

    Attributes:
        weight: ``(C,)`` float32, the convolution's weights.
        bias: the convolution's bias.
        path: where it was read.
        sha256: the file's sha256.
        trained_on: what the head was trained on (``backbone``, ``patch_size``, ...), or ``{}``
            when the file does not say (a FOUND ``.pt`` other than the released one).
    """

    weight: np.ndarray
    bias: float
    path: Path
    sha256: str
    trained_on: dict[str, Any] = field(default_factory=dict)

    @property
    def width(self) -> int:
        """``C``: the feature width the head reads."""
        return int(self.weight.shape[0])

    def check_patch_size(self, patch_size: int, backbone: str) -> None:
        """Refuse a backbone of another patch size than the head was trained on.

        Raises:
            OptionError: naming the file, both patch sizes and what to do.
        """
        trained = self.trained_on.get("patch_size")
        if trained is not None and int(trained) != patch_size:
            raise OptionError(
                f"--found-head {self.path}: trained on {self.trained_on.get('backbone', 'a backbone')} with "
                f"{trained}-pixel patches; {backbone} has {patch_size}-pixel patches. Use a backbone of its "
                "patch size, or train a head for this one (objdisc train-head)"
            )

    def check_width(self, width: int, backbone: str) -> None:
        """Refuse features of another width than the head reads.

        Raises:
            OptionError: naming the file and both widths.
        """
        if width != self.width:
            raised_on = self.trained_on.get("backbone")
            on = f" (trained on {raised_on})" if raised_on else ""
            raise OptionError(
                f"--found-head {self.path}: reads {self.width}-channel keys{on}; {backbone}'s keys have {width} "
                "channels. Use the backbone it was trained on, or train a head for this one (objdisc train-head)"
            )


def load_head(path: str | Path) -> SaliencyHead:
    """Read a head from FOUND's ``.pt`` or objdisc's ``.safetensors`` (module docstring).

    Raises:
        OptionError: a missing or unreadable file, a pickle with code in it, tensors of the wrong
            names or shapes, or another extension; naming the file and what to do.
    """
    from objdisc.utils.hashing import sha256_file

    path = Path(path)
    if not path.is_file():
        raise OptionError(
            f"--found-head {path}: file not found; give FOUND's decoder_weights.pt or objdisc train-head's file"
        )
    suffix = path.suffix.lower()
    trained_on: dict[str, Any] = {}
    if suffix == ".safetensors":
        tensors, trained_on = _read_safetensors(path)
    elif suffix in (".pt", ".pth"):
        tensors = _read_torch(path)
    else:
        raise OptionError(
            f"--found-head {path}: unsupported extension {suffix!r}; use FOUND's .pt or a .safetensors head"
        )
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if (
        weight is None
        or bias is None
        or weight.ndim != 4
        or tuple(weight.shape[::2]) != (1, 1)
        or weight.shape[3] != 1
        or tuple(bias.shape) != (1,)
    ):
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise OptionError(
            f"--found-head {path}: not a 1x1 convolution to one channel (weight (1, C, 1, 1) and bias (1,)); "
            f"it holds {shapes}"
        )
    sha = sha256_file(path)
    trained_on = trained_on or RELEASED.get(sha, {})
    return SaliencyHead(
        weight.reshape(-1).astype(np.float32), float(bias.reshape(())), path, sha, dict(trained_on)
    )


def _read_torch(path: Path) -> dict[str, np.ndarray]:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise OptionError(
            f"--found-head {path}: holds pickled Python objects, not tensors; objdisc never unpickles code. Save the "
            "head's state dict ({'decoder': decoder.state_dict()}) instead"
        ) from exc
    except Exception as exc:  # a damaged or foreign file
        raise OptionError(f"--found-head {path}: cannot read it ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("decoder"), dict):
        state = state["decoder"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OptionError(f"--found-head {path}: not FOUND's {{'decoder': {{'weight', 'bias'}}}} of tensors")
    return {k: v.detach().float().numpy() for k, v in state.items()}


def _read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            tensors = {k: f.get_tensor(k).astype(np.float32) for k in f.keys()}
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for a bad file
        raise OptionError(f"--found-head {path}: cannot read it ({type(exc).__name__}: {exc})") from exc
    try:
        provenance = json.loads(metadata.get(METADATA_KEY, "{}"))
    except json.JSONDecodeError:
        provenance = {}
    return tensors, provenance if isinstance(provenance, dict) else {}


def save_head(path: Path, weight: np.ndarray, bias: float, provenance: dict[str, Any]) -> None:
    """Write a head as ``.safetensors`` with its provenance (module docstring), atomically.

    Args:
        weight: ``(C,)`` float32 weights.
        bias: the bias.
        provenance: JSON-able: backbone, patch size, width, weights' sha256, settings, versions.
    """
    import os
    import tempfile

    from safetensors.numpy import save_file

    tensors = {
        "weight": np.ascontiguousarray(weight, dtype=np.float32).reshape(1, -1, 1, 1),
        "bias": np.array([bias], dtype=np.float32),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, temporary, metadata={METADATA_KEY: json.dumps(provenance, sort_keys=True)})
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


__all__ = ["RELEASED", "SaliencyHead", "load_head", "save_head"]
