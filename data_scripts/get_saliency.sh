#!/usr/bin/env bash
# Fetch a saliency benchmark under DATA_ROOT (the same code as `objdisc data download NAME`), from the
# URLs of TokenCut's datasets/*/download_data.sh: ecssd (ECSSD/, 1,000 images), duts-te (DUTS-TE/,
# 5,019) or dut-omron (DUT-OMRON/, 5,168), each image with its ground-truth mask.
#
#   bash data_scripts/get_saliency.sh DATA_ROOT ecssd|duts-te|dut-omron [--mirror URL] [--archive FILE.zip]
set -euo pipefail
root=${1:?usage: get_saliency.sh DATA_ROOT ecssd|duts-te|dut-omron [objdisc data download options]}
name=${2:?usage: get_saliency.sh DATA_ROOT ecssd|duts-te|dut-omron [objdisc data download options]}
case "$name" in
    ecssd|duts-te|dut-omron) ;;
    *) echo "get_saliency.sh: the dataset is ecssd, duts-te or dut-omron, not $name" >&2; exit 2 ;;
esac
shift 2
exec python -m objdisc data download "$name" --data-root "$root" "$@"
