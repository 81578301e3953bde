"""What the token evidence costs a route: the shipped default with and without it, side by side in one run.

One prompt per route (the app's case), the probe cache off (each route probes), the two settings interleaved and
their order alternated per round, so the machine's drift falls on both alike; prints the medians and their ratio.

    python scripts/bench_token_evidence.py [--prompts 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=48, help="people-style test prompts routed (one per task first)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    from logo_core.engine import LoGoEngine
    from logo_core.lab import split_prompts

    torch.set_num_threads(args.threads)
    router = LoGoEngine.from_config(ROOT / "adapters.yaml").router
    router.probe_cache = None
    if not router.options().token_evidence:
        raise SystemExit("adapters.yaml's default has no token evidence (token_weight 0): nothing to compare")
    prompts = [p.text for p in split_prompts("people", 1)][: args.prompts]
    settings = {"with token evidence": {}, "without": {"token_weight": 0.0}}
    for kw in settings.values():  # warm: constants loaded, first-call costs paid
        router.route_batch(prompts[:2], **kw)
    times: dict[str, list[float]] = {name: [] for name in settings}
    for r in range(args.rounds):
        order = list(settings.items())[:: 1 if r % 2 == 0 else -1]
        for p in prompts:
            for name, kw in order:
                t0 = time.perf_counter()
                router.route_batch([p], **kw)
                times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, m in med.items():
        print(f"{name}: median {1000 * m:.1f} ms a route ({len(times[name])} routes)")
    print(f"ratio with / without: {med['with token evidence'] / med['without']:.3f}")


if __name__ == "__main__":
    main()
