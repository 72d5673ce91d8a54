# Two commands do everything on a fresh machine with Python 3.11:
#   make demo   create .venv, install, run the demo (results in runs/demo/)
#   make test   create/update .venv, run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to the pair this project is tested with.
TORCH := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint install clean bench grpc-stubs

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the dependencies (pyproject.toml) or the pins (this Makefile) change.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[onnx,openvino,serve,grpc,ray,timm,hf,search,dev]" $(TORCH)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/torchinfer demo --out runs/demo

test: $(STAMP) lint
	$(BIN)/python -m pytest

# ruff on everything, mypy on the core packages (pyproject.toml says which)
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

test-all: $(STAMP)
	$(BIN)/python -m pytest -m ""

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
	rm -rf runs .pytest_cache
