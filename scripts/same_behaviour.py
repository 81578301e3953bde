"""Record what the engine does on a fixed set of prompts, to compare two versions of the code.

Routes 30 example prompts of adapters.yaml's pool under a few settings (top-k and every score) and
generates greedily for a handful of them (text, and the stream's text). Run it once on each version
and diff the JSON files:

    PYTHONPATH=/tmp/before python scripts/same_behaviour.py --out /tmp/before.json
    python scripts/same_behaviour.py --out /tmp/after.json
    python scripts/same_behaviour.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    {},  # adapters.yaml's defaults
    {"k": 3, "calibrated": False},
    {"k": 3, "signal": "entropy", "probe_input": "module", "module": "q_proj,v_proj", "layer": "20:30"},
    {"k": 5, "layer": -1, "module": "q_proj"},
]


def record(config: Path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from logo_core.engine import LoGoEngine

    engine = LoGoEngine.from_config(config)
    prompts = [e for spec in engine.pool.specs for e in spec.examples][::3][:30]
    out = {"adapters": engine.adapters, "routes": [], "generations": []}
    for s in SETTINGS:
        for r in engine.route_batch(prompts, **s):
            out["routes"].append(
                {"prompt": r.prompt, "settings": s, "selected": r.selected, "weights": r.weights, "scores": r.scores}
            )
    for p in prompts[:6]:
        g = engine.generate(p, max_new_tokens=16)
        text = "".join(engine.stream(p, max_new_tokens=16))
        out["generations"].append({"prompt": p, "text": g.text, "stream": text, "selected": g.routing.selected})
    return out


def compare(a: dict, b: dict, tol: float = 1e-5) -> list[str]:
    bad = []
    if a["adapters"] != b["adapters"]:
        bad.append("pool differs")
    for x, y in zip(a["routes"], b["routes"], strict=True):
        if x["selected"] != y["selected"]:
            bad.append(f"top-k {x['settings']} {x['prompt']!r}: {x['selected']} vs {y['selected']}")
        for n, v in x["scores"].items():
            if not math.isclose(v, y["scores"][n], rel_tol=tol, abs_tol=1e-9):
                bad.append(f"score {n} {x['settings']} {x['prompt']!r}: {v} vs {y['scores'][n]}")
    for x, y in zip(a["generations"], b["generations"], strict=True):
        if x != y:
            bad.append(f"generation {x['prompt']!r}: {x} vs {y}")
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "adapters.yaml")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--compare", nargs=2, type=Path)
    a = ap.parse_args()
    if a.compare:
        bad = compare(*(json.loads(p.read_text()) for p in a.compare))
        n = len(json.loads(a.compare[0].read_text())["routes"])
        print("\n".join(bad[:20]) or f"same: {n} routings (top-k and scores) and every generation")
        sys.exit(1 if bad else 0)
    a.out.write_text(json.dumps(record(a.config), indent=1))


if __name__ == "__main__":
    main()
