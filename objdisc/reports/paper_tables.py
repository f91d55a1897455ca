"""Published tables objdisc reproduces (``objdisc reproduce --table NAME``): rows, runs, numbers.

Each table lists its rows as the paper has them: the backbone and features each row runs, and
the published number per dataset where objdisc's issue tracker quotes it (``None`` otherwise:
blank rather than typed from memory). A row whose weights were never released is listed and
not run.

``registers-3``: "Vision Transformers Need Registers" (Darcet et al., ICLR 2024), Table 3: LOST
CorLoc on VOC07 / VOC12 trainval and COCO20k, each model without and with registers; DINOv2
ViT-L/14 on its keys, DeiT-III and OpenCLIP ViT-B/16 on their values (the paper's choice for
them). LOST is plain LOST (k = 100, no Gram bias): the paper says its LOST numbers used a manual
bias on the Gram matrix, so expect differences (``objdisc sweep --gram-bias`` explores it).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class PaperRow:
    """One row of a published table.

    Attributes:
        label: the row as the paper names it.
        backbone: objdisc's backbone name, or ``None`` when the weights were not released.
        features: the feature kind LOST reads (``k`` or ``v``).
        published: dataset -> the published value (``None``: not quoted here).
        note: why a row is not run, or what differs.
    """

    label: str
    backbone: str | None
    features: str = "k"
    published: dict[str, float | None] = field(default_factory=dict)
    note: str = ""


@dataclass(frozen=True)
class PaperTable:
    """A published table: its rows, datasets, metric and source."""

    name: str
    title: str
    source: str
    method: str
    metric: str
    datasets: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    downloads: str
    estimate: str


_NOT_RELEASED = "weights with registers not released: not run"
_LOST_SETS = ("voc07", "voc12", "coco20k")

TABLES: dict[str, PaperTable] = {
    "registers-3": PaperTable(
        name="registers-3",
        title="LOST CorLoc without and with registers",
        source="Darcet et al., Vision Transformers Need Registers, ICLR 2024, Table 3",
        method="lost",
        metric="corloc",
        datasets=("voc07", "voc12", "coco20k"),
        rows=(
            PaperRow("DeiT-III ViT-B/16 (values)", "deit3_vitb16", "v", dict.fromkeys(_LOST_SETS)),
            PaperRow("DeiT-III ViT-B/16 + reg (values)", None, "v", note=_NOT_RELEASED),
            PaperRow("OpenCLIP ViT-B/16 (values)", "openclip_vitb16", "v", dict.fromkeys(_LOST_SETS)),
            PaperRow("OpenCLIP ViT-B/16 + reg (values)", None, "v", note=_NOT_RELEASED),
            PaperRow("DINOv2 ViT-L/14", "dinov2_vitl14", "k", {"voc07": 35.3, "voc12": 40.2, "coco20k": 26.9}),
            PaperRow(
                "DINOv2 ViT-L/14 + reg", "dinov2_reg_vitl14", "k", {"voc07": 55.4, "voc12": 60.0, "coco20k": 42.0}
            ),
        ),
        downloads=(
            "VOC2007 trainval (0.45 GB), VOC2012 trainval (1.9 GB), COCO train2014 and its annotations (13 GB, "
            "for COCO20k), and the weights from the Hugging Face hub (DINOv2 ViT-L/14 with and without "
            "registers, 1.2 GB each; DeiT-III and OpenCLIP ViT-B/16, 0.35 and 0.6 GB)"
        ),
        estimate=(
            "36,368 images a row, 4 rows: on one GPU about 10 minutes a row (an estimate from ViT-L/14's "
            "FLOPs at VOC sizes and decoding with 8 workers: no GPU has run objdisc yet); on a 2-core CPU "
            "5.4 s an image for ViT-L/14 (measured on COCO photos: about 55 hours a row)"
        ),
    ),
}


__all__ = ["TABLES", "PaperRow", "PaperTable"]
