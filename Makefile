# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   create .venv, install, run the demo (results in runs/demo/)
#   make test   create/update .venv, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the pair this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
KSERVE_VENV := .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed

.PHONY: demo test test-all lint install clean bench grpc-stubs kserve-client docs

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependencies (pyproject.toml) or the pins (this Makefile) change.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[onnx,openvino,serve,grpc,ray,timm,hf,search,docs,dev]" $(TORCH)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/torchinfer demo --out runs/demo

test: $(STAMP) $(KSERVE_STAMP) lint
	$(BIN)/python -m pytest

# ruff on everything, mypy on the core packages (pyproject.toml says which)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts docs
	$(BIN)/mypy

# The documentation site in site/ (open site/index.html, or `mkdocs serve`); the test suite
# builds it too (tests/test_docs.py), so CI fails on a warning or a broken link
docs: $(STAMP)
	$(BIN)/python -m mkdocs build --strict

test-all: $(STAMP) $(KSERVE_STAMP)
	$(BIN)/python -m pytest -m ""

# KServe's own Python client, an oracle of the OIP server, in an environment of its own: it pins
# protobuf < 7, which the Ray of .venv cannot run beside (tests/kserve_client_run.py runs in it).
# Where it cannot be installed, make goes on and that test skips, saying so.
kserve-client: $(KSERVE_STAMP)
$(KSERVE_STAMP):
	$(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet "kserve==0.21.0" && touch $(KSERVE_STAMP) \
		|| { rm -rf $(KSERVE_VENV); echo "kserve could not be installed: its test will skip" >&2; }

# The gRPC messages of the Open Inference Protocol as Python, after an edit of the .proto:
# grpcio-tools' protoc from a throwaway folder, then the module given a descriptor pool of its
# own and no protobuf version check (scripts/finish_protobuf_module.py says why)
PROTO := src/torchinfer/serve/protocol
grpc-stubs: $(STAMP)
	rm -rf $(VENV)/grpc-tools
	$(BIN)/python -m pip install --quiet --no-deps --target $(VENV)/grpc-tools "grpcio-tools==1.85.4"
	PYTHONPATH=$(VENV)/grpc-tools $(BIN)/python -m grpc_tools.protoc -I $(PROTO) \
		--python_out=$(PROTO) $(PROTO)/oip_v2.proto
	$(BIN)/python scripts/finish_protobuf_module.py $(PROTO)/oip_v2_pb2.py

bench: $(STAMP)
	$(BIN)/python benchmarks/classify_folder.py

clean:
	rm -rf runs site .pytest_cache
