"""Start-up and `route` time of the shipped default against the earlier default, side by side in one run.

The routing issue allows start-up at most 1 s slower and `route` at most 1.1x the earlier time at the same
blocks. Everything is interleaved (A, B, A, B, ...) so that a busy spell of a shared machine hits both alike;
only the ratios printed here compare (absolute times differ between machines and sessions).

- start-up: `LoGoEngine.from_config` as shipped (background constants read from assets/calibration), and with
  the defaults set to the `neutral` preset (the earlier default: neutral constants probed at start-up).
- route: one warm engine, one prompt at a time: the shipped default; the `neutral` preset at the default's
  blocks and modules (the same blocks: what calibration and pooling cost); the `neutral` preset as it was.

    python scripts/route_cost.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core.engine import LoGoEngine  # noqa: E402
from logo_core.options import PRESETS  # noqa: E402
from logo_core.registry import load_config, with_overrides  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompts", type=int, default=12)
    args = ap.parse_args()
    cfg = load_config(ROOT / "adapters.yaml")
    earlier = with_overrides(cfg, defaults=PRESETS["neutral"])
    starts: dict[str, list[float]] = {"shipped default": [], "earlier default (neutral)": []}
    for _ in range(args.rounds):
        for name, c in zip(starts, (cfg, earlier)):
            t0 = time.perf_counter()
            engine = LoGoEngine.from_pool_config(c)
            starts[name].append(time.perf_counter() - t0)
            del engine
    engine = LoGoEngine.from_config(ROOT / "adapters.yaml")
    d = engine.route_options()
    settings = {
        "shipped default": {},
        "neutral at the default's blocks": {"preset": "neutral", "layer": d.layer_text, "module": ",".join(d.module)},
        "neutral as it was (15:30, v_proj)": {"preset": "neutral"},
    }
    prompts = [s.examples[0] for s in engine.pool.specs if s.examples][: args.prompts]
    for kw in settings.values():  # warm: constants and stacks are not timed
        engine.route(prompts[0], **kw)
    ms: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(args.rounds):
        for p in prompts:
            for name, kw in settings.items():
                t0 = time.perf_counter()
                engine.route(p, **kw)
                ms[name].append(1000 * (time.perf_counter() - t0))
    s0, s1 = (statistics.median(v) for v in starts.values())
    print(f"start-up (median of {args.rounds}): shipped {s0:.2f} s, earlier {s1:.2f} s, difference {s0 - s1:+.2f} s")
    base = statistics.median(ms["neutral at the default's blocks"])
    print(f"route, median of {len(prompts)} prompts x {args.rounds} rounds, one prompt at a time:")
    for name, v in ms.items():
        print(f"  {name}: {statistics.median(v):.1f} ms ({statistics.median(v) / base:.2f}x the same blocks' neutral)")


if __name__ == "__main__":
    main()
