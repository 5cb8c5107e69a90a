#!/usr/bin/env bash
# Fetch OpenCV's sample videos from Debian's opencv-doc package into DEST/opencv/.
# Megamind_bugy.avi (a deliberately damaged file) goes to DEST-damaged/ for the tests.
set -euo pipefail
dest=${1:?usage: fetch-opencv-samples.sh DEST}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get download opencv-doc >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    apt-get download opencv-doc
fi
dpkg -x opencv-doc_*.deb extracted
doc=extracted/usr/share/doc/opencv-doc
cd - >/dev/null
mkdir -p "$dest/opencv" "$dest-damaged"
cp "$work/$doc/examples/data/Megamind.avi" "$work/$doc/examples/data/tree.avi" "$dest/opencv/"
cp "$work/$doc/examples/data/Megamind_bugy.avi" "$dest-damaged/"
gzip -dc "$work/$doc/opencv4/html/box.mp4.gz" > "$dest/opencv/box.mp4"
# vtest.avi last: the Makefile takes its presence to mean the whole set is here.
cp "$work/$doc/examples/data/vtest.avi" "$dest/opencv/"
echo "OpenCV sample videos in $dest/opencv"
