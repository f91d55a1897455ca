"""Pixel-level refinement of masks found on the patch grid (MaskCut's dense CRF)."""
