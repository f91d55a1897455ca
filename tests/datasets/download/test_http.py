from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from httpserver import Behaviour, serve

from objdisc.datasets.download.http import DownloadError, download

BODY = random.Random(0).randbytes(3 * (1 << 20) + 12345)  # several chunks, the same every run
MD5 = hashlib.md5(BODY).hexdigest()


def fetch(base: str, tmp_path: Path, **kwargs) -> Path:
    kwargs = {"md5": MD5, "size": len(BODY), "backoff_s": 0.01, "progress": False, **kwargs}
    return download(kwargs.pop("urls", f"{base}/data/file.tar"), tmp_path / "out" / "file.tar", **kwargs)


def test_full_download(tmp_path: Path):
    behaviour = Behaviour(files={"/data/file.tar": BODY})
    with serve(behaviour) as base:
        path = fetch(base, tmp_path)
    assert path.read_bytes() == BODY
    assert not list(path.parent.glob("*.part"))


def test_interrupted_download_resumes_with_range(tmp_path: Path):
    behaviour = Behaviour(files={"/data/file.tar": BODY}, drop_after=1_500_000)
    with serve(behaviour) as base:
        path = fetch(base, tmp_path)
    assert path.read_bytes() == BODY
    assert behaviour.requests == ["GET /data/file.tar", "GET /data/file.tar bytes=1500000-"]


def test_partial_file_from_an_earlier_run_is_resumed(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file.tar.part").write_bytes(BODY[:1000])
    behaviour = Behaviour(files={"/data/file.tar": BODY})
    with serve(behaviour) as base:
        assert fetch(base, tmp_path).read_bytes() == BODY
    assert behaviour.requests == ["GET /data/file.tar bytes=1000-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file.tar.part").write_bytes(b"x" * 1000)  # not even the right bytes
    behaviour = Behaviour(files={"/data/file.tar": BODY}, ignore_range=True)
    with serve(behaviour) as base:
        assert fetch(base, tmp_path).read_bytes() == BODY


def test_server_errors_are_retried_until_it_recovers(tmp_path: Path):
    behaviour = Behaviour(files={"/data/file.tar": BODY}, fail_first=3)
    with serve(behaviour) as base:
        assert fetch(base, tmp_path).read_bytes() == BODY
    assert len(behaviour.requests) == 4


def test_server_errors_past_the_retries_fail_clearly(tmp_path: Path):
    behaviour = Behaviour(files={"/data/file.tar": BODY}, fail_first=100)
    with serve(behaviour) as base, pytest.raises(DownloadError, match="HTTP 500"):
        fetch(base, tmp_path, retries=2)
    assert len(behaviour.requests) == 3 and not (tmp_path / "out" / "file.tar").exists()


def test_wrong_checksum_is_rejected_and_nothing_replaced(tmp_path: Path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "file.tar").write_bytes(b"the good old copy")
    damaged = BODY[:-1] + bytes([BODY[-1] ^ 0xFF])  # the last byte always differs
    behaviour = Behaviour(files={"/data/file.tar": damaged})
    with serve(behaviour) as base, pytest.raises(DownloadError, match="does not match the known"):
        fetch(base, tmp_path)
    assert (tmp_path / "out" / "file.tar").read_bytes() == b"the good old copy"
    assert not (tmp_path / "out" / "file.tar.part").exists()


def test_wrong_size_is_rejected(tmp_path: Path):
    behaviour = Behaviour(files={"/data/file.tar": BODY + b"extra"})
    with serve(behaviour) as base, pytest.raises(DownloadError, match="expected"):
        fetch(base, tmp_path, md5=None)
    assert not (tmp_path / "out" / "file.tar").exists()


def test_falls_back_to_the_mirror(tmp_path: Path):
    behaviour = Behaviour(files={"/mirror/file.tar": BODY})
    with serve(behaviour) as base:
        path = fetch(base, tmp_path, urls=[f"{base}/primary/file.tar", f"{base}/mirror/file.tar"])
    assert path.read_bytes() == BODY
    assert behaviour.requests[0].startswith("GET /primary/file.tar")


def test_unreachable_host_names_the_url(tmp_path: Path):
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1:9/nothing"):
        download("http://127.0.0.1:9/nothing", tmp_path / "x", retries=0, progress=False)
