#!/usr/bin/env bash
# The GPU check: FSDP fine-tuning steps with our callbacks on one GPU, in one call
# (docs/gpu_check.md).
#
#   scripts/gpu_check.sh [--dry-run]      (make gpu-check; make gpu-pack first, here)
#
# 1. unpacks build/gpu/gpu-site.tar.xz (make gpu-pack: the packages the GPU machine lacks, for
#    CPython 3.12) and puts it on PYTHONPATH after the repository;
# 2. builds the offline sample, a tokenizer (with the transformers that trains) and a zstd token
#    dataset in a local folder (python -m data_prep.sample / .tokenizer / .convert);
# 3. trains with `python -m composer.cli -n 1 train.py`, each run with our four callbacks:
#    yamls/gpu_check/mpt_1b.yaml (40 steps), then yamls/gpu_check/qwen2_fsdp.yaml to 20 steps (a
#    sharded checkpoint) and again to 30, resuming from it;
# 4. prints one table (scripts/gpu_check_report.py) and copies the run reports and logs to $OUT.
#
# --dry-run does all of it except the training: every file and the archive are checked, the data
#   is built, each run's recipe with its overrides goes through train.py's checks, and the
#   training commands are printed, not run. With a python other than 3.12 the archive is unpacked
#   and checked but not put on PYTHONPATH (its compiled modules are for 3.12).
# A run that fails does not stop the others; the exit status is 1 if any failed.
#
# Environment: PYTHON (python3), OUT (build/gpu_check/out), GPU_CHECK_DIR (build/gpu_check),
#   GPU_CHECK_ARCHIVE (build/gpu/gpu-site.tar.xz), GPU_CHECK_SAMPLE_MB (12: ~2.8M tokens),
#   GPU_CHECK_RUN_TIMEOUT (seconds per training run, 200), GPU_CHECK_DEADLINE (450: no run
#   starts, or runs on, past it, so the table is printed within the call), GPU_CHECK_ONLY (mpt or
#   qwen2: one model), MPT_MICROBATCH / QWEN2_MICROBATCH (device_train_microbatch_size: 2 / 4).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRY=0
for arg in "$@"; do
    case $arg in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: error: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

PYTHON=${PYTHON:-python3}
WORK=${GPU_CHECK_DIR:-build/gpu_check}
OUT=${OUT:-$WORK/out}
ARCHIVE=${GPU_CHECK_ARCHIVE:-build/gpu/gpu-site.tar.xz}
SAMPLE_MB=${GPU_CHECK_SAMPLE_MB:-12}
RUN_TIMEOUT=${GPU_CHECK_RUN_TIMEOUT:-200}
DEADLINE=${GPU_CHECK_DEADLINE:-450}  # seconds: the device call allows 8 minutes, unpacking included
ONLY=${GPU_CHECK_ONLY:-}
DATA=$WORK/data
RUNS=$WORK/runs
SITE=$WORK/site

say() { echo "[gpu-check +${SECONDS}s] $*"; }
die() { echo "gpu_check: error: $*" >&2; exit 2; }

# Every file the call needs, checked before anything is spent on it.
for f in train.py "$ARCHIVE" scripts/gpu_check_report.py yamls/gpu_check/mpt_1b.yaml \
         yamls/gpu_check/qwen2_fsdp.yaml yamls/gpu_check/qwen2_1.5b/config.json; do
    [[ -f $f ]] || die "$f is missing (the archive: make gpu-pack here, and carry build/gpu)"
done
[[ -z $ONLY || $ONLY == mpt || $ONLY == qwen2 ]] || die "GPU_CHECK_ONLY must be mpt or qwen2"
command -v "$PYTHON" >/dev/null || die "no $PYTHON"
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1

# 1. the carried packages
say "unpacking $ARCHIVE ($(awk "BEGIN{printf \"%.1f\", $(stat -c %s "$ARCHIVE")/1048576}") MiB)"
rm -rf "$SITE" && mkdir -p "$SITE"
tar -C "$SITE" -xJf "$ARCHIVE"
pyver=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $pyver == 3.12 ]]; then
    export PYTHONPATH="$ROOT:$(cd "$SITE" && pwd)${PYTHONPATH:+:$PYTHONPATH}"
elif (( DRY )); then
    say "python $pyver: the archive is for 3.12, so this dry run uses $PYTHON's own packages"
    export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
else
    die "$PYTHON is Python $pyver; the carried packages are for 3.12"
fi
"$PYTHON" scripts/gpu_check_report.py --check-site "$SITE" $( ((DRY)) || echo --need-gpu)

# 2. data: the same commands as `make sample tokenizer` and a conversion into a local folder
rm -rf "$DATA" "$WORK/cache" "$WORK/checkpoints" "$RUNS" "$WORK/planned_runs.txt"
say "sample, tokenizer, zstd token dataset in $DATA"
"$PYTHON" -m data_prep.sample --out "$DATA/sample" --size-mb "$SAMPLE_MB"
"$PYTHON" -m data_prep.tokenizer --data-dir "$DATA/sample" --out "$DATA/tokenizer"
"$PYTHON" -m data_prep.convert --data-files "$DATA/sample/c4-train.*.json.gz" \
    --remote "$DATA/mds" --compression zstd --format tokens --tokenizer "$DATA/tokenizer" \
    --concat-tokens 2048 --no-progress

# 3. training runs
paths=(variables.data_remote="$DATA/mds" variables.tokenizer="$DATA/tokenizer")
failed=()
run() {  # run NAME YAML OVERRIDES...: one `python -m composer.cli -n 1 train.py` run
    local name=$1 yaml=$2; shift 2
    local cmd=("$PYTHON" -m composer.cli -n 1 train.py "$yaml" "${paths[@]}"
               variables.data_local="$WORK/cache/$name"
               callbacks.run_report.folder="$RUNS/$name" "$@")
    if (( DRY )); then  # checked together below: one python start instead of one a run
        say "dry run: would run: ${cmd[*]}"
        printf '%q ' "${cmd[@]:6}" >> "$WORK/planned_runs.txt" && echo >> "$WORK/planned_runs.txt"
        return 0
    fi
    local limit=$(( DEADLINE - SECONDS - 20 ))
    (( limit < RUN_TIMEOUT )) || limit=$RUN_TIMEOUT
    if (( limit < 60 )); then
        failed+=("$name")
        say "run $name: SKIPPED, ${limit}s left before the ${DEADLINE}s deadline"
        return 0
    fi
    say "run $name (at most ${limit}s): ${cmd[*]}"
    local rc=0
    # timeout signals the whole process group: the launcher, its rank and the loader workers
    timeout --kill-after=15 "$limit" "${cmd[@]}" > "$OUT/$name.log" 2>&1 || rc=$?
    tail -n 5 "$OUT/$name.log"
    if (( rc )); then
        failed+=("$name")
        local why="exit $rc$( ((rc == 124)) && echo ", over ${limit}s")"
        say "run $name: FAILED ($why): $OUT/$name.log"
    else
        say "run $name: done"
    fi
}
if [[ $ONLY != qwen2 ]]; then
    run mpt_1b yamls/gpu_check/mpt_1b.yaml \
        device_train_microbatch_size="${MPT_MICROBATCH:-2}" \
        device_eval_batch_size="${MPT_MICROBATCH:-2}"
fi
if [[ $ONLY != mpt ]]; then
    # One GPU: llm-foundry drops fsdp_config at world size 1 ("Reverting to DDP"), and
    # init_device mixed needs FSDP, so the model is built on the CPU (seen on an H100).
    qwen=(save_folder="$WORK/checkpoints/gpu-check-qwen2"
          device_train_microbatch_size="${QWEN2_MICROBATCH:-4}"
          device_eval_batch_size="${QWEN2_MICROBATCH:-4}" model.init_device=cpu
          ${QWEN2_OVERRIDES:-})
    run qwen2_to_20ba yamls/gpu_check/qwen2_fsdp.yaml "${qwen[@]}" max_duration=20ba
    run qwen2_resume_to_30ba yamls/gpu_check/qwen2_fsdp.yaml "${qwen[@]}" max_duration=30ba
fi

if (( DRY )); then
    "$PYTHON" scripts/gpu_check_report.py --check-recipes "$WORK/planned_runs.txt" \
        || failed+=(recipes)
fi

# 4. the table, last
ls -d "$WORK"/checkpoints/*/* 2>/dev/null | sed 's/^/checkpoint: /' || true
say "reports and logs in $OUT${failed[*]:+; failed: ${failed[*]}}"
"$PYTHON" scripts/gpu_check_report.py --runs "$RUNS" --out "$OUT" $( ((DRY)) && echo --dry-run)
(( ${#failed[@]} == 0 ))
