"""The dense CRF that MaskCut refines its masks with (CutLER's ``maskcut/crf.py`` settings).

A fully connected CRF (Krähenbühl and Koltun, NeurIPS 2011) over the pixels of the image, two
labels (background, foreground):

- unary: the mask (0/1 on the image's pixel grid) as two logits ``(1 - m, m)``, bilinearly
  resized to the image (a no-op when the mask already has its size), softmaxed, ``-log`` of the
  probabilities clipped at 1e-5;
- a Gaussian smoothness kernel, ``sxy = 3``, weight 7;
- a bilateral appearance kernel, ``sxy = 50``, ``srgb = 5``, weight 10;
- 10 mean-field iterations; the label of largest marginal per pixel.

The inference is pydensecrf's (``pip install 'objdisc[crf]'``: the ``pydensecrf2`` package, built
from source, which needs a C++ compiler), so that the result equals maskcut.py's on the same input.
"""

from __future__ import annotations

import numpy as np

MAX_ITER = 10
GAUSSIAN_SXY, GAUSSIAN_WEIGHT = 3, 7
BILATERAL_SXY, BILATERAL_SRGB, BILATERAL_WEIGHT = 50, 5, 10
CLIP = 1e-5
CRF_MISSING = (
    "MaskCut's CRF needs pydensecrf: pip install 'objdisc[crf]' (builds pydensecrf2 from source with a "
    "C++ compiler), or pass --no-crf"
)


class CRFUnavailableError(ImportError):
    """pydensecrf is not installed."""


def dense_crf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Refine a mask with the dense CRF.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(h, w)`` float or bool foreground mask (0/1); resized to ``(H, W)`` bilinearly.

    Returns:
        ``(H, W)`` float32, 1.0 where the foreground label wins.

    Raises:
        CRFUnavailableError: pydensecrf is not installed, naming the extra that installs it.
    """
    import torch
    import torch.nn.functional as F

    try:
        import pydensecrf.densecrf as dcrf
    except ImportError as exc:
        raise CRFUnavailableError(CRF_MISSING) from exc
    height, width = image.shape[:2]
    fg = np.asarray(mask, dtype=np.float64)[None]
    logits = torch.from_numpy(np.concatenate((1.0 - fg, fg), axis=0))
    logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    probs = F.softmax(logits, dim=0).numpy()
    unary = np.ascontiguousarray((-np.log(np.clip(probs, CLIP, 1.0))).reshape(2, -1).astype(np.float32))
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(unary)
    crf.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_WEIGHT)
    rgb = np.array(image, dtype=np.uint8, order="C")  # a writable copy: pydensecrf refuses read-only buffers
    crf.addPairwiseBilateral(sxy=BILATERAL_SXY, srgb=BILATERAL_SRGB, rgbim=rgb, compat=BILATERAL_WEIGHT)
    marginals = np.array(crf.inference(MAX_ITER)).reshape(2, height, width)
    return np.argmax(marginals, axis=0).astype(np.float32)


def crf_available() -> bool:
    """Whether pydensecrf can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["CRF_MISSING", "CRFUnavailableError", "crf_available", "dense_crf"]
