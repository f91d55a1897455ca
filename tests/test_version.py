from __future__ import annotations

import re
from pathlib import Path

import objdisc
from objdisc.version import __version__


def test_one_version_in_the_package_and_pyproject():
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    (declared,) = re.findall(r'^version = "([^"]+)"$', text, re.M)  # [project] has the only one
    assert declared == __version__ == objdisc.__version__
