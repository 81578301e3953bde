#!/usr/bin/env bash
# Gather what the device benchmark needs on a GPU machine that has PyTorch but neither this project's
# other Python dependencies (versions as installed here) nor the embedded model:
#
#     scripts/prepare_gpu_bench.sh [.gpu_bench]     # wheels in .gpu_bench/whl, SmolLM2's tokenizer in .gpu_bench/tokenizer
#
# then, on the GPU machine, from the repository root (the folder travels with the working tree):
#
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_bench/whl/*.whl
#     PYTHONPATH=/tmp/site:. python3 -m logo_core.bench --device cuda --shape llama-8b --tokenizer .gpu_bench/tokenizer
set -euo pipefail
dest=${1:-.gpu_bench}
mkdir -p "$dest/whl" "$dest/tokenizer"
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest/whl" "transformers==$(version transformers)" "peft==$(version peft)" "pydantic==$(version pydantic)" \
  "pydantic_core==$(version pydantic_core)" "regex==$(version regex)" "typing_extensions==$(version typing_extensions)" \
  annotated-types typing-inspection
python3 - "$dest/tokenizer" <<'PY'
import sys

from logo_core.bench.synthetic import smollm2_tokenizer

smollm2_tokenizer().save_pretrained(sys.argv[1])
PY
du -sh "$dest"
