#!/usr/bin/env bash
# fsdiff_compress.sh FSDIFF_BIN TMPFSD_BIN [budget-scale]: fsdiff and fsx
# against kernel tmpfs (fsdiff_tmpfsd.sh) with the compressed pool on
# (lz4), so that every kind of operation (truncate, punch, partial
# overwrite, mmap) meets pages kept compressed; twice:
#   - --memory 2M with the swap file: the pool in front of it;
#   - --swap 0 (the pool alone) at a third of the budget, with data that
#     compresses about 2:1 (FSDIFF_FILL=half) and --memory 8M, so that the
#     pool holds pages without turning fsdiff's writes away (ENOSPC, which
#     kernel tmpfs would not give).
here=$(cd "$(dirname "$0")" && pwd)
scale=${3:-0.33}
"$here/fsdiff_tmpfsd.sh" "$1" "$2" "$scale" --memory 2M --compress lz4 || exit 1
alone=$(awk -v s="$scale" 'BEGIN { print s / 3 }')
echo "fsdiff_compress: --swap 0, the pool alone (FSDIFF_FILL=half, scale $alone)"
FSDIFF_FILL=half exec "$here/fsdiff_tmpfsd.sh" "$1" "$2" "$alone" --memory 8M --swap 0 --compress lz4
