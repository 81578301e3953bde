"""Resident memory (psutil RSS) of one configuration per fresh subprocess, after a few requests.

RSS does not depend on timing, so several subprocesses run at once (one torch thread each). The
subprocess side is `python -m logo_core.bench --memory-child '<json spec>'`.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from .common import PROMPTS

MB = 2**20


def start_child(spec: dict) -> subprocess.Popen:
    """`python -m logo_core.bench --memory-child SPEC` in a fresh process, one torch thread."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "logo_core.bench", "--memory-child", json.dumps(spec)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def child_result(spec: dict, proc: subprocess.Popen) -> dict:
    """The JSON line a child printed last; its stderr in the error when it failed."""
    stdout, stderr = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {spec['label']!r} failed:\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def memory(configs: dict[str, dict], root: Path, log, requests: int = 4, parallel: int = 4) -> list[dict]:
    """RSS of each configuration {label: {adapters, k, route, kind}}, each in a fresh subprocess.

    The first configuration is the reference point (the base model alone); `over_smallest_pool_mb`
    compares an engine with the smallest pool of the same routing (`route` label).
    """
    specs = [
        {
            "label": label,
            "root": str(root),
            "requests": requests,
            **c,
            "adapters": {n: str(p) for n, p in c["adapters"].items()},
        }
        for label, c in configs.items()
    ]
    rows: list[dict] = []
    for i in range(0, len(specs), parallel):
        chunk = specs[i : i + parallel]
        procs = [start_child(spec) for spec in chunk]
        for spec, proc in zip(chunk, procs, strict=True):
            rows.append({**child_result(spec, proc), "routing": spec.get("routing", "")})
            log(f"  memory {spec['label']}: {rows[-1]['rss_mb']:.0f} MB")
    base = rows[0]["rss_mb"]
    smallest: dict[str, float] = {}
    for r in rows:
        r["over_base_mb"] = r["rss_mb"] - base
        if r["kind"] == "engine":
            smallest.setdefault(r["routing"], r["rss_mb"])  # configs list the smallest pool of a routing first
            r["over_smallest_pool_mb"] = r["rss_mb"] - smallest[r["routing"]]
    return rows


def trained_pools(config: Path, sizes: Sequence[int], root: Path, log, prompts: int = 24) -> list[dict]:
    """Start-up, routing and RSS of the trained pool of `config` cut to its first n adapters, for each n
    in `sizes` (0 = all), one fresh subprocess each, one after another (start-up is a time).

    The pool grew from 10 disjoint tasks to 48 in families; the first 10 stand in for the old size.
    """
    raw = yaml.safe_load(config.read_text(encoding="utf-8"))
    rows = []
    for n in sizes:
        sub = dict(
            raw,
            adapters=[
                dict(a, path=str((config.resolve().parent / a["path"]).resolve())) if "path" in a else a
                for a in raw["adapters"][: n or None]
            ],
        )
        path = root / f"trained-{n}.yaml"
        path.write_text(yaml.safe_dump(sub, sort_keys=False, allow_unicode=True), encoding="utf-8")
        spec = {
            "label": f"trained N={len(sub['adapters'])}",
            "kind": "trained",
            "config": str(path),
            "requests": prompts,
            "adapters": {},
            "k": 0,
        }
        rows.append(child_result(spec, start_child(spec)))  # one at a time: start-up is a time
        log(
            f"  {spec['label']}: start {rows[-1]['load_s']:.1f} s, route {rows[-1]['route_ms']:.0f} ms, "
            f"{rows[-1]['rss_mb']:.0f} MB"
        )
    for r in rows:
        for key in ("load_s", "route_ms", "rss_mb"):
            r[f"{key}_ratio"] = r[key] / rows[0][key]
    return rows


def held_mb() -> float:
    """This process's resident memory after garbage collection and `trim_heap`."""
    import psutil

    gc.collect()
    trim_heap()
    return psutil.Process().memory_info().rss / MB


def trim_heap() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim) so RSS counts what is held, not
    what a request freed (a folded request's weight copies) and the allocator kept; no-op elsewhere."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


def memory_child(spec: dict) -> None:
    """Load one configuration, serve a few requests, print its RSS as JSON (subprocess side)."""

    from ..loading import load_base
    from ..registry import BaseModelSpec
    from .contenders import fixed_length, load_peft, reference_probe
    from .synthetic import engine_for, pool_config

    torch.manual_seed(0)
    kind = spec["kind"]
    info: dict = {}
    if kind == "trained":  # the real pool through the public API: start-up, warm routing, then RSS
        import statistics
        import time

        from ..engine import LoGoEngine

        t0 = time.perf_counter()
        engine = LoGoEngine.from_config(spec["config"])  # model, pool, calibration and warm-up
        load_s = time.perf_counter() - t0
        examples = [e for spec_ in engine.pool.specs for e in spec_.examples]
        examples = examples[:: max(1, len(examples) // spec["requests"])][: spec["requests"]]
        engine.route(examples[0])
        times = []
        for p in examples:
            t1 = time.perf_counter()
            engine.route(p)
            times.append(1000 * (time.perf_counter() - t1))
        engine.generate(examples[0], max_new_tokens=8)
        print(
            json.dumps(
                {
                    "config": spec["label"],
                    "kind": kind,
                    "n": len(engine.adapters),
                    "load_s": load_s,
                    "route_ms": statistics.median(times),
                    "rss_mb": held_mb(),
                    "stacks_mb": engine.pool.stacked_bytes / MB,
                }
            )
        )
        return
    model, tok = load_base(BaseModelSpec(device="cpu", dtype="fp32"))
    adapters = {k: Path(v) for k, v in spec["adapters"].items()}
    prompts, kind, k = PROMPTS[: spec["requests"]], spec["kind"], spec["k"]
    if kind == "reference":
        from ..prompts import PromptEncoder

        peft_model, encode = load_peft(model, adapters), PromptEncoder(tok, 2048, 8192)
        for p in prompts:
            inputs = encode([p], 8, model.device).inputs()
            with torch.inference_mode():
                selected, _ = reference_probe(peft_model, inputs, k)
                peft_model.base_model.set_adapter(selected, inference_mode=True)
                peft_model.generate(**inputs, generation_config=fixed_length(tok, 8))
    elif kind == "engine":
        engine = engine_for(model, tok, pool_config(adapters, Path(spec["root"]), defaults=spec.get("route", {})))
        for p in prompts:
            engine.generate(p, max_new_tokens=8, k=k)
        info = {"stacks_mb": engine.pool.stacked_bytes / MB, "factor_cache_mb": engine.pool.cached_bytes / MB}
    else:  # the base model alone
        from ..prompts import PromptEncoder

        encode = PromptEncoder(tok, 2048, 8192)
        for p in prompts:
            with torch.inference_mode():
                model.generate(**encode([p], 8, model.device).inputs(), generation_config=fixed_length(tok, 8))
    print(json.dumps({"config": spec["label"], "kind": kind, "n": len(adapters), "k": k, "rss_mb": held_mb(), **info}))
