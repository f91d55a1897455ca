#!/usr/bin/env bash
# Fetch and unpack PASCAL VOC trainval into DATA_ROOT/VOCdevkit, as `objdisc run --dataset voc07|voc12` expects.
#
#   bash data_scripts/get_voc.sh DATA_ROOT [2007|2012]
#
# The archive is resumed if a partial download is there, checked against its known md5 before
# it is unpacked, and removed afterwards. OBJDISC_VOC_URL overrides the base URL (a proxy or a
# local mirror laid out like the Oxford host: <base>/voc2007/<tar>, <base>/voc2012/<tar>).
set -euo pipefail

root=${1:?usage: get_voc.sh DATA_ROOT [2007|2012]}
year=${2:-2007}
base=${OBJDISC_VOC_URL:-http://host.robots.ox.ac.uk/pascal/VOC}

case "$year" in
  2007) file=VOCtrainval_06-Nov-2007.tar; md5=c52e279531787c972589f7e41ab4ae64 ;;
  2012) file=VOCtrainval_11-May-2012.tar; md5=6cd6e144f989b92b3379bac3b3de84fd ;;
  *) echo "get_voc.sh: year must be 2007 or 2012, got '$year'" >&2; exit 2 ;;
esac
md5=${OBJDISC_VOC_MD5:-$md5}  # only for tests serving a small archive

if [ -f "$root/VOCdevkit/VOC$year/ImageSets/Main/trainval.txt" ]; then
  echo "VOC$year already in $root/VOCdevkit"
  exit 0
fi
mkdir -p "$root"
part="$root/$file.part"
curl -fL --retry 5 --retry-delay 2 -C - -o "$part" "$base/voc$year/$file"
if ! echo "$md5  $part" | md5sum -c --status -; then
  echo "get_voc.sh: $part does not match md5 $md5; removed, run again" >&2
  rm -f "$part"
  exit 1
fi
tar -xf "$part" -C "$root"
rm -f "$part"
echo "VOC$year trainval ready in $root/VOCdevkit/VOC$year"
