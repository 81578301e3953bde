"""Copy the latest generated tables into README.md (between `<!-- BEGIN name -->` markers).

    python scripts/update_readme.py        # after `make eval` / `make bench`

The README's numbers are never typed by hand: they come from docs/lab/results.md, docs/eval/results.md and
docs/bench/readme.md (the short version of docs/bench/bench.md) and docs/loadtest/loadtest.md, which
the evaluation, the benchmark and the load test write; the adapters.yaml example's `defaults:` come from
adapters.yaml itself.
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
    """The evaluation's tables describe the shipped pool only if it scored the adapters adapters.yaml lists: the
    same weights (`lab.pool_hash`, recorded by `logo_core.eval`), or, for a run that predates the record, the
    same names."""
    import json

    results = ROOT / "docs/eval/results.json"
    if not results.is_file():
        return False
    run = json.loads(results.read_text(encoding="utf-8"))
    cfg = _shipped()
    if "pool" in run:
        from logo_core.lab import pool_hash

        return run["pool"] == pool_hash(cfg)
    return run.get("adapters") == [a.name for a in cfg.adapters]


def _shipped():
    sys.path.insert(0, str(ROOT))
    from logo_core.registry import load_config

    return load_config(ROOT / "adapters.yaml")


def stale_note() -> str:
    """The line at the top of the evaluation's section while its tables are of another pool than the shipped one:
    they stay (the last measured), marked, until `make eval` renews them (it resumes across sessions)."""
    return (
        "> **Measured on the previous pool.** The adapters in `assets/adapters/` have been retrained since this "
        "evaluation ran (docs/pool.md); the routing lab above and docs/pool.md score the shipped pool, and `make eval` "
        "renews these tables (it resumes from docs/eval/answers/).\n\n"
    )


ROUTING = (  # what routes a prompt
    "signal",
    "calibrated",
    "calibration",
    "layer",
    "module",
    "probe_input",
    "pooling",
    "decorrelate",
    "token_weight",
    "token_layer",
    "token_pooling",
)


def eval_default_note() -> str:
    """A line for the top of the evaluation's section when it was run with another routing default than
    adapters.yaml's now ('' when they agree), so the README never calls an earlier default the shipped one."""
    import json

    import yaml

    then = json.loads((ROOT / "docs/eval/results.json").read_text(encoding="utf-8")).get("shipped_default", {})
    now = yaml.safe_load((ROOT / "adapters.yaml").read_text(encoding="utf-8")).get("defaults", {})
    norm = lambda d, k: ",".join(d[k]) if isinstance(d.get(k), list) else str(d.get(k))  # noqa: E731
    changed = [k for k in ROUTING if k in now and norm(then, k) != norm(now, k)]
    if not changed:
        return ""
    diff = ", ".join(f"{k} {norm(then, k)} -> {norm(now, k)}" for k in changed)
    return (
        f"> **Measured with the previous routing default.** adapters.yaml's default has changed since this "
        f"evaluation ran ({diff}); the routing lab above scores the new one on the same kind of prompts, and "
        f"`make eval` renews these tables.\n\n"
    )


def defaults_block(defaults: dict, indent: int = len("defaults: {"), width: int = 110) -> str:
    """adapters.yaml's `defaults:` as the README's one flow mapping (`defaults: {k: 1, ...}`), wrapped at `width`."""
    import json

    def value(v) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str) and re.search(r"[:,{}\[\]#]", v):
            return json.dumps(v)
        return str(v)

    items = [f"{k}: {value(v)}" for k, v in defaults.items()]
    lines, line = [], "defaults: {"
    for i, item in enumerate(items):
        piece = item + ("}" if i == len(items) - 1 else ",")
        if len(line) + 1 + len(piece) > width and not line.endswith("{"):
            lines.append(line)
            line = " " * (indent - 1)
        line += ("" if line.endswith("{") else " ") + piece
    return "\n".join([*lines, line])


def sync_defaults(text: str) -> str:
    """The README's adapters.yaml example with adapters.yaml's `defaults:` as they are now (the lab's --apply
    rewrites them)."""
    import yaml

    shipped = yaml.safe_load((ROOT / "adapters.yaml").read_text(encoding="utf-8"))["defaults"]
    pattern = re.compile(r"^defaults: \{.*?\}$", re.DOTALL | re.MULTILINE)
    return pattern.sub(lambda m: defaults_block(shipped), text, count=1)


def main() -> int:
    readme = ROOT / "README.md"
    text = sync_defaults(readme.read_text(encoding="utf-8"))
    for name, source in SECTIONS.items():
        if not source.is_file():
            print(f"skip {name}: {source} not found", file=sys.stderr)
            continue
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.DOTALL)
        if not pattern.search(text):
            print(f"README.md has no <!-- BEGIN {name} --> section", file=sys.stderr)
            return 1
        body = source.read_text(encoding="utf-8").strip()
        if name == "eval" and not eval_matches_pool():
            print("eval: docs/eval/results.json is of another pool than adapters.yaml's: marked", file=sys.stderr)
            body = stale_note() + body
        elif name == "eval":
            body = eval_default_note() + body
        # The README gives each section its own "##" heading: drop a report's title, demote its sections.
        body = re.sub(r"\A# .*\n+", "", body)
        body = re.sub(r"^## ", "### ", body, flags=re.MULTILINE)
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)
    readme.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
