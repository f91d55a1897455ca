"""data_scripts/get_voc.sh against a local HTTP server serving a VOC-layout tar."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
from conftest import make_voc

SCRIPT = Path(__file__).resolve().parents[1] / "data_scripts" / "get_voc.sh"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="get_voc.sh needs curl")


@pytest.fixture
def served_voc(tmp_path: Path):
    source = tmp_path / "source"
    make_voc(source)
    (tmp_path / "www" / "voc2007").mkdir(parents=True)
    tar_path = tmp_path / "www" / "voc2007" / "VOCtrainval_06-Nov-2007.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(source / "VOCdevkit", arcname="VOCdevkit")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "www"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hashlib.md5(tar_path.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


def run_script(root: Path, base: str, md5: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OBJDISC_VOC_URL": base, "OBJDISC_VOC_MD5": md5}
    return subprocess.run(["bash", str(SCRIPT), str(root), "2007"], env=env, capture_output=True, text=True)


def test_downloads_checks_and_unpacks(served_voc, tmp_path: Path):
    base, md5 = served_voc
    root = tmp_path / "data"
    result = run_script(root, base, md5)
    assert result.returncode == 0, result.stderr
    assert (root / "VOCdevkit/VOC2007/ImageSets/Main/trainval.txt").read_text().split() == [
        "000005",
        "000007",
        "000009",
        "000012",
    ]
    assert not list(root.glob("*.part"))
    from objdisc.datasets import load_dataset

    assert len(load_dataset("voc07", root).records) == 4


def test_wrong_checksum_unpacks_nothing(served_voc, tmp_path: Path):
    base, _ = served_voc
    root = tmp_path / "data"
    result = run_script(root, base, "0" * 32)
    assert result.returncode == 1 and "does not match md5" in result.stderr
    assert not (root / "VOCdevkit").exists() and not list(root.glob("*.part"))
