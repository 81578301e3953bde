"""The device run: `python -m logo_core.bench --device cuda --shape llama-8b` (or `smollm2`, `tiny`).

A model of a known shape with random weights, built directly on the device in the dtype the library
chooses there (`base_model: {device, dtype: auto}`: bf16 on a GPU that has it, fp32 on a CPU),
SmolLM2's tokenizer, and N random rank-8 q/v adapters (260 as in the paper). Every ratio is the
median of >= `reps` interleaved repeats taken in this one run. Sections (`--only`):

- `first`: pool load, calibration and the first answer after load, cold, then warm.
- `memory`: device memory added by the N adapters at the paper's probe and the multi-block one,
  the factor cache of the chosen adapters included (`torch.cuda.max_memory_allocated`).
- `e2e`: route + 128 tokens at k against the base model's own generation, and the reference-style
  implementation of the authors' approach against ours.
- `routing`: routing at N against N = 8.
- `batch`: 32 prompts in one `generate_batch` (a mixture per row) against 32 calls.
- `microbatch`: 8 concurrent callers through the micro-batcher (`engine.decoder.enable_batching(0.02, 8)`) against 1 caller.
- `compiled`: the compiled decode path against eager and against the base model compiled the same
  way, recompilations when the mixture changes, batch 8 with 8 mixtures against batch 1.

The results go to `gpu.json` under the device and shape (a later run replaces the sections it
measured, so a long run can be split into several commands) and `gpu.md` is rewritten from it.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..generation import run_generate
from ..loading import decide_placement
from ..prompts import PromptEncoder
from ..registry import BaseModelSpec
from . import measure
from .common import PROMPTS, Load, machine, seconds, sync
from .contenders import Base, Engine, Reference, fixed_length, load_peft
from .synthetic import ROUTINGS, SHAPES, Shape, engine_for, pool_config, random_base, smollm2_tokenizer, write_adapters

SECTIONS = ("first", "memory", "e2e", "routing", "batch", "microbatch", "compiled")
MB = 2**20


@dataclass(frozen=True)
class DeviceSettings:
    reps: int = 5  # interleaved repeats behind every ratio
    new_tokens: int = 128  # end to end and compiled tok/s
    batch_tokens: int = 32  # new tokens of the batched generation (32 calls x reps must fit the time limit)
    microbatch_tokens: int = 32
    batch: int = 32
    callers: int = 8
    compiled_batch: int = 8
    small_pool: int = 8


SETTINGS = {
    "llama-8b": DeviceSettings(batch_tokens=16),
    "smollm2": DeviceSettings(),
    "tiny": DeviceSettings(
        new_tokens=8, batch_tokens=4, microbatch_tokens=4, batch=4, callers=2, compiled_batch=2, small_pool=3
    ),
}


def run(shape_name: str, device: str, out: Path, sections=SECTIONS, tokenizer: str | None = None, log=print) -> dict:
    """Measure `sections` on a random-weight model of one shape; merge them into out/gpu.json, write gpu.md.

    Args:
        shape_name: a key of `synthetic.SHAPES`.
        device: `base_model.device` (auto, cpu, cuda, cuda:N); the dtype is the library's `auto` there.
        tokenizer: a directory holding SmolLM2's tokenizer files (default: the embedded model's).
    """
    shape, s = SHAPES[shape_name], SETTINGS[shape_name]
    base_model = {"device": device, "dtype": "auto"}
    place = decide_placement(BaseModelSpec(**base_model))
    base_model["dtype"] = place.dtype
    load = Load()
    t0 = time.perf_counter()
    model = random_base(shape, place)
    sync(place.device)
    res: dict = {"build_s": time.perf_counter() - t0}
    tok = smollm2_tokenizer(tokenizer)
    log(f"{shape.name}: random {place.dtype} weights on {place.device} in {res['build_s']:.1f} s")
    with tempfile.TemporaryDirectory(prefix="logo-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        adapters = write_adapters(model, root / "adapters", shape.pool)
        log(f"wrote {shape.pool} random adapters in {time.perf_counter() - t0:.0f} s")
        cfg = pool_config(adapters, root, base_model=base_model)
        if "first" in sections:
            res["first"] = first_answer(model, tok, cfg, place, shape.k, s)
            log(f"first answer after load: {res['first']}")
        if "memory" in sections:
            res["memory"] = memory(model, tok, adapters, root, base_model, place, shape.k, s, log)
        engine = engine_for(model, tok, cfg, place)
        k, n, prompts = shape.k, s.new_tokens, PROMPTS[: s.reps]
        if "e2e" in sections:
            log("end to end ...")
            contenders = [Base(model, engine), Engine(engine, k), Reference(load_peft(model, adapters), engine, k)]
            res["e2e"] = measure.e2e(contenders, prompts, (min(16, n // 2), n), 1, log)
            del contenders
        if "routing" in sections:
            log("routing against pool size ...")
            sizes = (s.small_pool, shape.pool)
            res["routing"] = measure.routing_vs_n(
                model, tok, root, sizes, PROMPTS[:4], s.reps, log, base_model=base_model
            )
        if "batch" in sections:
            log("batched generation ...")
            res["batch"] = measure.batch_vs_calls(engine, PROMPTS[: s.batch], s.batch_tokens, k, s.reps)
        if "microbatch" in sections:
            log("micro-batching ...")
            res["microbatch"] = measure.micro_batching(engine, PROMPTS[: s.callers], s.microbatch_tokens, k, s.reps)
        if "compiled" in sections:
            log("compiled decode path ...")
            buckets = sorted({1, s.compiled_batch})
            eng_c = engine_for(
                model,
                tok,
                with_length(cfg, n),
                place,
                pool=engine.pool,
                max_mixture_rank=8 * shape.compiled_k,
                batch_buckets=buckets,
                max_prompt_tokens=256,
            )
            res["compiled"] = measure.compiled_decode(
                eng_c, PROMPTS, n, shape.compiled_k, s.reps, s.compiled_batch, log
            )
        del engine
        gc.collect()
    res["meta"] = {
        **machine(place.device),
        **load.finish(),
        "device": str(place.device),
        "dtype": place.dtype,
        "shape": shape.name,
        "shape_config": shape.config,
        "pool": shape.pool,
        "k": shape.k,
        "settings": asdict(s),
    }
    return save(res, shape, out, sections)


def with_length(cfg, n: int):
    """The pool config with `defaults.max_new_tokens = n` (the compiled path's static cache holds it)."""
    from ..registry import with_overrides

    return with_overrides(cfg, defaults={"max_new_tokens": n})


def first_answer(model, tok, cfg, place, k: int, s: DeviceSettings) -> dict:
    """Pool load (validation, hashes), calibration, the first answer (cold) and the same one warm."""
    kw = dict(k=k, max_new_tokens=s.new_tokens, min_new_tokens=s.new_tokens)
    t0 = time.perf_counter()
    engine = engine_for(model, tok, cfg, place)
    load_s = time.perf_counter() - t0
    warm_up_s = seconds(engine.router.warm_up, place.device)
    first_s = seconds(lambda: engine.generate(PROMPTS[0], **kw), place.device)
    warm_s = seconds(lambda: engine.generate(PROMPTS[0], **kw), place.device)
    return {
        "pool_load_s": load_s,
        "warm_up_s": warm_up_s,
        "first_answer_s": first_s,
        "warm_answer_s": warm_s,
        "first_after_load_s": load_s + warm_up_s + first_s,
        "new_tokens": s.new_tokens,
    }


def memory(model, tok, adapters, root, base_model, place, k: int, s: DeviceSettings, log) -> list[dict]:
    """Device memory that the N adapters add at each of `ROUTINGS`: resident after a few requests
    (probe stacks + factor cache) and peak during them, against the base model's own peak."""
    dev, prompts = place.device, PROMPTS[:3]
    kw = dict(max_new_tokens=s.batch_tokens, min_new_tokens=s.batch_tokens)
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    encode = PromptEncoder(tok, 2048, model.config.max_position_embeddings)
    for p in prompts:  # the base model alone: its own peak is the reference point
        run_generate(model, encode([p], s.batch_tokens, dev).inputs(), fixed_length(tok, s.batch_tokens))
    base = measure.device_memory(dev)
    rows = []
    for label, how in ROUTINGS.items():
        gc.collect()
        if dev.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        before = measure.device_memory(dev)
        engine = engine_for(model, tok, pool_config(adapters, root, base_model=base_model, defaults=how), place)
        for p in prompts:
            engine.generate(p, k=k, **kw)
        now = measure.device_memory(dev)
        row = {
            "routing": label,
            "n": len(adapters),
            "k": k,
            "stacks_mb": engine.pool.stacked_bytes / MB,
            "factor_cache_mb": engine.pool.cached_bytes / MB,
        }
        if now is not None:
            row["resident_added_mb"] = (now[0] - before[0]) / MB
            row["peak_added_mb"] = (now[1] - base[1]) / MB
        rows.append(row)
        log(f"  memory {label}: {row}")
        del engine
    return rows


def save(res: dict, shape: Shape, out: Path, sections) -> dict:
    """Merge this run's sections into out/gpu.json (keyed by device and shape) and rewrite gpu.md."""
    from .report import device_markdown

    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu.json"
    runs = json.loads(path.read_text()) if path.is_file() else {}
    key = f"{res['meta'].get('gpu', res['meta']['cpu'])} / {shape.name}"
    entry = runs.get(key, {})
    entry.update({name: res[name] for name in SECTIONS if name in res})
    when = {f: res["meta"][f] for f in ("when", "wall_s", "others_cores", "cpu_free")}
    entry.setdefault("measured", {}).update({name: when for name in sections if name in res})
    entry["meta"], entry["build_s"] = res["meta"], res["build_s"]
    runs[key] = entry
    path.write_text(json.dumps(runs, indent=1, default=float) + "\n")
    (out / "gpu.md").write_text(device_markdown(runs))
    return entry
