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

.PHONY: help rig-build rig-up rig-up-cluster rig-image rig-down rig-status crds test test-rust test-py demo bench bench-pod lint deny fmt

help:
	@echo "targets: rig-build rig-up rig-up-cluster rig-image rig-down rig-status crds test test-rust test-py demo bench lint fmt"

rig-build:
	$(RIG) build

rig-up:
	$(RIG) up

# The rig plus a real node (kubelet, containerd, kube-proxy, controller-manager, scheduler): root only.
rig-up-cluster:
	$(RIG) up --cluster

# The operator image (cargo profile `image`) imported into the node's containerd as
# bpl-rig.local/bedrock-privatelink-operator:dev.
rig-image:
	$(RIG) image dev

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
# Both suites always run; the target fails if either did. With a node (make rig-up-cluster, as in
# CI) the operator image is rebuilt and imported first, for tests/incluster.rs: from the debug
# build by default (RIG_IMAGE_PROFILE=image for the optimized one, as `make demo` uses).
test: rig-up
	if [ -f .rig/cluster ]; then RIG_IMAGE_PROFILE=$${RIG_IMAGE_PROFILE:-dev} $(RIG) image dev >/dev/null; fi
	rc=0; $(MAKE) --no-print-directory test-rust || rc=1; \
	$(MAKE) --no-print-directory test-py || rc=1; exit $$rc

# Benches are a command (make bench), not tests: --all-targets would run them.
test-rust:
	set -a; source .rig/env; set +a; \
	cargo test --no-fail-fast --lib --bins --tests -- --test-threads=$(TEST_THREADS)

# pytest exits 5 when it collects nothing: that is not a failure of the rig.
test-py:
	set -a; source .rig/env; set +a; \
	if [ -d tests/emulator ]; then \
	  rc=0; $(VENV_PY) -m pytest -q tests/emulator || rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest: no tests collected in tests/emulator"; rc=0; fi; \
	  exit $$rc; \
	else echo "tests/emulator missing: python tests skipped"; fi

demo: rig-up-cluster
	bash scripts/demo.sh

# With a node (make rig-up-cluster) also the operator pod's memory under 1000 objects.
bench: rig-up
	bash scripts/bench.sh
	if [ -f .rig/cluster ]; then bash scripts/bench-pod.sh; \
	else echo "bench: the rig has no node (make rig-up-cluster): pod phase (scripts/bench-pod.sh) skipped"; fi

bench-pod: rig-up-cluster
	bash scripts/bench-pod.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	$(MAKE) --no-print-directory deny

# Licences, bans and sources of every crate in the tree (deny.toml). cargo-deny is installed
# from crates.io once and cached in ~/.cache/bpl-tools by tests/tools/build.sh.
deny:
	deny="$$(bash tests/tools/build.sh cargo-deny)"; \
	PATH="$$(dirname "$$deny"):$$PATH" cargo deny --all-features check licenses bans sources

fmt:
	cargo fmt --all
