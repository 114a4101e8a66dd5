# Every target creates the virtual environment it needs; `make all` is what CI runs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# What `make demo` needs and no more: the worker and moto (the `local` extra).
LOCAL_STAMP := $(VENV)/.installed-local

# Debian packages the tests use; installed when missing (sudo when not root).
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all test test-fast lint typecheck unit rules tools node-ric deploy-check helm-docs image-test demo \
	bench clean localstack test-localstack

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(LOCAL_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[local]'
	touch $@

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench docs/examples
	$(BIN)/ruff format --check worker tests bench docs/examples

typecheck: $(STAMP)
	$(BIN)/mypy

## Prometheus and promtool, from Debian: the alert rules are tested with promtool and a real
## Prometheus scrapes the worker in the end-to-end test. The package does not start a server.
tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }

rules: tools
	promtool check config config/prometheus.yml
	promtool check rules config/alerts.yml
	promtool test rules config/alerts_test.yml

## AWS's Node.js runtime interface client, for the test that runs a Node.js function unchanged
## (it builds native code: Debian's build tools are installed when missing).
node-ric:
	tests/node/setup-ric.sh

## The whole suite, in four processes (it mostly waits on brokers and subprocesses).
unit: $(STAMP) tools node-ric
	$(BIN)/pytest -n 4

## The pure-logic tests only: no broker, no subprocess; seconds, for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/pytest -m "not slow" -n 2

## What users deploy, validated offline: the Dockerfile (hadolint, checkov), the Helm chart
## (helm lint and template, kubernetes-validate, kubernetes-models, checkov) and the
## CloudFormation templates (cfn-lint, checkov), then the promises of the chart and the stacks
## (tests/deploy/, which the default test run leaves out). Tools are pinned and installed under
## .tools/.
deploy-check: $(STAMP)
	.ci/check-dockerfile
	.ci/check-helm
	.ci/check-cloudformation

## helm/README.md's values table, generated from the `# --` comments of helm/values.yaml
## (`make deploy-check` fails when the table is not the one they give).
helm-docs: $(STAMP)
	$(BIN)/python -m tests.deploy.helm_values --write

## The README's test command: lint, strict type check, alert rules, deployment artefacts, the
## whole test suite.
test: lint typecheck rules deploy-check unit

## LocalStack (SQS and SNS, host mode: no Docker) in a venv of its own under .tools/localstack,
## on a Python 3.13 that the script finds or installs; it fails, saying so, if there is none.
localstack:
	.ci/localstack-venv >/dev/null

## The broker-backed tests (those that use the `broker` fixture) again, on LocalStack instead of
## moto; the tests start it. Tests that would trip over a flaw of LocalStack's are skipped,
## naming it (tests/brokers.py). CI runs this after `make test`.
test-localstack: $(STAMP) localstack node-ric
	TEST_BROKER=localstack $(BIN)/pytest -m broker

## Build the image with buildah (no Docker engine) on a stand-in base, and run it against moto.
image-test: $(STAMP)
	.ci/image-test

## The README's demo command: the main job on the embedded local broker (moto), then the DLQ's redrive and
## reprocessing. It installs only what the demo needs, not the development tools.
demo: $(LOCAL_STAMP)
	$(BIN)/worker demo

## Figures, not tests: throughput against concurrency, next to the broker's ceiling.
## The benchmarks (docs/performance.md): every scenario, three rounds, and the table. Not part
## of `make test`: they take about forty minutes and want a quiet machine.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
