"""Decode workers forked after the parent process has decoded and run a model must not hang."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import write_image


@pytest.mark.slow
def test_workers_forked_after_parent_work_do_not_deadlock(tmp_path: Path):
    for i in range(6):
        write_image(tmp_path / f"big{i}.jpg", (480, 640), (100, 100, 400, 300), seed=i)
    # Large images make OpenCV and torch start their thread pools in the parent first.
    script = textwrap.dedent(f"""
        import cv2, numpy as np, torch
        from objdisc.datasets import load_dataset
        from objdisc.engine.discover import discover
        from objdisc.methods import Lost
        from objdisc.models.backbones import Backbone, build_model
        from objdisc.models.specs import get_spec
        from objdisc.models.weights import WeightsInfo
        spec = get_spec("dino")
        backbone = Backbone(spec, build_model(spec, depth=1).eval(), WeightsInfo("-", "random", "-"))
        records = load_dataset("folder", images={str(tmp_path)!r}).records
        cv2.resize(np.zeros((2000, 2000, 3), np.uint8), (1000, 1000))
        first = list(discover(backbone, records, method=Lost(), workers=0))
        second = list(discover(backbone, records, method=Lost(), workers=2))
        assert len(second) == 6 and all(r.objects is not None for r in second)
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")
