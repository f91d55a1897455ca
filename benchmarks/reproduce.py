"""Reproduce the LOST rows of the LOST paper and the registers paper, next to the published numbers.

    python benchmarks/reproduce.py --data-root ~/data --out runs/reproduce [--download] [--device cuda]
    python benchmarks/reproduce.py --dry-run     # only print the equivalent `objdisc` commands

Needs internet (weights from the Hugging Face hub, datasets with --download) and, to finish in
reasonable time, a GPU. Runs the matrix

    DINO ViT-S/16, ViT-B/16;  DINOv2 ViT-S/14, B/14, L/14 with and without registers
    x  VOC07 trainval, VOC12 trainval, COCO20k

with plain LOST (last-layer keys, k = 100, no Gram bias), plus MaskCut (box AP50 on COCO val2017,
COCO20k and VOC07; DINO ViT-B/8 as CutLER, DINOv2 ViT-L/14 without, with and with test-time
registers: no MaskCut number is filled in, none quoted in the tracker), plus TokenCut on DINO ViT-S/16 (its
paper's setting), plus DINO-seg (LOST's baseline: head 4 of the last block's CLS attention) on
DINO ViT-S/16 (LOST's Table 1) and on DINOv2 ViT-L/14 with and without registers (no published
number: the open question of what registers do beyond LOST), plus the saliency matrix (TokenCut
with and without the bilateral solver, LOST, DINO-seg and MaskCut on ECSSD, DUTS-TE and DUT-OMRON,
maxFβ and IoU; DINO ViT-S/16 with TokenCut's README numbers, DINOv2 ViT-L/14 without, with and with
test-time registers blank), plus ProMerge (box AP50 and mask AP on COCO val2017 and COCO20k, the
same backbones as MaskCut; ProMerge's README numbers for DINO ViT-B/8, and MaskCut's beside them),
plus FOUND (CorLoc on VOC07, VOC12 and COCO20k, and the saliency matrix with MAE and S-measure:
its training-free background step on DINO ViT-S/8 and DINOv2 ViT-L/14 without, with and with
test-time registers, and DINO ViT-S/8 with FOUND's released head, ``--found-head``; blank: the
FOUND paper's numbers are not in its README or the tracker), plus LOST on DINOv2 ViT-L/14 with
test-time registers on the published register
neurons (Jiang et al., NeurIPS 2025: ``--test-time-registers builtin``; method ``lost+ttr``
here), one run folder per cell under --out (each resumable: rerun the same command
after a crash), then prints the measured table and, for every cell with a published number,
measured vs published.

Published numbers: the LOST README (DINO rows), LOST's Table 1 (DINO-seg), the TokenCut paper
(DINO ViT-S/16) and the registers paper, Table 3 (DINOv2 ViT-L/14 rows). Only numbers quoted in objdisc's issue
tracker are filled in; the others of Table 3, and the test-time-register paper's, are left blank
here rather than typed from memory.
The registers paper also says its LOST numbers used a manual bias on the Gram matrix, which
plain LOST does not add: expect DINOv2 rows well below the paper (the tracker cites ~36 on
VOC12 for plain LOST) and use ``objdisc sweep --gram-bias`` to explore.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from objdisc.reports.paper_tables import TABLES

BACKBONES = [
    "dino_vits16",
    "dino_vitb16",
    "dinov2_vits14",
    "dinov2_reg_vits14",
    "dinov2_vitb14",
    "dinov2_reg_vitb14",
    "dinov2_vitl14",
    "dinov2_reg_vitl14",
]
DATASETS = ["voc07", "voc12", "coco20k"]
TOKENCUT_BACKBONES = ["dino_vits16"]
DINOSEG_BACKBONES = ["dino_vits16", "dinov2_vitl14", "dinov2_reg_vitl14"]
# MaskCut: DINO ViT-B/8 as CutLER, DINOv2 L/14 without / with registers / with test-time registers;
# scored by class-agnostic box AP50 on COCO val2017, COCO20k and VOC07.
MASKCUT_BACKBONES = ["dino_vitb8", "dinov2_vitl14", "dinov2_reg_vitl14"]
MASKCUT_DATASETS = ["coco_val2017", "coco20k", "voc07"]
MASKCUT_METRIC = "box_AP50"
TTR_BACKBONES = ["dinov2_vitl14"]  # the backbone with a published register-neuron list
# Saliency: every method's mask (TokenCut also with the bilateral solver, "+bs") on the three
# benchmarks, DINO ViT-S/16 (TokenCut's published cells) and DINOv2 L/14 without / with registers /
# with test-time registers (blank: nobody has published them); scored by maxFβ and IoU.
SALIENCY_BACKBONES = ["dino_vits16", "dinov2_vitl14", "dinov2_reg_vitl14"]
SALIENCY_DATASETS = ["ecssd", "duts-te", "dut-omron"]
SALIENCY_METHODS = ["tokencut", "tokencut+bs", "lost", "dinoseg", "maskcut"]
SALIENCY_METRICS = ("max_fbeta", "iou")
# ProMerge: its README's setting (DINO ViT-B/8) and DINOv2 L/14 without / with registers / with
# test-time registers; box AP50 and mask AP on COCO val2017 and COCO20k (MaskCut's cells get the
# mask AP row too, for its README's MaskCut column).
PROMERGE_BACKBONES = ["dino_vitb8", "dinov2_vitl14", "dinov2_reg_vitl14"]
PROMERGE_DATASETS = ["coco_val2017", "coco20k"]
MANY_OBJECT_METRICS = (("ap", "box_AP50"), ("mask_ap", "mask_AP"))
# FOUND: the training-free background step ("found") on its ViT-S/8 and the register question's
# L/14s; its released head ("found+head") on ViT-S/8 only (the head FOUND ships), in single mode and,
# on the saliency sets, multi mode ("found+head+multi").
FOUND_BACKBONES = ["dino_vits8", "dinov2_vitl14", "dinov2_reg_vitl14"]
FOUND_HEAD_BACKBONES = ["dino_vits8"]
FOUND_DATASETS = ["voc07", "voc12", "coco20k"]
FOUND_SALIENCY_METRICS = ("max_fbeta", "iou", "accuracy", "mae", "s_measure")

# (backbone, method, dataset) -> (CorLoc, source)
PUBLISHED: dict[tuple[str, str, str], tuple[float, str]] = {
    ("dino_vits16", "lost", "voc07"): (61.9, "LOST README"),
    ("dino_vits16", "lost", "voc12"): (64.0, "LOST README"),
    ("dino_vits16", "lost", "coco20k"): (50.7, "LOST README"),
    ("dino_vitb16", "lost", "voc07"): (60.1, "LOST README"),
    ("dino_vitb16", "lost", "voc12"): (63.3, "LOST README"),
    ("dino_vitb16", "lost", "coco20k"): (50.0, "LOST README"),
    ("dino_vits16", "dinoseg", "voc07"): (45.8, "LOST paper, Table 1"),
    ("dino_vits16", "dinoseg", "voc12"): (46.2, "LOST paper, Table 1"),
    ("dino_vits16", "dinoseg", "coco20k"): (42.0, "LOST paper, Table 1"),
    ("dino_vits16", "tokencut", "voc07"): (68.8, "TokenCut paper"),
    ("dino_vits16", "tokencut", "voc12"): (72.1, "TokenCut paper"),
    ("dino_vits16", "tokencut", "coco20k"): (58.8, "TokenCut paper"),
}
# the registers paper's Table 3 (DINOv2 ViT-L/14 rows), from objdisc's own table (`objdisc reproduce
# --table registers-3` runs all of it, DeiT-III and OpenCLIP on values included)
PUBLISHED.update(
    {
        (row.backbone, "lost", dataset): (value, "registers paper, Table 3")
        for row in TABLES["registers-3"].rows
        if row.backbone in BACKBONES and row.features == "k"
        for dataset, value in row.published.items()
        if value is not None
    }
)
# (backbone, method, dataset) -> (mask AP in %, source): ProMerge's README table ("AP", training-free
# rows; it does not say box or mask: its MaskCut column, 2.2 on COCO val2017, is CutLER's mask AP)
PUBLISHED_MASK_AP: dict[tuple[str, str, str], tuple[float, str]] = {
    ("dino_vitb8", "promerge", "coco_val2017"): (2.4, "ProMerge README"),
    ("dino_vitb8", "promerge", "coco20k"): (3.0, "ProMerge README"),
    ("dino_vitb8", "maskcut", "coco_val2017"): (2.2, "ProMerge README"),
    ("dino_vitb8", "maskcut", "coco20k"): (3.0, "ProMerge README"),
}
# (backbone, method, dataset) -> ({metric: value in %}, source): TokenCut's README, DINO ViT-S/16
PUBLISHED_SALIENCY: dict[tuple[str, str, str], tuple[dict[str, float], str]] = {
    ("dino_vits16", "tokencut", "dut-omron"): ({"iou": 53.3, "max_fbeta": 60.0}, "TokenCut README"),
    ("dino_vits16", "tokencut", "duts-te"): ({"iou": 57.6, "max_fbeta": 67.2}, "TokenCut README"),
    ("dino_vits16", "tokencut", "ecssd"): ({"iou": 71.2, "max_fbeta": 80.3}, "TokenCut README"),
    ("dino_vits16", "tokencut+bs", "dut-omron"): ({"iou": 61.8, "max_fbeta": 69.7}, "TokenCut README"),
    ("dino_vits16", "tokencut+bs", "duts-te"): ({"iou": 62.4, "max_fbeta": 75.5}, "TokenCut README"),
    ("dino_vits16", "tokencut+bs", "ecssd"): ({"iou": 77.2, "max_fbeta": 87.4}, "TokenCut README"),
}


def out_dir(root: Path, backbone: str, method: str, dataset: str) -> Path:
    """Run folder of one cell."""
    if method == "lost":
        return root / f"{backbone}-{dataset}"
    return root / f"{backbone}-{method.replace('+', '-')}-{dataset}"


def cells(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(backbone, method, dataset)`` of every run, dataset-major."""
    out = []
    for dataset in args.datasets:
        out += [(b, "lost", dataset) for b in args.backbones]
        out += [(b, "tokencut", dataset) for b in TOKENCUT_BACKBONES if b in args.backbones and not args.no_tokencut]
        out += [(b, "dinoseg", dataset) for b in DINOSEG_BACKBONES if b in args.backbones and not args.no_dinoseg]
        out += [(b, "lost+ttr", dataset) for b in TTR_BACKBONES if b in args.backbones and not args.no_ttr]
    if not args.no_maskcut:
        for dataset in MASKCUT_DATASETS:
            out += [(b, "maskcut", dataset) for b in MASKCUT_BACKBONES]
            out += [(b, "maskcut+ttr", dataset) for b in TTR_BACKBONES]
    if not args.no_promerge:
        for dataset in PROMERGE_DATASETS:
            out += [(b, "promerge", dataset) for b in PROMERGE_BACKBONES]
            out += [(b, "promerge+ttr", dataset) for b in TTR_BACKBONES]
    if not args.no_saliency:
        for dataset in SALIENCY_DATASETS:
            for method in SALIENCY_METHODS:
                out += [(b, method, dataset) for b in SALIENCY_BACKBONES]
                out += [(b, f"{method}+ttr", dataset) for b in TTR_BACKBONES]
    if not args.no_found:
        for dataset in [*FOUND_DATASETS, *([] if args.no_saliency else SALIENCY_DATASETS)]:
            out += [(b, "found", dataset) for b in FOUND_BACKBONES]
            out += [(b, "found+ttr", dataset) for b in TTR_BACKBONES]
            out += [(b, "found+head", dataset) for b in FOUND_HEAD_BACKBONES]
            if dataset in SALIENCY_DATASETS:  # FOUND's multi mode: the head's soft map scored
                out += [(b, "found+head+multi", dataset) for b in FOUND_HEAD_BACKBONES]
    return out


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The ``objdisc run`` command of every cell."""
    out = []
    for backbone, method, dataset in cells(args):
        base, *extras = method.split("+")
        cmd = ["objdisc", "run", "-b", backbone, "-d", dataset, "--method", base]
        cmd += ["--refine", "bilateral"] if "bs" in extras else []
        cmd += ["--test-time-registers", "builtin"] if "ttr" in extras else []
        cmd += ["--found-head", str(args.found_head)] if "head" in extras else []
        cmd += ["--found-mode", "multi"] if "multi" in extras else []
        cmd += ["-o", str(out_dir(args.out, backbone, method, dataset))]
        cmd += ["--data-root", str(args.data_root), "--device", args.device]
        out.append(cmd + (["--download"] if args.download else []))
    return out


def comparison(root: Path, runs: list[tuple[str, str, str]]) -> str:
    """Markdown: measured vs published per cell, CorLoc (MaskCut: box AP50), blank where a run or a
    number is missing."""
    from objdisc.engine.run_files import read_metrics

    lines = [
        "| backbone | method | dataset | metric | measured | published | source |",
        "|:---|:---|:---|:---|---:|---:|:---|",
    ]
    for backbone, method, dataset in runs:
        folder = out_dir(root, backbone, method, dataset)
        blocks = read_metrics(folder)["metrics"] if (folder / "metrics.json").exists() else {}
        if dataset in SALIENCY_DATASETS:
            numbers, source = PUBLISHED_SALIENCY.get((backbone, method, dataset), ({}, ""))
            names = FOUND_SALIENCY_METRICS if method.startswith("found") else SALIENCY_METRICS
            rows = [("saliency", name, numbers.get(name), source) for name in names]
        elif method.startswith(("maskcut", "promerge")):
            published, source = PUBLISHED_MASK_AP.get((backbone, method, dataset), (None, ""))
            rows = [
                (block, name, published if block == "mask_ap" else None, source if block == "mask_ap" else "")
                for block, name in MANY_OBJECT_METRICS
            ]
        else:
            published, source = PUBLISHED.get((backbone, method, dataset), (None, ""))
            rows = [("corloc", "corloc", published, source)]
        for block_name, value, published, source in rows:
            measured = (blocks.get(block_name) or {}).get("values", {}).get(value)
            values = ["" if v is None else f"{v:.1f}" for v in (measured, published)]
            lines.append(f"| {backbone} | {method} | {dataset} | {value} | {values[0]} | {values[1]} | {source} |")
    return "\n".join(lines) + "\n"


def _path(text: str) -> Path:
    return Path(text).expanduser()  # printed commands must not carry a quoted "~"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=_path, default=_path("~/data"))
    parser.add_argument("--out", type=_path, default=Path("runs/reproduce"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--download", action="store_true")
    parser.add_argument("--backbones", nargs="+", default=BACKBONES)
    parser.add_argument("--datasets", nargs="+", default=DATASETS)
    parser.add_argument("--no-tokencut", action="store_true", help="no TokenCut cells")
    parser.add_argument("--no-dinoseg", action="store_true", help="no DINO-seg cells")
    parser.add_argument("--no-maskcut", action="store_true", help="no MaskCut cells")
    parser.add_argument("--no-ttr", action="store_true", help="no test-time-register cells")
    parser.add_argument("--no-saliency", action="store_true", help="no saliency cells (ECSSD, DUTS-TE, DUT-OMRON)")
    parser.add_argument("--no-promerge", action="store_true", help="no ProMerge cells")
    parser.add_argument("--no-found", action="store_true", help="no FOUND cells")
    parser.add_argument(
        "--found-head",
        type=_path,
        default=_path("~/FOUND/data/weights/decoder_weights.pt"),
        help="FOUND's released head (its repository's data/weights/decoder_weights.pt)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)

    if args.dry_run:
        for cmd in commands(args):
            print(shlex.join(cmd))
        return 0

    from click.testing import CliRunner

    from objdisc.cli import cli
    from objdisc.reports.table import table

    failed = []
    for cmd in commands(args):
        print("$", shlex.join(cmd), flush=True)
        result = CliRunner().invoke(cli, cmd[1:])
        print(result.output, flush=True)
        if result.exit_code != 0:  # one failed cell (no weights access, no data) never stops the rest
            failed.append(shlex.join(cmd))
    folders = [out_dir(args.out, *cell) for cell in cells(args)]
    finished = [f for f in folders if (f / "metrics.json").exists()]
    if finished:
        print(table(finished, "md")[0])
    print(comparison(args.out, cells(args)))
    for cmd in failed:
        print("failed:", cmd)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
