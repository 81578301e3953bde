"""Command line, no logic of its own: `python -m logo_core route|generate|replay|export ...`.

    python -m logo_core route --prompt "What is 47 + 38?" --k 3 --json
    python -m logo_core generate --prompt "Translate to French: the cat" --max-new-tokens 32
    python -m logo_core replay trace.json          # the app's exported trace: the same answer again
    python -m logo_core export --prompt "..." --out mix/   # the prompt's mixture as one PEFT adapter

The flags are generated from the options models (`options.py`): names and help texts are theirs, and
every value is checked by them before the model loads (without importing torch: a bad flag answers at once).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import LoGoError, RequestError
from .options import (
    GENERATE_FIELDS,
    ROUTE_FIELDS,
    GenerateOptions,
    RouteOptions,
    check_mixture,
    check_prompt,
    in_range,
)
from .registry import PoolConfig, load_config, with_overrides


def _number(text: str) -> int | float:
    """A number as typed; options.py judges it ("3.0" is the integer 3, "1.5" is no `k`)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


TYPES = {"k": _number, "max_new_tokens": _number, "min_new_tokens": _number, "top_k": _number, "seed": _number}
FLOATS = ("temperature", "top_p")


def _add_fields(parser: argparse.ArgumentParser, model: type, fields: tuple[str, ...]) -> None:
    for name in fields:
        info = model.model_fields[name]
        flag = "--" + name.replace("_", "-")
        if info.annotation in (bool, "bool"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=info.description)
        else:
            kind = TYPES.get(name, float if name in FLOATS else str)
            parser.add_argument(flag, type=kind, help=info.description)  # options.py checks choices


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m logo_core", description="LoGo: route a prompt over a LoRA pool.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, what in [
        ("route", "score every adapter for a prompt and print the top k"),
        ("generate", "route a prompt and answer it with the mixture"),
        ("export", "write a prompt's mixture as one PEFT adapter (the rank-concatenated LoRA)"),
    ]:
        s = sub.add_parser(name, help=what)
        s.add_argument("--prompt", required=True, help="the user's message")
        s.add_argument("--config", default="adapters.yaml", help="adapter pool file")
        s.add_argument("--dtype", help="override base_model.dtype (auto, fp32, bf16, fp16, int8, 8bit, 4bit)")
        s.add_argument("--device", help="override base_model.device (auto, cpu, cuda, cuda:N)")
        _add_fields(s, RouteOptions, ROUTE_FIELDS)
        if name == "generate":
            _add_fields(s, GenerateOptions, GENERATE_FIELDS)
            s.add_argument("--json", action="store_true", help="print the full trace as JSON")
        if name == "route":
            s.add_argument("--json", action="store_true", help="print the full trace as JSON")
        if name == "export":
            s.add_argument("--out", required=True, type=Path, help="folder to write the PEFT adapter to")
    r = sub.add_parser("replay", help="generate again from an exported trace and compare")
    r.add_argument("trace", type=Path, help="a trace JSON file (the app's download, or generate --json)")
    r.add_argument("--config", default="adapters.yaml", help="adapter pool file")
    return p


def _values(args: argparse.Namespace, fields: tuple[str, ...]) -> dict:
    return {f: getattr(args, f, None) for f in fields if getattr(args, f, None) is not None}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "replay":
            return _replay(args)
        route = _values(args, ROUTE_FIELDS)
        gen = _values(args, GENERATE_FIELDS)
        RouteOptions.resolve(route)  # every value checked before the model loads (10-30 s)
        GenerateOptions.resolve(gen)
        if args.command == "export" and args.out.exists() and not args.out.is_dir():
            raise RequestError(f"`--out` {str(args.out)!r} is a file: give a folder to write the adapter to")
        cfg = _config(args.config, route, dtype=args.dtype, device=args.device)
        check_prompt(args.prompt, cfg.engine.max_prompt_chars)
        engine = _engine(cfg)
        if args.command == "export":
            r = engine.route(args.prompt, **route)
            from .mixing import acting

            if not (weights := acting(r.weights)):
                raise RequestError(f"no adapter to export: {' '.join(r.notices) or 'the routing chose none'}")
            engine.export_adapter(weights, args.out)
            print(f"wrote {args.out} ({', '.join(f'{n} {w:.2f}' for n, w in weights.items())})")
            return 0
        if args.command == "route":
            result = engine.route(args.prompt, **route)
        else:
            result = engine.generate(args.prompt, **route, **gen)
    except LoGoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    routing = result if args.command == "route" else result.routing
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
        return 0
    for note in result.notices:
        print(f"note: {note}")
    width = max(map(len, routing.scores), default=0)
    for name, score in sorted(routing.scores.items(), key=lambda kv: -kv[1]):
        mark = f"  <- w={routing.weights[name]:.3f}" if name in routing.weights else ""
        print(f"{name:<{width}}  {score:10.4f}{mark}")
    if args.command == "generate":
        t = result.timings
        print(f"\n{result.text}\n")
        print(f"probe {t['probe_s'] * 1e3:.0f} ms, generation {t['generate_s']:.2f} s, {t['tokens_per_s']:.1f} tok/s")
    return 0


def _config(path: str, route: dict, **base_model) -> PoolConfig:
    """adapters.yaml with the command line's overrides, and `k` against its pool, before any model loads."""
    cfg = with_overrides(load_config(path), base_model=base_model)
    n = len(cfg.adapters)
    if n == 0:
        raise RequestError(f"the adapter pool of {path} is empty: add adapters to it")
    if "k" in route:
        try:
            in_range("k", route["k"], 1, n, f" (the pool size: {path} lists {n} adapters)")
        except ValueError as e:
            raise RequestError(str(e)) from None
    return cfg


def _engine(cfg: PoolConfig):
    from .engine import LoGoEngine

    engine = LoGoEngine.from_pool_config(cfg)
    for msg in engine.load_report.messages:
        print(f"warning: {msg}", file=sys.stderr)
    return engine


def _replay(args: argparse.Namespace) -> int:
    """Rebuild the engine a trace names, check its adapters' hashes, generate again, compare."""
    routing, gen, origin, text = _read_trace(args.trace)
    opts = {k: v for k, v in routing["options"].items() if k in ROUTE_FIELDS}
    engine = _engine(_config(args.config, opts, dtype=origin.get("dtype")))
    if engine.provenance.get("model") != origin.get("model"):
        loads = engine.provenance.get("model")
        print(f"warning: the trace used model {origin.get('model')!r}, {args.config} loads {loads!r}", file=sys.stderr)
    used = origin.get("adapters", {})
    changed = [n for n in routing["weights"] if used.get(n) != engine.provenance["adapters"].get(n)]
    if changed:
        print(f"warning: adapter files differ from the trace's (sha256): {changed}", file=sys.stderr)
    if routing["options"].get("mode") == "routed":
        g = engine.generate(routing["prompt"], **opts, **gen)
    else:
        g = engine.generate(routing["prompt"], adapters=routing["weights"], **gen)
    same, before = g.text == text, text
    print("identical answer" if same else f"DIFFERENT answer: {g.text!r} (trace: {before!r})")
    print(f"selected {g.routing.selected} (trace: {routing['selected']})")
    return 0 if same and g.routing.selected == routing["selected"] else 1


def _read_trace(path: Path) -> tuple[dict, dict, dict, str]:
    """A trace's routing, generation settings, provenance and text, every value checked (before any load)."""
    try:
        trace = json.loads(path.read_text(encoding="utf-8"))
        routing, gen, origin, text = trace["routing"], trace["generation"], trace["provenance"], trace["text"]
        if not (isinstance(routing, dict) and isinstance(gen, dict) and isinstance(origin, dict)):
            raise TypeError("`routing`, `generation` and `provenance` must be objects")
        if not (
            isinstance(text, str) and isinstance(routing["options"], dict) and isinstance(routing["weights"], dict)
        ):
            raise TypeError("`text` must be a string, `routing.options` and `routing.weights` objects")
        if not isinstance(routing["selected"], list) or not isinstance(origin.get("adapters", {}), dict):
            raise TypeError("`routing.selected` must be a list, `provenance.adapters` an object")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RequestError(f"{path}: not a LoGo generation trace ({type(e).__name__}: {e})") from None
    check_prompt(routing["prompt"], 10**6)
    GenerateOptions.resolve(gen)
    if routing["options"].get("mode") == "routed":
        RouteOptions.resolve({k: v for k, v in routing["options"].items() if k in ROUTE_FIELDS})
    else:
        check_mixture(routing["weights"], list(routing["weights"]))  # weights now, names once the pool is loaded
    return routing, gen, origin, text


if __name__ == "__main__":
    sys.exit(main())
