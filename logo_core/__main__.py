"""Command line: `python -m logo_core route|generate --prompt "..." [--json]` (no logic of its own)."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import LoGoError
from .registry import BaseModelSpec, RoutingDefaults


def _help(model: type, name: str) -> str:
    return model.model_fields[name].description or ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m logo_core", description="LoGo: route a prompt over a LoRA pool.")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("route", "generate"):
        s = sub.add_parser(name, help=f"{name} one prompt and print the routing trace")
        s.add_argument("--prompt", required=True, help="the user's message")
        s.add_argument("--config", default="adapters.yaml", help="adapter pool file")
        s.add_argument("--dtype", choices=["fp32", "bf16", "int8"], help=_help(BaseModelSpec, "dtype"))
        s.add_argument("--k", type=int, help=_help(RoutingDefaults, "k"))
        s.add_argument("--signal", choices=["norm", "entropy"], help=_help(RoutingDefaults, "signal"))
        s.add_argument("--calibrated", action=argparse.BooleanOptionalAction, help=_help(RoutingDefaults, "calibrated"))
        s.add_argument("--layer", help=_help(RoutingDefaults, "layer"))
        s.add_argument("--module", help=_help(RoutingDefaults, "module"))
        s.add_argument("--probe-input", choices=["residual", "module"], help=_help(RoutingDefaults, "probe_input"))
        s.add_argument("--json", action="store_true", help="print the full trace as JSON")
        if name == "generate":
            s.add_argument("--max-new-tokens", type=int, help=_help(RoutingDefaults, "max_new_tokens"))
    return p


def _layer(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .engine import LoGoEngine

    route_kw = {
        "k": args.k,
        "signal": args.signal,
        "calibrated": args.calibrated,
        "layer": _layer(args.layer),
        "module": args.module,
        "probe_input": args.probe_input,
    }
    try:
        engine = LoGoEngine.from_config(args.config, dtype=args.dtype)
        if args.command == "route":
            result = engine.route(args.prompt, **route_kw)
            routing = result
        else:
            result = engine.generate(args.prompt, max_new_tokens=args.max_new_tokens, **route_kw)
            routing = result.routing
    except LoGoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for msg in engine.load_report.messages:
        print(f"warning: {msg}", file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    for note in result.notices:
        print(f"note: {note}")
    width = max(map(len, routing.scores), default=0)
    for name, score in sorted(routing.scores.items(), key=lambda kv: -kv[1]):
        mark = f"  <- w={routing.weights[name]:.3f}" if name in routing.weights else ""
        print(f"{name:<{width}}  {score:10.4f}{mark}")
    if args.command == "generate":
        print(f"\n{result.text}\n")
        t = result.timings
        print(f"probe {t['probe_s'] * 1e3:.0f} ms, generation {t['generate_s']:.2f} s, {t['tokens_per_s']:.1f} tok/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
