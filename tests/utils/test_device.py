from __future__ import annotations

import pytest

from objdisc.utils.device import resolve_device, resolve_precision


def test_auto_device_and_precision_on_cpu():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_precision("auto", resolve_device("cpu")) == "fp32"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", resolve_device("cpu"))
