#!/usr/bin/env bash
# Packs what the GPU machine lacks into one archive: `make gpu-pack` -> build/gpu/gpu-site.tar.xz.
#
# The GPU machine has Python 3.12, its own torch 2.11 (CUDA 13), transformers 5.x and numpy 2.x,
# and no package registry; the rest travels with the working tree, 64 MiB at most per call. So:
# every package pinned in gpu-constraints.txt, as CPython 3.12 manylinux x86_64 wheels, installed
# into one folder with --no-deps (the list is the whole set: torch must not come along), trimmed
# (tests, headers, pyarrow's Flight library), plus a dist-info holding this project's entry
# points (llm-foundry finds our callbacks through them; the code itself comes from the tree).
# scripts/gpu_check/run.sh unpacks it and puts it on PYTHONPATH.
#
#   scripts/gpu_check/pack.sh [OUT]        (default build/gpu/gpu-site.tar.xz)
#
# GPU_PINS: another pins file (default gpu-constraints.txt; the tests pack a few packages).
# The archive is checked before it is kept: at most LIMIT_MIB, and every pin and our entry
# points in it (scripts/gpu_check/report.py --check-site, the check the GPU machine runs).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
OUT=${1:-build/gpu/gpu-site.tar.xz}
PINS=${GPU_PINS:-gpu-constraints.txt}
export GPU_PINS=$PINS
if [[ ! -f $PINS ]] || ! grep -q '==' "$PINS"; then
    echo "gpu-pack: error: $PINS has no name==version pins (GPU_PINS)" >&2
    exit 2
fi
LIMIT_MIB=${GPU_PACK_LIMIT_MIB:-60}  # the call carries 64 MiB; the tree's own files need the rest

work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-pack.XXXXXX")
trap 'rm -rf "$work"' EXIT
site=$work/site

echo "gpu-pack: installing $(grep -c '==' "$PINS") pinned packages ($PINS) for CPython 3.12" \
     "manylinux x86_64"
# pip takes platform tags literally: name every manylinux level up to torch 2.11's (2.28).
platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64
           --platform manylinux2014_x86_64)
for minor in $(seq 17 28); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
"$PY" -m pip install --quiet --disable-pip-version-check --no-deps --no-compile \
    --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 \
    --abi none "${platforms[@]}" --target "$site" -r "$PINS" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)

before=$(du -sm "$site" | cut -f1)
# Nothing at run time needs these: console scripts (they name this machine's python; the check
# runs `python -m ...`), test suites, C headers and sources, Cython declarations, pyarrow's
# Arrow Flight (an RPC framework, ~1/4 of pyarrow) and C++ tests, Pillow's AVIF codec,
# zstandard's second (cffi) backend, and mlflow's index of PyPI (for logging models).
rm -rf "$site/bin" "$site/pyarrow/include" "$site/pyarrow/src" \
    "$site/mlflow/pypi_package_index.json"
find "$site" -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
if [[ -d $site/pyarrow ]]; then
    find "$site/pyarrow" \( -name '*.pxd' -o -name '*.pyx' -o -name '*.pxi' -o -name '*.h' \
         -o -name '*_flight.so*' -o -name '_flight.*.so' -o -name '_pyarrow_cpp_tests.*.so' \) \
         -delete
fi
rm -f "$site"/PIL/_avif.*.so "$site"/pillow.libs/libavif-* "$site"/zstandard/_cffi.*.so
# The oci SDK's 170+ service clients (240 of its 244 MB; `import oci` loads them lazily), each a
# folder with models/: our client uses object_storage; `import oci` needs work_requests (its
# waiter) and dns (its pagination); instance-principal sign-in calls identity.
for models in "$site"/oci/*/models; do
    [[ -d $models ]] || continue
    case $(basename "$(dirname "$models")") in
        object_storage|work_requests|dns|identity) ;;
        *) rm -rf "$(dirname "$models")" ;;
    esac
done
# Debug symbols: half of pyarrow's libarrow, most of zstd's and zstandard's modules (60 MB).
if command -v strip >/dev/null; then
    find "$site" -type f \( -name '*.so' -o -name '*.so.*' \) -print0 \
        | xargs -0 strip --strip-unneeded 2>/dev/null || true
else
    echo "gpu-pack: no strip (binutils): packing the libraries with their debug symbols"
fi

# This project's entry points (setup.py's), as installed metadata: a dist-info without code.
"$PY" - "$site" <<'EOF'
import os
import sys
from unittest import mock

import setuptools

with mock.patch.object(setuptools, 'setup') as setup:
    exec(open('setup.py').read(), {'__name__': '__main__', '__file__': 'setup.py'})
kw = setup.call_args.kwargs
info = os.path.join(sys.argv[1], f"{kw['name'].replace('-', '_')}-{kw['version']}.dist-info")
os.makedirs(info)
with open(os.path.join(info, 'METADATA'), 'w') as f:
    f.write(f"Metadata-Version: 2.1\nName: {kw['name']}\nVersion: {kw['version']}\n")
with open(os.path.join(info, 'entry_points.txt'), 'w') as f:
    for group, entries in kw['entry_points'].items():
        f.write(f'[{group}]\n' + ''.join(f'{e.replace(" ", "")}\n' for e in entries) + '\n')
EOF

# What the GPU machine checks first, checked here before anything is kept.
if ! "$PY" -m scripts.gpu_check.report --check-site "$site" >&2; then
    echo "gpu-pack: error: the packed folder lacks pins or entry points (above)" >&2
    exit 1
fi

mkdir -p "$(dirname "$OUT")"
tar -C "$site" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - . \
    | xz -T0 -6 > "$OUT.tmp"
size=$(stat -c %s "$OUT.tmp")
if (( size > LIMIT_MIB * 1024 * 1024 )); then
    echo "gpu-pack: error: $OUT would be $((size / 1024 / 1024)) MiB, over ${LIMIT_MIB} MiB" \
         "(trim more, or carry less in $PINS)" >&2
    rm -f "$OUT.tmp"
    exit 1
fi
mv "$OUT.tmp" "$OUT"
echo "gpu-pack: $OUT: $(awk "BEGIN{printf \"%.1f\", $size/1048576}") MiB" \
     "(installed ${before} MB, trimmed to $(du -sm "$site" | cut -f1) MB)"
