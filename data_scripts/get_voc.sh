#!/usr/bin/env bash
# Fetch, verify and unpack PASCAL VOC trainval under DATA_ROOT (the same code as `objdisc data download`).
#
#   bash data_scripts/get_voc.sh DATA_ROOT [2007|2012] [--mirror URL] [--archive FILE.tar]
set -euo pipefail
root=${1:?usage: get_voc.sh DATA_ROOT [2007|2012] [objdisc data download options]}
year=${2:-2007}
case "$year" in
  2007) kind=voc07 ;;
  2012) kind=voc12 ;;
  *) echo "get_voc.sh: year must be 2007 or 2012, got '$year'" >&2; exit 2 ;;
esac
shift $(( $# >= 2 ? 2 : 1 ))
exec python -m objdisc data download "$kind" --data-root "$root" "$@"
