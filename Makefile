# Composer recipes for fine-tuning on OCI. `make help` lists the targets.
SHELL := /bin/bash
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BUILD ?= build
SAMPLE_MB ?= 8
SAMPLE := $(BUILD)/c4_sample
TOKENIZER := $(BUILD)/tokenizer
YAML ?= yamls/cpu/c4_zstd.yaml
TRAIN_PROCS ?= 2  # make train: FSDP over this many CPU processes (the GPU recipes: one per GPU)
BENCH_MB ?= 1000
# Test processes (pytest-xdist), one test file each: most tests wait on servers, subprocesses
# and training start-up, so 3 keep 2 cores busy (whole suite ~1.7x faster than one process).
# Files go out in collection order, longest first (tests/conftest.py), not xdist's default
# of most tests first, which left the long one-test files (a training run each) for the end.
TEST_WORKERS ?= 3
PYTEST_XDIST = -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# The local OCI-compatible store (local_services/oci_store) is the default bucket offline.
STORE_DIR ?= .store/data
STORE_PORT ?= 9300
STORE_ENV := OCI_CLI_AUTH=api_key OCI_CLI_PROFILE=DEFAULT OCI_CONFIG_FILE=$(abspath $(STORE_DIR))/client/config \
             OCI_OBJECT_STORAGE_ENDPOINT=http://127.0.0.1:$(STORE_PORT)
# The local Hugging Face Hub stand-in (local_services/hf_hub): allenai/c4 `en` from the sample.
HUB_DIR ?= .hub/data
HUB_PORT ?= 9400
HUB_ARGS ?=
MDS_ROOT ?= oci://c4-bench@local/c4
REMOTE ?= $(MDS_ROOT)/zstd
# A remote given on the command line (oci://, s3://) is real: no local store, no shaping.
ifeq ($(origin REMOTE),command line)
  BENCH_ARGS += --remote $(REMOTE)
endif
ifneq ($(YAML),yamls/cpu/c4_zstd.yaml)
  BENCH_ARGS += --recipes $(dir $(YAML))
endif
USE_STORE = $(if $(findstring @local/,$(MDS_ROOT)/ $(REMOTE)/),store)
ENV = $(if $(USE_STORE),$(STORE_ENV))

.DEFAULT_GOAL := help
.PHONY: help install lint test test-fast sample tokenizer convert bench-convert verify train bench bench-start store store-stop bench-store hub hub-stop bench-hub slurm slurm-stop gpu-pack gpu-check dataflow-archive clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-17s %s\n", $$1, $$2}'

# uv installs the same pins as pip in about a third of the time (parallel downloads and bytecode
# compilation: 1 min 24 s against 3 min 14 s here, docs/benchmarks.md). uv reads no pip.conf:
# where only pip reaches the package index (a mirror set there), pip installs instead.
$(STAMP): setup.py constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q uv && $(VENV)/bin/uv pip install --python $(PY) --compile-bytecode \
	  -c constraints.txt -e '.[dev]' \
	  || $(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv and install the project with its test tools (once)

lint: $(STAMP)  ## ruff: lint and import order
	$(VENV)/bin/ruff check .

test: lint  ## lint, then the whole test suite (installs first if needed)
	$(PY) -m pytest tests $(PYTEST_XDIST)

test-fast: $(STAMP)  ## the quick part of the suite: no training runs, no slow end-to-end tests
	$(PY) -m pytest tests $(PYTEST_XDIST) -m "not slow and not e2e"

sample: $(STAMP)  ## write the offline C4-format sample (SAMPLE_MB=8)
	$(PY) -m data_prep.sample --out $(SAMPLE) --size-mb $(SAMPLE_MB)

tokenizer: sample  ## train the small offline BPE tokenizer on the sample into build/tokenizer
	@test -f $(TOKENIZER)/tokenizer.json || $(PY) -m data_prep.tokenizer --data-dir $(SAMPLE) --out $(TOKENIZER)

store: $(STAMP)  ## start the local OCI store in the background (127.0.0.1:9300, STORE_DIR=.store/data)
	@$(PY) -m local_services.oci_store start --data-dir $(STORE_DIR) --port $(STORE_PORT)

store-stop:  ## stop the local OCI store started by make store
	$(PY) -m local_services.oci_store stop --data-dir $(STORE_DIR)

hub: sample  ## start the local Hugging Face Hub in the background (allenai/c4 en from the sample; 127.0.0.1:9400)
	@$(PY) -m local_services.hf_hub start --data-dir $(HUB_DIR) --port $(HUB_PORT) --sample $(SAMPLE) $(HUB_ARGS)

hub-stop:  ## stop the local Hugging Face Hub started by make hub
	$(PY) -m local_services.hf_hub stop --data-dir $(HUB_DIR)

# convert_split SPLIT,VARIANT,COMPRESSION: one split of the sample into MDS_ROOT/VARIANT/SPLIT.
# The local store holds only sample conversions (make bench's from the local hub among them):
# --replace there; never in a real remote, where other inputs' dataset stops the run.
convert_split = $(ENV) $(PY) -m data_prep.convert --split $(1) --data-files '$(SAMPLE)/c4-$(1).*.json.gz' \
                --remote $(MDS_ROOT)/$(2) --compression $(3) $(if $(USE_STORE),--replace) $(CONVERT_ARGS)
convert: sample $(USE_STORE)  ## the sample's train and validation splits to MDS, raw and zstd, into MDS_ROOT (default: the local store; CONVERT_ARGS=...)
	@$(if $(USE_STORE),:,echo "convert: about to write the offline sample $(SAMPLE) \
	  ($$(ls $(SAMPLE)/c4-*.json.gz | wc -l) files, \
	  $$(du -cb $(SAMPLE)/c4-*.json.gz | tail -1 | awk '{printf "%.1f", $$1 / 1e6}') MB gzipped; not C4) \
	  into $(MDS_ROOT)/{uncompressed,zstd}/{train,validation}")
	$(call convert_split,train,uncompressed,none)
	$(call convert_split,train,zstd,zstd)
	$(call convert_split,validation,uncompressed,none)
	$(call convert_split,validation,zstd,zstd)
	@echo "datasets: $(MDS_ROOT)/{uncompressed,zstd}/{train,validation}"

verify: $(STAMP) $(USE_STORE)  ## check a dataset: shards, sizes, hashes, sample counts (REMOTE=oci://c4-bench@local/c4/zstd)
	$(ENV) $(PY) -m data_prep.verify $(REMOTE)

train: convert tokenizer  ## fine-tune with a recipe on the converted data, FSDP over 2 processes (YAML=..., TRAIN_PROCS=2)
	$(ENV) $(VENV)/bin/composer -n $(TRAIN_PROCS) train.py $(YAML)

bench: $(STAMP)  ## the six tests, loader headroom, zstd vs link speed, offline; the report (REMOTE=..., YAML=...)
	$(PY) -m scripts.bench.end_to_end $(BENCH_ARGS)

bench-start: $(STAMP) sample tokenizer  ## start-up at C4 size per shuffle setting: first batch, resume, memory (~20-40 min)
	$(PY) -m scripts.bench.start

bench-convert: $(STAMP)  ## text and tokens: ours vs the seed's loop, llm-foundry's converter, the per-core limits (BENCH_MB=1000; ~30 min)
	$(PY) -m scripts.bench.convert --size-mb $(BENCH_MB)

bench-hub: $(STAMP)  ## ours vs the seed's single stream, from a far-away hub (50 MB/s, 40 ms; BENCH_MB=192)
	$(PY) -m scripts.bench.hub --size-mb $(BENCH_MB)

dataflow-archive: $(STAMP)  ## OCI Data Flow's dependency archive: build/dataflow/archive.zip (TORCH=torch wheel or spec)
	$(PY) -m scripts.dataflow.archive --out $(BUILD)/dataflow $(if $(TORCH),--torch $(TORCH))

bench-store: $(STAMP)  ## GET throughput of the local OCI store on loopback (MB/s)
	$(PY) -m scripts.bench.store

# A one-host Slurm for trying scripts/slurm/train.sbatch here (tests/scripts/test_slurm_batch.py
# starts its own the same way). Root: installs Debian's slurm-wlm and munge when missing.
slurm:  ## start a one-host Slurm (root; installs slurm-wlm) in build/slurm and print its SLURM_CONF
	@scripts/slurm/local_cluster.sh start $(BUILD)/slurm

slurm-stop:  ## stop the one-host Slurm started by make slurm
	scripts/slurm/local_cluster.sh stop $(BUILD)/slurm

# The GPU machine's packages (docs/gpu_check.md): rebuilt when the pins or entry points change.
GPU_PACK := $(BUILD)/gpu/gpu-site.tar.xz
$(GPU_PACK): gpu-constraints.txt setup.py scripts/gpu_check/pack.sh | $(STAMP)
	PY=$(PY) scripts/gpu_check/pack.sh $@

gpu-pack: $(GPU_PACK)  ## pack what the GPU machine lacks for CPython 3.12 (build/gpu/gpu-site.tar.xz, <= 60 MiB)

# No dependency on the archive: on the GPU machine there is no registry to rebuild it from.
gpu-check:  ## on a GPU machine: unpack the archive, train MPT-1B and Qwen2, one table (--dry-run: GPU_CHECK_ARGS=--dry-run)
	scripts/gpu_check/run.sh $(GPU_CHECK_ARGS)

clean:  ## remove build outputs and results (keeps .venv and the store's data)
	rm -rf $(BUILD) results
