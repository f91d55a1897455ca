"""Where the datasets come from: the public sources researchers use, with their checksums.

Base URLs can be overridden for a proxy or a local copy:

- ``OBJDISC_VOC_URL``: laid out like the Oxford VOC host (``<base>/voc2007/<tar>``);
- ``OBJDISC_COCO_URL``: laid out like images.cocodataset.org (``<base>/annotations/<zip>``,
  ``<base>/zips/<zip>``, ``<base>/train2014/<jpg>``);
- ``OBJDISC_COCO20K_LIST_URL``: LOST's list file;
- ``OBJDISC_SALIENCY_URL``: one host laid out like the saliency datasets' hosts (the paths of
  :data:`SALIENCY_ARCHIVES` under it);
- ``--mirror URL`` (all of the above at once): every file flat under ``URL``
  (``<URL>/<tar or zip>``, ``<URL>/coco_20k_filenames.txt``, ``<URL>/train2014/<jpg>``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# the kinds `objdisc data download` fetches
DOWNLOADABLE = ("voc07", "voc12", "coco20k", "coco_val2017", "ecssd", "duts-te", "dut-omron", "duts-tr")

VOC_URL = "http://host.robots.ox.ac.uk/pascal/VOC"  # the host torchvision uses
VOC_MIRROR = "https://pjreddie.com/media/files"  # the widely used mirror
COCO_URL = "http://images.cocodataset.org"
COCO20K_LIST_URL = "https://raw.githubusercontent.com/valeoai/LOST/master/datasets/coco_20k_filenames.txt"


@dataclass(frozen=True)
class Source:
    """One file to fetch.

    Attributes:
        filename: the file's name.
        urls: where to get it, in order (primary first, then mirrors).
        md5: known hex md5 (``None`` when none is published).
        size: known size in bytes (``None`` when unknown).
    """

    filename: str
    urls: tuple[str, ...]
    md5: str | None
    size: int | None


# filename, md5, size: published figures, checked against several independent public copies.
VOC_ARCHIVES = {
    "2007": ("VOCtrainval_06-Nov-2007.tar", "c52e279531787c972589f7e41ab4ae64", 460_032_000),
    "2012": ("VOCtrainval_11-May-2012.tar", "6cd6e144f989b92b3379bac3b3de84fd", 1_999_639_040),
}
COCO_ANNOTATIONS = ("annotations_trainval2014.zip", "0a379cfc70b0e71301e0f377548639bd", 252_872_794)
COCO_TRAIN_IMAGES = ("train2014.zip", "0da8c0bd3d6becc4dcb32757491aca88", None)
COCO20K_LIST = ("coco_20k_filenames.txt", "133cea5ffcea93dccbaeb62c38b24e7c", 832_314)
COCO_ANNOTATIONS_2017 = ("annotations_trainval2017.zip", "f4bbac642086de4f52a3fdda2de5fa2c", 252_907_541)
COCO_VAL2017_IMAGES = ("val2017.zip", "442b8da7639aecaf257c1dceb8ba8c80", 815_585_330)


# The saliency benchmarks, from the URLs of TokenCut's datasets/*/download_data.sh. Their hosts
# publish no checksums and none could be fetched here (no network): the archives are checked by
# being zips and by what they unpack to (every image with its mask, the published count); the
# md5 and sha256 of what was fetched are written into the dataset's download marker.
SALIENCY_ARCHIVES: dict[str, tuple[str, ...]] = {
    "ecssd": (
        "https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/data/ECSSD/images.zip",
        "https://www.cse.cuhk.edu.hk/leojia/projects/hsaliency/data/ECSSD/ground_truth_mask.zip",
    ),
    "duts-te": ("http://saliencydetection.net/duts/download/DUTS-TE.zip",),
    "duts-tr": ("http://saliencydetection.net/duts/download/DUTS-TR.zip",),  # FOUND's training set
    "dut-omron": (
        "http://saliencydetection.net/dut-omron/download/DUT-OMRON-image.zip",
        "http://saliencydetection.net/dut-omron/download/DUT-OMRON-gt-pixelwise.zip.zip",
    ),
}


def saliency_sources(kind: str, mirror: str | None = None) -> tuple[Source, ...]:
    """The archives of a saliency dataset: ``--mirror`` (flat), ``OBJDISC_SALIENCY_URL`` (the same
    paths on another host) or the published URLs."""
    from urllib.parse import urlsplit

    out = []
    for url in SALIENCY_ARCHIVES[kind]:
        filename = url.rsplit("/", 1)[1]
        if mirror:
            url = f"{mirror.rstrip('/')}/{filename}"
        elif os.environ.get("OBJDISC_SALIENCY_URL"):
            url = os.environ["OBJDISC_SALIENCY_URL"].rstrip("/") + urlsplit(url).path
        out.append(Source(filename, (url,), None, None))
    return tuple(out)


def known_archives() -> dict[str, tuple[str | None, int | None, str]]:
    """Every archive ``--archive`` can stand for: file name -> ``(md5, size, dataset kind)``."""
    out: dict[str, tuple[str | None, int | None, str]] = {}
    for year, (filename, md5, size) in VOC_ARCHIVES.items():
        out[filename] = (md5, size, "voc07" if year == "2007" else "voc12")
    for filename, md5, size in (COCO_ANNOTATIONS, COCO_TRAIN_IMAGES):
        out[filename] = (md5, size, "coco20k")
    for filename, md5, size in (COCO_ANNOTATIONS_2017, COCO_VAL2017_IMAGES):
        out[filename] = (md5, size, "coco_val2017")
    for kind, urls in SALIENCY_ARCHIVES.items():
        for url in urls:
            out[url.rsplit("/", 1)[1]] = (None, None, kind)
    return out


def voc_source(year: str, mirror: str | None = None) -> Source:
    """The VOC ``year`` trainval tar: Oxford host, then the pjreddie mirror."""
    filename, md5, size = VOC_ARCHIVES[year]
    if mirror:
        urls: tuple[str, ...] = (f"{mirror.rstrip('/')}/{filename}",)
    else:
        base = os.environ.get("OBJDISC_VOC_URL", VOC_URL).rstrip("/")
        urls = (f"{base}/voc{year}/{filename}", f"{VOC_MIRROR}/{filename}")
    return Source(filename, urls, md5, size)


def coco_base(mirror: str | None = None) -> str:
    """Base URL of the COCO files (``--mirror``, ``OBJDISC_COCO_URL`` or the official host)."""
    return (mirror or os.environ.get("OBJDISC_COCO_URL", COCO_URL)).rstrip("/")


def coco_annotations_source(mirror: str | None = None) -> Source:
    """``annotations_trainval2014.zip``."""
    filename, md5, size = COCO_ANNOTATIONS
    url = f"{coco_base(mirror)}/{filename}" if mirror else f"{coco_base()}/annotations/{filename}"
    return Source(filename, (url,), md5, size)


def coco_train_images_source(mirror: str | None = None) -> Source:
    """``train2014.zip`` (13 GB; only with ``--full-zip``)."""
    filename, md5, size = COCO_TRAIN_IMAGES
    url = f"{coco_base(mirror)}/{filename}" if mirror else f"{coco_base()}/zips/{filename}"
    return Source(filename, (url,), md5, size)


def coco_2017_sources(mirror: str | None = None) -> tuple[Source, Source]:
    """``annotations_trainval2017.zip`` and ``val2017.zip`` (COCO val2017: 5,000 images)."""
    out = []
    for (filename, md5, size), folder in ((COCO_ANNOTATIONS_2017, "annotations"), (COCO_VAL2017_IMAGES, "zips")):
        url = f"{coco_base(mirror)}/{filename}" if mirror else f"{coco_base()}/{folder}/{filename}"
        out.append(Source(filename, (url,), md5, size))
    return out[0], out[1]


def coco20k_list_source(mirror: str | None = None) -> Source:
    """LOST's ``coco_20k_filenames.txt`` (19,817 lines)."""
    filename, md5, size = COCO20K_LIST
    url = f"{mirror.rstrip('/')}/{filename}" if mirror else os.environ.get("OBJDISC_COCO20K_LIST_URL", COCO20K_LIST_URL)
    return Source(filename, (url,), md5, size)


def coco_image_url(coco_url: str, file_name: str, mirror: str | None = None) -> str:
    """Per-image URL: the annotation's ``coco_url``, re-based onto a mirror when one is set."""
    if mirror or "OBJDISC_COCO_URL" in os.environ:
        return f"{coco_base(mirror)}/train2014/{file_name}"
    return coco_url or f"{COCO_URL}/train2014/{file_name}"
