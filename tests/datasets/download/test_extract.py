from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from objdisc.datasets.download.extract import UnsafeArchiveError, extract
from objdisc.errors import ObjdiscError


def make_tar(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Members: (name, content or None for a symlink, link target)."""
    with tarfile.open(path, "w") as tar:
        for name, content, link in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type, info.linkname = tarfile.SYMTYPE, link or ""
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def test_tar_extracts_inside(tmp_path: Path):
    archive = make_tar(
        tmp_path / "ok.tar", [("VOCdevkit/VOC2007/a.txt", b"hi", None), ("VOCdevkit/link", None, "VOC2007/a.txt")]
    )
    extract(archive, tmp_path / "out")
    assert (tmp_path / "out/VOCdevkit/VOC2007/a.txt").read_bytes() == b"hi"


@pytest.mark.parametrize(
    "members",
    [
        [("../evil.txt", b"x", None)],
        [("VOCdevkit/../../evil.txt", b"x", None)],
        [("/tmp/evil.txt", b"x", None)],
        [("VOCdevkit/link", None, "../../etc/passwd")],
        [("VOCdevkit/link", None, "/etc/passwd")],
    ],
)
def test_tar_members_escaping_are_refused_and_nothing_written(tmp_path: Path, members):
    archive = make_tar(tmp_path / "evil.tar", [("VOCdevkit/fine.txt", b"ok", None), *members])
    with pytest.raises(UnsafeArchiveError, match="would land outside") as info:
        extract(archive, tmp_path / "out")
    assert "evil.tar" in str(info.value)
    assert not (tmp_path / "out" / "VOCdevkit").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_zip_extracts_and_refuses_traversal(tmp_path: Path):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("annotations/instances_train2014.json", "{}")
    extract(good, tmp_path / "out")
    assert (tmp_path / "out/annotations/instances_train2014.json").read_text() == "{}"
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("annotations/ok.json", "{}")
        zf.writestr("../../evil.json", "{}")
    with pytest.raises(UnsafeArchiveError, match=r"\.\./\.\./evil\.json"):
        extract(evil, tmp_path / "out2")
    assert not (tmp_path / "out2/annotations").exists()


def test_not_an_archive(tmp_path: Path):
    (tmp_path / "x.tar").write_bytes(b"not an archive at all")
    with pytest.raises(ObjdiscError, match="neither a tar nor a zip"):
        extract(tmp_path / "x.tar", tmp_path / "out")
