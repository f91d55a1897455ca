#!/usr/bin/env bash
# Fetch LOST's COCO20k under DATA_ROOT: the list, the 2014 annotations, the selected-annotations
# file, and the 19,817 images one by one (add --full-zip for train2014.zip instead).
#
#   bash data_scripts/get_coco20k.sh DATA_ROOT [--full-zip] [--mirror URL] [--workers N]
set -euo pipefail
root=${1:?usage: get_coco20k.sh DATA_ROOT [objdisc data download options]}
shift
exec python -m objdisc data download coco20k --data-root "$root" "$@"
