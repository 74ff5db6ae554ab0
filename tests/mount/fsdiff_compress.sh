#!/usr/bin/env bash
# fsdiff_compress.sh FSDIFF_BIN TMPFSD_BIN [budget-scale]: fsdiff and fsx
# against kernel tmpfs (fsdiff_tmpfsd.sh) with tmpfsd at --memory 2M and
# the compressed pool on (lz4), so that every kind of operation (truncate,
# punch, partial overwrite, mmap) meets pages kept compressed.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/fsdiff_tmpfsd.sh" "$1" "$2" "${3:-0.33}" --memory 2M --compress lz4
