# Two entry points: `make demo` (train on the bundled corpus, then generate) and `make test`.
# Both create .venv with the project installed from pyproject.toml; nothing is installed by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plot,mpi]'
	touch $(STAMP)

.PHONY: install demo test test-interop bench clean
install: $(STAMP)

demo: $(STAMP)
	$(PY) cli.py train --max-time 300 --checkpoint-dir checkpoints/demo --overwrite
	$(PY) cli.py generate "ROMEO:" --checkpoint checkpoints/demo --max-new-tokens 300

test: $(STAMP)
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || echo "note: chromium could not be installed; tests/test_serve_browser.py will skip"
	$(PY) -m ruff check --no-cache .
	$(PY) -m pytest -q -p no:cacheprovider --durations=30 tests

# the transformers round trips of tests/test_hf_interop.py (and bench/gpt2.py's PyTorch side): torch==2.13.0 is the
# CPU wheel; tests/test_muon.py's PyTorch Muon runs once beside them. The round trips run twice: with the newest
# transformers the interop extra allows, then with the oldest (TRANSFORMERS_OLDEST and the tokenizers /
# huggingface_hub it needs, put in front of the venv's by PYTHONPATH).
# tests/test_lm_eval.py runs lm-evaluation-harness (the evalharness extra: lm-eval[api], which needs no torch) against
# `cli.py serve`.
# `make test` runs without torch, transformers or lm-eval and skips these tests, saying so; here a missing one fails.
TRANSFORMERS_OLDEST := transformers==4.40.2 tokenizers==0.19.1 huggingface_hub==0.23.5
OLDEST_DIR := $(VENV)/transformers-oldest
test-interop: $(STAMP)
	$(PY) -m pip install -q -e '.[interop,evalharness]'
	CLLM_INTEROP_REQUIRED=1 CLLM_EXPECT_TRANSFORMERS=$$($(PY) -c 'import transformers; print(transformers.__version__)') \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_hf_interop.py tests/test_muon.py tests/test_lm_eval.py
	$(PY) -m pip install -q --no-deps --upgrade --target $(OLDEST_DIR) $(TRANSFORMERS_OLDEST)
	PYTHONPATH=$(OLDEST_DIR) CLLM_INTEROP_REQUIRED=1 CLLM_EXPECT_TRANSFORMERS=4.40.2 \
		$(PY) -m pytest -q -p no:cacheprovider tests/test_hf_interop.py

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/step.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
