"""Copy the latest generated tables into README.md (between `<!-- BEGIN name -->` markers).

    python scripts/update_readme.py        # after `make eval` / `make bench`

The README's numbers are never typed by hand: they come from docs/lab/results.md, docs/eval/results.md and
docs/bench/readme.md (the short version of docs/bench/bench.md) and docs/loadtest/loadtest.md, which
the evaluation, the benchmark and the load test write.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The benchmark writes a short version for the README (docs/bench/readme.md) beside its full tables.
SECTIONS = {
    "lab": ROOT / "docs/lab/results.md",
    "eval": ROOT / "docs/eval/results.md",
    "bench": ROOT / "docs/bench/readme.md",
    "loadtest": ROOT / "docs/loadtest/loadtest.md",
}


def eval_matches_pool() -> bool:
    """The evaluation's tables describe the shipped pool only if it scored the adapters adapters.yaml lists."""
    import json

    import yaml

    results = ROOT / "docs/eval/results.json"
    if not results.is_file():
        return False
    pool = [a["name"] for a in yaml.safe_load((ROOT / "adapters.yaml").read_text(encoding="utf-8"))["adapters"]]
    return json.loads(results.read_text(encoding="utf-8")).get("adapters") == pool


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, source in SECTIONS.items():
        if not source.is_file():
            print(f"skip {name}: {source} not found", file=sys.stderr)
            continue
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.DOTALL)
        if not pattern.search(text):
            print(f"README.md has no <!-- BEGIN {name} --> section", file=sys.stderr)
            return 1
        if name == "eval" and not eval_matches_pool():
            print("skip eval: docs/eval/results.json is of another pool than adapters.yaml's", file=sys.stderr)
            continue
        body = source.read_text(encoding="utf-8").strip()
        # The README gives each section its own "##" heading: drop a report's title, demote its sections.
        body = re.sub(r"\A# .*\n+", "", body)
        body = re.sub(r"^## ", "### ", body, flags=re.MULTILINE)
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
