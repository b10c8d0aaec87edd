#!/usr/bin/env bash
# The GPU check: FSDP fine-tuning steps with our callbacks on one GPU, in one call
# (docs/gpu_check.md).
#
#   scripts/gpu_check/run.sh [--dry-run]      (make gpu-check; make gpu-pack first, here)
#
# 1. unpacks build/gpu/gpu-site.tar.xz (make gpu-pack: the packages the GPU machine lacks, for
#    CPython 3.12) and puts it on PYTHONPATH after the repository;
# 2. builds the offline sample, a tokenizer (with the transformers that trains) and a zstd token
#    dataset in a local folder (python -m data_prep.sample / .tokenizer / .convert), and starts
#    the local OCI store (python -m local_services.oci_store start) for the checkpoints;
# 3. trains with `python -m composer.cli -n 1 train.py` (train.py keeps FSDP at world size 1),
#    each run with our four callbacks, in this order (a group is chosen with GPU_CHECK_ONLY):
#    ckpt:  yamls/gpu_check/qwen2_fsdp.yaml (8 of 28 layers, the 7B recipes' FSDP settings) to
#           30 steps, sharded checkpoints at 20 and 30 into oci://gpu-check@local/ (the local
#           file system if our Composer object store is not there), then again from the step-20
#           checkpoint to 30: losses of steps 21-30 against the uninterrupted run;
#    mpt:   yamls/gpu_check/mpt_1b.yaml (MPT-1B shape, attn_impl sdpa) at microbatch 8, 12, 4;
#    qwen2: yamls/gpu_check/qwen2_fsdp.yaml, all 28 layers, no activation checkpointing, no
#           checkpoint: MFU of the Qwen2.5-1.5B shape, with the recipes' FSDP2 and again with
#           FSDP1 (fsdp_config.version=1), side by side;
# 4. prints one table (scripts/gpu_check/report.py): every run beside llm-foundry's published
#    rows, the checkpoints' save and load seconds and MB/s (from the store's request log), FSDP
#    seen in each log, the losses after resume; copies reports and logs to $OUT.
#
# --dry-run does all of it except the training: every file and the archive are checked, the data
#   is built, the store started and a file sent through Composer's object store for oci:// and
#   read back, each run's recipe with its overrides goes through train.py's checks, and the
#   training commands are printed, not run. With a python other than 3.12 the archive is
#   unpacked and checked but not put on PYTHONPATH (its compiled modules are for 3.12).
# A run that fails does not stop the others; the exit status is 1 if any failed.
#
# Environment: PYTHON (python3), OUT (build/gpu_check/out), GPU_CHECK_DIR (build/gpu_check),
#   GPU_CHECK_ARCHIVE (build/gpu/gpu-site.tar.xz), GPU_CHECK_SAMPLE_MB (12: ~2.8M tokens),
#   GPU_CHECK_RUN_TIMEOUT (seconds per training run, 200), GPU_CHECK_DEADLINE (450: no run
#   starts, or runs on, past it, so the table is printed within the call), GPU_CHECK_ONLY (a
#   comma list of ckpt, mpt, qwen2; default all three), MPT_MICROBATCHES ("8 12 4"),
#   QWEN2_MICROBATCH (checkpoint runs, 4), QWEN2_MFU_MICROBATCH (28-layer run, 4),
#   QWEN2_CKPT_LAYERS (8), GPU_CHECK_STORE_PORT (9300), QWEN2_OVERRIDES (added to every Qwen2 run).
set -euo pipefail
cd "$(dirname "$0")/../.."
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
ONLY=,${GPU_CHECK_ONLY:-ckpt,mpt,qwen2},
STORE_PORT=${GPU_CHECK_STORE_PORT:-9300}
DATA=$WORK/data
STORE=$WORK/store
RUNS=$WORK/runs
SITE=$WORK/site

say() { echo "[gpu-check +${SECONDS}s] $*"; }
die() { echo "gpu_check: error: $*" >&2; exit 2; }

# Every file the call needs, checked before anything is spent on it.
for f in train.py "$ARCHIVE" scripts/gpu_check/report.py yamls/gpu_check/mpt_1b.yaml \
         yamls/gpu_check/qwen2_fsdp.yaml yamls/gpu_check/qwen2_1.5b/config.json; do
    [[ -f $f ]] || die "$f is missing (the archive: make gpu-pack here, and carry build/gpu)"
done
[[ $ONLY =~ ^,((ckpt|mpt|qwen2),)+$ ]] || die "GPU_CHECK_ONLY must be a comma list of ckpt, mpt, qwen2"
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
"$PYTHON" -m scripts.gpu_check.report --check-site "$SITE" $( ((DRY)) || echo --need-gpu)

# 2. data: the same commands as `make sample tokenizer` and a conversion into a local folder
"$PYTHON" -m local_services.oci_store stop --data-dir "$STORE" >/dev/null 2>&1 || true
rm -rf "$DATA" "$WORK/cache" "$WORK/checkpoints" "$RUNS" "$WORK/planned_runs.txt" "$STORE"
say "sample, tokenizer, zstd token dataset in $DATA"
"$PYTHON" -m data_prep.sample --out "$DATA/sample" --size-mb "$SAMPLE_MB"
"$PYTHON" -m data_prep.tokenizer --data-dir "$DATA/sample" --out "$DATA/tokenizer"
"$PYTHON" -m data_prep.convert --data-files "$DATA/sample/c4-train.*.json.gz" \
    --remote "$DATA/mds" --compression zstd --format tokens --tokenizer "$DATA/tokenizer" \
    --concat-tokens 2048 --no-progress

# The local OCI store for the checkpoints (16 cores and a local disk on the GPU machine), and
# whether oci:// reaches it through our Composer object store: else a local folder.
say "local OCI store in $STORE (port $STORE_PORT)"
store_out=$("$PYTHON" -m local_services.oci_store start --data-dir "$STORE" \
            --port "$STORE_PORT" --bucket gpu-check 2>&1) \
    || die "the local OCI store did not start: ${store_out##*$'\n'}"
eval "$(grep '^export ' <<< "$store_out")"
stop_store() { "$PYTHON" -m local_services.oci_store stop --data-dir "$STORE" >/dev/null 2>&1 || true; }
trap stop_store EXIT
CKPT=oci://gpu-check@local/checkpoints
if ! "$PYTHON" -m scripts.gpu_check.report --check-store "$CKPT/probe"; then
    CKPT=$WORK/checkpoints
    say "oci:// checkpoints need our Composer object store (data_prep's); saving to $CKPT"
fi

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
if [[ $ONLY == *,ckpt,* ]]; then
    # The 7B recipes' FSDP settings (init_device mixed, PURE, activation checkpointing,
    # sharded state dict) on Qwen2 cut to 8 layers: a 7.3 GB checkpoint (fp32 weights and Adam
    # state) saved twice and loaded once fits the call; 28 layers would be 18.5 GB each.
    # Losses printed every step (console) for the comparison after resume.
    ckpt=(model.config_overrides.num_hidden_layers="${QWEN2_CKPT_LAYERS:-8}"
          device_train_microbatch_size="${QWEN2_MICROBATCH:-4}"
          device_eval_batch_size="${QWEN2_MICROBATCH:-4}" console_log_interval=1ba
          max_duration=30ba ${QWEN2_OVERRIDES:-})
    run qwen2_fsdp_to_30ba yamls/gpu_check/qwen2_fsdp.yaml "${ckpt[@]}" \
        save_folder="$CKPT/gpu-check-qwen2" save_interval=20ba save_num_checkpoints_to_keep=-1
    run qwen2_resume_from_20ba yamls/gpu_check/qwen2_fsdp.yaml "${ckpt[@]}" \
        run_name=gpu-check-qwen2-resume save_folder=null autoresume=false \
        load_path="$CKPT/gpu-check-qwen2/ep0-ba20"
fi
if [[ $ONLY == *,mpt,* ]]; then
    for mb in ${MPT_MICROBATCHES:-8 12 4}; do
        run "mpt_1b_mb$mb" yamls/gpu_check/mpt_1b.yaml run_name="gpu-check-mpt-1b-mb$mb" \
            device_train_microbatch_size="$mb" device_eval_batch_size="$mb"
    done
fi
if [[ $ONLY == *,qwen2,* ]]; then
    for version in 2 1; do  # the recipes' FSDP2, then FSDP1: the same run otherwise
        run "qwen2_28l_fsdp$version" yamls/gpu_check/qwen2_fsdp.yaml \
            run_name="gpu-check-qwen2-28l-fsdp$version" fsdp_config.version="$version" \
            save_folder=null autoresume=false fsdp_config.activation_checkpointing=false \
            device_train_microbatch_size="${QWEN2_MFU_MICROBATCH:-4}" \
            device_eval_batch_size="${QWEN2_MFU_MICROBATCH:-4}" max_duration=12ba \
            ${QWEN2_OVERRIDES:-}
    done
fi

if (( DRY )); then
    "$PYTHON" -m scripts.gpu_check.report --check-recipes "$WORK/planned_runs.txt" \
        || failed+=(recipes)
fi

# 4. the table, last
say "reports and logs in $OUT${failed[*]:+; failed: ${failed[*]}}"
"$PYTHON" -m scripts.gpu_check.report --runs "$RUNS" --out "$OUT" --logs "$OUT" \
    --store-log "$STORE/run/requests.jsonl" --checkpoints "$CKPT" $( ((DRY)) && echo --dry-run)
(( ${#failed[@]} == 0 ))
