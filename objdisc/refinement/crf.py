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

The pairwise kernels depend on the image only: :class:`ImageCRF` builds them once per image (the
bilateral kernel's permutohedral lattice is 40 % of one refinement's cost) and refines each of the
image's masks with its own unary, exactly as a CRF built anew for each mask (maskcut.py's
``densecrf``) does: pydensecrf's inference starts from the unary it is given, whatever ran before.
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


class ImageCRF:
    """The dense CRF of one image: the pairwise kernels built once, then :meth:`refine` per mask.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.

    Raises:
        CRFUnavailableError: pydensecrf is not installed, naming the extra that installs it.
    """

    def __init__(self, image: np.ndarray) -> None:
        try:
            import pydensecrf.densecrf as dcrf
        except ImportError as exc:
            raise CRFUnavailableError(CRF_MISSING) from exc
        self.height, self.width = image.shape[:2]
        self._crf = dcrf.DenseCRF2D(self.width, self.height, 2)
        self._crf.addPairwiseGaussian(sxy=GAUSSIAN_SXY, compat=GAUSSIAN_WEIGHT)
        rgb = np.array(image, dtype=np.uint8, order="C")  # a writable copy: pydensecrf refuses read-only buffers
        self._crf.addPairwiseBilateral(sxy=BILATERAL_SXY, srgb=BILATERAL_SRGB, rgbim=rgb, compat=BILATERAL_WEIGHT)

    def refine(self, mask: np.ndarray) -> np.ndarray:
        """Refine one mask (see :func:`dense_crf`).

        Args:
            mask: ``(h, w)`` float or bool foreground mask (0/1); resized to ``(H, W)`` bilinearly.

        Returns:
            ``(H, W)`` float32, 1.0 where the foreground label wins.
        """
        self._crf.setUnaryEnergy(unary_energy(mask, (self.height, self.width)))
        marginals = np.array(self._crf.inference(MAX_ITER)).reshape(2, self.height, self.width)
        return np.argmax(marginals, axis=0).astype(np.float32)


def unary_energy(mask: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """``(2, H W)`` float32: ``-log`` of the softmaxed logits ``(1 - m, m)`` resized bilinearly to the
    image, clipped at :data:`CLIP` (crf.py's ``unary_from_softmax``)."""
    import torch
    import torch.nn.functional as F

    fg = np.asarray(mask, dtype=np.float64)[None]
    logits = torch.from_numpy(np.concatenate((1.0 - fg, fg), axis=0))
    logits = F.interpolate(logits[None], size=tuple(image_hw), mode="bilinear", align_corners=False)[0]
    probs = F.softmax(logits, dim=0).numpy()
    return np.ascontiguousarray((-np.log(np.clip(probs, CLIP, 1.0))).reshape(2, -1).astype(np.float32))


def dense_crf(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Refine a mask with the dense CRF (one image, one mask: :class:`ImageCRF` for several).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(h, w)`` float or bool foreground mask (0/1); resized to ``(H, W)`` bilinearly.

    Returns:
        ``(H, W)`` float32, 1.0 where the foreground label wins.

    Raises:
        CRFUnavailableError: pydensecrf is not installed, naming the extra that installs it.
    """
    return ImageCRF(image).refine(mask)


def crf_available() -> bool:
    """Whether pydensecrf can be imported."""
    try:
        import pydensecrf.densecrf  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["CRF_MISSING", "CRFUnavailableError", "ImageCRF", "crf_available", "dense_crf", "unary_energy"]
