# modelstack: `make demo` (set up, train, prep, render, pulumi up, predict) and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/.venv/bin:$(PATH)
# Local file backend: the passphrase only guards secrets in .pulumi-state on this machine.
export PULUMI_CONFIG_PASSPHRASE ?= modelstack-local
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING := true
export PULUMI_HOME ?= $(CURDIR)/.tools/pulumi-home

STACK_DIR := stacks/digits
STACK := dev
PYTEST_ARGS ?=

.PHONY: help setup demo cnn test destroy clean
help:
	@echo "make demo     set up what is missing, then train, prep, render and pulumi up the digits model"
	@echo "make test     set up what is missing, then run the whole test suite"
	@echo "make cnn      train and prep the second example (stacks/digits-cnn)"
	@echo "make destroy  pulumi destroy the demo stack"

setup:
	bash scripts/setup.sh

$(STACK_DIR)/model/digits.keras:
	python -m modelprep.examples.digits $(STACK_DIR)

# The second example: a CNN on the digits upsampled to 32x32 (make cnn, then pulumi up in stacks/digits-cnn).
stacks/digits-cnn/model/digits_cnn.keras:
	python -m modelprep.examples.digits_cnn stacks/digits-cnn

cnn: setup stacks/digits-cnn/model/digits_cnn.keras
	modelstack prep stacks/digits-cnn/model.yaml

demo: setup $(STACK_DIR)/model/digits.keras
	modelstack validate $(STACK_DIR)/model.yaml
	modelstack prep $(STACK_DIR)/model.yaml
	modelstack render $(STACK_DIR)/model.yaml -o build/$(notdir $(STACK_DIR))-context
	cd $(STACK_DIR)
	pulumi stack select --create $(STACK) >/dev/null
	pulumi up --yes --skip-preview --suppress-progress
	pulumi stack output endpoint
	cd $(CURDIR)
	modelstack predict $(STACK_DIR)/model.yaml --index 0

test: setup
	python -m pytest $(PYTEST_ARGS)

destroy:
	cd $(STACK_DIR) && pulumi stack select $(STACK) && pulumi destroy --yes --suppress-progress

clean: destroy
	rm -rf build
