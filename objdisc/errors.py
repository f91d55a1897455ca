"""objdisc's error types: each message names the file or option and what is wrong."""

from __future__ import annotations


class ObjdiscError(ValueError):
    """Base of every error a user can fix (bad path, bad file, bad option)."""


class BackboneError(ObjdiscError):
    """An unknown backbone name, or one timm does not provide."""


class WeightsError(ObjdiscError):
    """A weights file is missing, unreadable, or does not fit the model."""


class DatasetError(ObjdiscError):
    """A dataset folder or file is missing or malformed."""


class ImageError(ObjdiscError):
    """An image file cannot be decoded."""


class DeviceError(ObjdiscError):
    """A device or precision that cannot be used here."""


class OptionError(ObjdiscError):
    """An option value that cannot be used (features, layer, method options)."""
