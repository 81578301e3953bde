"""Write the background calibration constants of adapters.yaml's default setting (and of its abstain signal, when
that is another or `nearest`, its decorrelation and its token evidence, when it has them) into assets/calibration/.

Start-up then reads them instead of probing the background prompts (seconds on a CPU). The files are
named by a hash of the model, the pool's weights, the prompt set and the setting, so after retraining
an adapter, changing the background or the default, rerun this: stale files are removed, a stale file
is never read (its name no longer matches).

    python scripts/ship_calibration.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core.engine import LoGoEngine  # noqa: E402
from logo_core.router import decorrelation_key, nearest_bank_key, token_key  # noqa: E402


def main() -> None:
    engine = LoGoEngine.from_config(ROOT / "adapters.yaml")
    router, opts = engine.router, engine.route_options()
    store = router.stats_store
    out = ROOT / "assets" / "calibration"
    keep = set()
    for o in [opts] if opts.gate is None else [opts, opts.gate]:  # the routing signal, then the abstain one
        for m, p in itertools.product(o.module, o.poolings):
            key = (o.blocks, m, p, o.signal, o.probe_input)
            path = store.save(key, router.background_stats(o, m, p), directory=out)
            keep.add(path.name)
            print(f"wrote {path.relative_to(ROOT)} ({o.signal}, {m}, {p})")
    if opts.decorrelation:  # the decorrelation's (m, d, W), from the routing scores of the background
        path = store.save(decorrelation_key(opts), router.decorrelation(opts), directory=out, names=("m", "d", "W"))
        keep.add(path.name)
        print(f"wrote {path.relative_to(ROOT)} (decorrelate {opts.decorrelation:g})")
    for m in opts.module if opts.token_evidence else ():  # the token evidence's (mu, sigma) of each module
        path = store.save(token_key(opts, m), router.token_stats(opts, m), directory=out)
        keep.add(path.name)
        print(
            f"wrote {path.relative_to(ROOT)} (token evidence, {m}, blocks {opts.token_blocks[0]}..{opts.token_blocks[-1]})"
        )
    if opts.nearest:  # the `nearest` abstain signal's bank: the background prompts' unit vectors at its block
        b = opts.nearest_block
        path = store.save(nearest_bank_key(b), (router.nearest_bank(b),), directory=out, names=("V",))
        keep.add(path.name)
        print(f"wrote {path.relative_to(ROOT)} (nearest, block {b})")
    for stale in out.glob("*.safetensors"):
        if stale.name not in keep:
            stale.unlink()
            print(f"removed {stale.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
