"""Does a global adapter strength s (every adapter's LoRA scaling times s at inference) lift the answers? Dev only.

Each shipped adapter alone (PEFT, greedy) on 10 dev and 10 people_dev prompts of its own task at each s; cached per
(task, s) in --out, so it resumes; prints the mean per s and each s against 1.0 (paired bootstrap over prompts).

    python scripts/strength_dev.py --scales 0.75,1,1.25,1.5 --out runs/strength_dev.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", default="0.75,1,1.25,1.5")
    ap.add_argument("--n", type=int, default=10, help="prompts per task of each dev kind")
    ap.add_argument("--out", default="runs/strength_dev.json")
    args = ap.parse_args(argv)
    import torch
    from peft import PeftModel

    from logo_core.loading import load_base
    from logo_core.registry import load_config
    from logo_core.tasks import get_task
    from logo_core.tasks.check import generate

    torch.set_num_threads(2)
    out = Path(args.out)
    cache = json.loads(out.read_text()) if out.is_file() else {}
    scales = [float(s) for s in args.scales.split(",")]
    cfg = load_config(ROOT / "adapters.yaml")
    base, tok = load_base()
    model = None
    for a in cfg.adapters:
        if model is None:
            model = PeftModel.from_pretrained(base, str(cfg.adapter_dir(a)), adapter_name=a.name).eval()
        else:
            model.load_adapter(str(cfg.adapter_dir(a)), adapter_name=a.name)
    layers = [m for m in model.modules() if isinstance(getattr(m, "scaling", None), dict)]
    for a in cfg.adapters:
        task = get_task(a.name)
        model.set_adapter(a.name)
        exs = task.examples("dev", args.n) + task.examples("people_dev", args.n)
        for s in scales:
            key = f"{a.name}/{s:g}"
            if key in cache:
                continue
            orig = {id(m): m.scaling[a.name] for m in layers if a.name in m.scaling}
            for m in layers:
                if a.name in m.scaling:
                    m.scaling[a.name] = orig[id(m)] * s
            answers = generate(model, tok, [e.prompt for e in exs], max_new_tokens=32)
            for m in layers:
                if a.name in m.scaling:
                    m.scaling[a.name] = orig[id(m)]
            scores = [task.score(x, e.answer) for x, e in zip(answers, exs)]
            cache[key] = {"dev": scores[: args.n], "people_dev": scores[args.n :]}
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(cache))
    names = [a.name for a in cfg.adapters]
    for kind in ("dev", "people_dev"):
        means = {s: sum(sum(cache[f"{n}/{s:g}"][kind]) for n in names) / (args.n * len(names)) for s in scales}
        print(kind, {f"{s:g}": round(v, 1) for s, v in means.items()})
    rng = random.Random(0)
    for s in (s for s in scales if s != 1.0):
        d = [
            x - y
            for n in names
            for kind in ("dev", "people_dev")
            for x, y in zip(cache[f"{n}/{s:g}"][kind], cache[f"{n}/1"][kind])
        ]
        boot = sorted(sum(rng.choice(d) for _ in d) / len(d) for _ in range(2000))
        print(f"s = {s:g} - 1: {sum(d) / len(d):+.1f} [{boot[49]:+.1f}, {boot[1949]:+.1f}] (both dev kinds, paired)")


if __name__ == "__main__":
    main()
