#!/usr/bin/env bash
# Fetch COCO val2017 under DATA_ROOT (the same code as `objdisc data download coco_val2017`):
# annotations_trainval2017.zip (for instances_val2017.json) and val2017.zip (5,000 images).
#
#   bash data_scripts/get_coco_val2017.sh DATA_ROOT [--mirror URL] [--archive FILE.zip]
set -euo pipefail
root=${1:?usage: get_coco_val2017.sh DATA_ROOT [objdisc data download options]}
shift
exec python -m objdisc data download coco_val2017 --data-root "$root" "$@"
