# Developer and CI entry points. The rig (etcd + kube-apiserver + EC2 emulator on 127.0.0.1) is
# scripts/rig; see docs/CONTRACTS.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

RIG := scripts/rig
VENV_PY := $(HOME)/.cache/bpl-rig/venv/bin/python
TEST_THREADS ?= 4
CHART_CRDS := charts/bedrock-privatelink-operator/crds

# CI caches the Rust target dir under ~/.cache; developers keep their own unless they set it.
ifeq ($(CI),true)
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bpl-target
endif

.PHONY: help rig-build rig-up rig-down rig-status crds test test-rust test-py demo bench lint fmt

help:
	@echo "targets: rig-build rig-up rig-down rig-status crds test test-rust test-py demo bench lint fmt"

rig-build:
	$(RIG) build

rig-up:
	$(RIG) up

rig-down:
	$(RIG) down

rig-status:
	$(RIG) status

# One file per CRD: the namespaced BedrockPrivateLink and the cluster-scoped grant (tenancy).
crds:
	mkdir -p crds
	cargo run -q -- crd bedrockprivatelinks > crds/bedrockprivatelink.yaml.tmp
	mv crds/bedrockprivatelink.yaml.tmp crds/bedrockprivatelink.yaml
	cargo run -q -- crd bedrockprivatelinkgrants > crds/bedrockprivatelinkgrant.yaml.tmp
	mv crds/bedrockprivatelinkgrant.yaml.tmp crds/bedrockprivatelinkgrant.yaml
	if [ -d $(CHART_CRDS) ]; then cp crds/bedrockprivatelink.yaml crds/bedrockprivatelinkgrant.yaml $(CHART_CRDS)/; fi

# Brings the rig up if it is not running (scripts/rig up is idempotent), then runs both suites.
# Both suites always run; the target fails if either did.
test: rig-up
	rc=0; $(MAKE) --no-print-directory test-rust || rc=1; \
	$(MAKE) --no-print-directory test-py || rc=1; exit $$rc

# Benches are a command (make bench), not tests: --all-targets would run them.
test-rust:
	set -a; source .rig/env; set +a; \
	cargo test --lib --bins --tests -- --test-threads=$(TEST_THREADS)

# pytest exits 5 when it collects nothing: that is not a failure of the rig.
test-py:
	set -a; source .rig/env; set +a; \
	if [ -d tests/emulator ]; then \
	  rc=0; $(VENV_PY) -m pytest -q tests/emulator || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected in tests/emulator"; rc=0; fi; \
	  exit $$rc; \
	else echo "tests/emulator missing: python tests skipped"; fi

demo: rig-up
	bash scripts/demo.sh

bench: rig-up
	bash scripts/bench.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

fmt:
	cargo fmt --all
