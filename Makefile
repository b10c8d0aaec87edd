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
MDS_ROOT ?= $(BUILD)/mds
BENCH_MB ?= 96
REMOTE ?= $(MDS_ROOT)/c4_zstd

.DEFAULT_GOAL := help
.PHONY: help install test sample tokenizer convert bench-convert verify train bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): setup.py constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $@

install: $(STAMP)  ## create .venv and install the project with its test tools (once)

test: $(STAMP)  ## run the test suite (installs first if needed)
	$(PY) -m pytest tests -q; rc=$$?; [ $$rc -eq 5 ] && echo "no tests collected" && exit 0; exit $$rc

sample: $(STAMP)  ## write the offline C4-format sample (SAMPLE_MB=8)
	$(PY) -m data_prep.sample --out $(SAMPLE) --size-mb $(SAMPLE_MB)

tokenizer: $(STAMP)  ## train the small offline BPE tokenizer into build/tokenizer
	$(PY) -m data_prep.tokenizer --data-dir $(SAMPLE) --out $(TOKENIZER)

convert: sample  ## convert the sample to MDS, raw and zstd (MDS_ROOT=build/mds, or s3://.., oci://..)
	$(PY) -m data_prep.convert --data-files '$(SAMPLE)/c4-train.*.json.gz' --remote $(MDS_ROOT)/c4_uncompressed --compression none
	$(PY) -m data_prep.convert --data-files '$(SAMPLE)/c4-train.*.json.gz' --remote $(MDS_ROOT)/c4_zstd --compression zstd
	@echo "datasets: $(MDS_ROOT)/c4_uncompressed/train  $(MDS_ROOT)/c4_zstd/train"

bench-convert: $(STAMP)  ## ours vs the seed's one-loop conversion vs the per-core limit (BENCH_MB=96)
	$(PY) scripts/bench_convert.py --size-mb $(BENCH_MB)

verify: $(STAMP)  ## check a dataset: shards, sizes, hashes, sample counts (REMOTE=build/mds/c4_zstd)
	$(PY) -m data_prep.verify $(REMOTE)

train: convert tokenizer  ## fine-tune with a recipe (YAML=yamls/cpu/c4_zstd.yaml)
	$(VENV)/bin/composer train.py $(YAML)

bench: convert tokenizer  ## the six tests end to end, offline, then the report
	$(PY) scripts/bench.py

STORE_DIR ?= .store/data
.PHONY: store store-stop bench-store

store: $(STAMP)  ## start the local OCI store in the background (127.0.0.1:9300, STORE_DIR=.store/data)
	$(PY) -m data_prep.local_store start --data-dir $(STORE_DIR)

store-stop:  ## stop the local OCI store started by make store
	$(PY) -m data_prep.local_store stop --data-dir $(STORE_DIR)

bench-store: $(STAMP)  ## GET throughput of the local OCI store on loopback (MB/s)
	$(PY) scripts/bench_store.py

clean:  ## remove build outputs and results (keeps .venv)
	rm -rf $(BUILD) results
