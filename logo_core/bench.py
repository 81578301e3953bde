"""Speed and memory benchmark (issue #5): our engine against the base model, a reference-style
PEFT implementation of LoGo and PEFT's merge-per-request, side by side in one run.

Run `python -m logo_core.bench` (a few minutes) or `--quick` (well under two minutes, for the
test). Writes `bench.json` (every figure), `bench.md` (the tables) and the amortisation plot
(`amortisation.png`, `.html`) to `--out`.

Method: synthetic random adapters (rank 8, alpha 16, q_proj + v_proj, fp16 PEFT files) so the
pool can reach N = 256; the same chat-templated prompts for every contender; greedy decoding
forced to a fixed number of new tokens (`min_new_tokens`), so no contender stops early on EOS.
Contenders are interleaved and repeated; ratios are medians of paired ratios (each sample
against the base sample of the same prompt and repetition), which cancels slow drifts of a
shared, noisy machine. A per-token clock (a generation streamer that stamps every new token)
gives time to first token, decode speed and the whole amortisation curve from one request.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .engine import LoGoEngine
from .loading import block_modules, decoder_layers, load_base
from .pool import load_pool
from .registry import parse_config

# Varied prompts (arithmetic, translation, code, QA, NLI, writing, ...): the first few are the
# timed requests, all of them are the routing-agreement and batched-routing sets.
PROMPTS = [
    "What is 47 + 38? Answer with the number only.",
    "Translate to French: The weather is nice today and we are going to the beach.",
    "Write a Python function that returns the factorial of n.",
    "Premise: A man is playing a guitar on stage. Hypothesis: A person is making music. Entailment, neutral or contradiction?",
    "Who wrote the novel Pride and Prejudice?",
    "Summarise in one sentence: The city council met on Monday to discuss the new park. Residents asked for more trees and a playground.",
    "Sort these numbers from smallest to largest: 9, 2, 7, 4, 1.",
    "What is the capital of Australia?",
    "Convert this table to a sentence: name=Alice | age=30 | city=Paris",
    "Is the following sentence grammatical? 'She go to school every day.'",
    "Give three synonyms for the word 'happy'.",
    "If a train travels 60 km in 45 minutes, what is its average speed in km/h?",
    "Explain what a hash table is in two sentences.",
    "Translate to German: I would like a cup of coffee, please.",
    "What is the opposite of 'ancient'?",
    "Write a haiku about autumn leaves.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Fix the bug: def add(a, b): return a - b",
    "Name the largest planet in the solar system.",
    "Does the sentence 'The cat sat on the mat' contain a verb? Answer yes or no.",
    "Count the vowels in the word 'benchmark'.",
    "What year did the first person walk on the Moon?",
    "Rewrite in the passive voice: The chef cooked a delicious meal.",
    "What is 12 times 13?",
    "Classify the sentiment of this review: 'The food was cold and the service was slow.'",
    "Write a SQL query that selects all users older than 30.",
    "What does the acronym CPU stand for?",
    "Continue the sequence: 2, 4, 8, 16, ...",
    "Translate to Spanish: Where is the train station?",
    "Give a short definition of photosynthesis.",
    "Is 97 a prime number?",
    "Reverse the string 'routing'.",
    "List two advantages of renewable energy.",
    "What is the boiling point of water at sea level in Celsius?",
    "Turn this into a question: The museum opens at nine.",
    "Which word does not belong: apple, banana, carrot, grape?",
]


@dataclass(frozen=True)
class Settings:
    """What one run measures; `FULL` is the issue's spec, `QUICK` a smoke run for the test."""

    n_pool: int  # pool of the end-to-end comparison (the reference loads all of it into PEFT)
    ks: tuple[int, ...]  # our engine
    peer_ks: tuple[int, ...]  # reference-style and PEFT merge
    lengths: tuple[int, int]  # short and long request, new tokens (the short one read off the long one's clock)
    e2e_prompts: int  # how many of PROMPTS are timed end to end
    reps: int
    pool_sizes: tuple[int, ...]  # probe cost as the pool grows (ratio to the first)
    route_reps: int
    batch: int  # batched routing: prompts in one call
    memory_pools: tuple[int, ...]
    dtype_tokens: int
    dtype_prompts: int  # routing agreement prompts (decode speed: the first `dtype_timed` of them)
    dtype_timed: int
    memory_extras: bool  # also k = max(ks) and the reference in the memory table
    trained_pool: str | None = None  # also measure dtype routing agreement on this trained pool


FULL = Settings(
    n_pool=32, ks=(1, 3, 20), peer_ks=(3, 20), lengths=(16, 128), e2e_prompts=3, reps=1, pool_sizes=(8, 64, 256),
    route_reps=5, batch=32, memory_pools=(8, 256), dtype_tokens=24, dtype_prompts=len(PROMPTS),
    dtype_timed=2, memory_extras=True, trained_pool="adapters.yaml",
)  # fmt: skip
QUICK = Settings(
    n_pool=8, ks=(1, 3, 8), peer_ks=(3, 8), lengths=(4, 8), e2e_prompts=1, reps=1, pool_sizes=(4, 16), route_reps=1,
    batch=8, memory_pools=(16,), dtype_tokens=4, dtype_prompts=4, dtype_timed=1, memory_extras=False,
)  # fmt: skip

RANK, ALPHA, TARGETS, STD = 8, 16, ("q_proj", "v_proj"), 0.02

# Where the probe listens: the paper's reference setting, and the setting adapters.yaml ships
# (chosen by the evaluation). Cost and memory differ: the second stacks every block's factors.
ROUTINGS = {
    "last block, q_proj (paper)": {"layer": -1, "module": "q_proj"},
    "all blocks, v_proj (shipped)": {"layer": "0:", "module": "v_proj"},
}


# --------------------------------------------------------------------------- synthetic adapters


def write_adapters(model: nn.Module, root: Path, n: int, seed: int = 0) -> dict[str, Path]:
    """Write n random PEFT LoRA adapters (fp16 safetensors + adapter_config.json) under root."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    paths = block_modules(model)
    shapes = {}
    for m in TARGETS:  # (D_in, D_out) of each target module, read from block 0
        lin = decoder_layers(model)[0].get_submodule(paths[m])
        shapes[m] = (lin.in_features, lin.out_features)
    L = len(decoder_layers(model))
    out = {}
    for i in range(n):
        name = f"synth{i:03d}"
        d = root / name
        out[name] = d
        if (d / "adapter_model.safetensors").is_file():
            continue
        gen = torch.Generator().manual_seed(seed + i)
        tensors = {}
        for b in range(L):
            for m, (d_in, d_out) in shapes.items():
                key = f"base_model.model.model.layers.{b}.{paths[m]}"
                tensors[f"{key}.lora_A.weight"] = (torch.randn(RANK, d_in, generator=gen) * STD).half()
                tensors[f"{key}.lora_B.weight"] = (torch.randn(d_out, RANK, generator=gen) * STD).half()
        d.mkdir(parents=True, exist_ok=True)
        save_file(tensors, d / "adapter_model.safetensors")
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS), task_type="CAUSAL_LM").save_pretrained(d)
    return out


def pool_config(adapters: dict[str, Path], root: Path, dtype: str = "fp32"):
    raw = {"base_model": {"dtype": dtype}, "adapters": [{"name": n, "path": str(p)} for n, p in adapters.items()]}
    return parse_config(raw, file=str(root / "adapters.yaml"), root=root)


def build_engine(model: nn.Module, tok, adapters: dict[str, Path], root: Path) -> LoGoEngine:
    """An engine over `model` (wrapped in place, once; several engines may share one model)."""
    cfg = pool_config(adapters, root)
    pool, report = load_pool(cfg, model)
    return LoGoEngine(model, tok, pool, cfg.defaults, cfg.neutral_prompts, report)


# --------------------------------------------------------------------------- one request


class Clock:
    """A generation streamer that stamps the time of each new token (the first `put` is the prompt)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


def fixed_length(tok, n: int, clock: Clock) -> dict:
    """`generate` kwargs: greedy, exactly n new tokens (EOS suppressed until then), clocked.

    The same settings as the engine's `_generate_ids` with `min_new_tokens = n`."""
    return dict(
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        pad_token_id=tok.pad_token_id,
        streamer=clock,
    )


@dataclass
class Sample:
    """One timed request: setup (routing, mixing) then per-token stamps, seconds from the start;
    `total_s` also holds the end of `generate` and any per-request cleanup."""

    setup_s: float
    token_s: list[float]
    total_s: float

    @property
    def decode_tps(self) -> float:
        """1 / the median time between two new tokens: robust to a stray pause of a shared CPU."""
        gaps = [b - a for a, b in zip(self.token_s, self.token_s[1:])]
        return 1.0 / statistics.median(gaps) if gaps else float("nan")

    def latency(self, n: int) -> float:
        """End-to-end time of the same request stopped after n tokens: up to the n-th token, plus
        what follows the last token (end of `generate`, cleanup)."""
        return self.token_s[n - 1] + (self.total_s - self.token_s[-1])


def timed(n: int, prepare: Callable[[], Callable[[Clock], object]]) -> Sample:
    """Run prepare() (routing, mixing; returns a generate function), then generate n tokens."""
    clock = Clock()
    t0 = time.perf_counter()
    generate = prepare()
    t1 = time.perf_counter()
    with torch.inference_mode():
        generate(clock)
    t2 = time.perf_counter()
    assert len(clock.times) == n, f"generated {len(clock.times)} tokens instead of {n}"
    return Sample(t1 - t0, [t - t0 for t in clock.times], t2 - t0)


def generate_then(generate: Callable[[Clock], object], cleanup: Callable[[], None]) -> Callable[[Clock], object]:
    """A generate function followed by the request's cleanup, both inside the timed request."""

    def run(clock: Clock) -> object:
        out = generate(clock)
        cleanup()
        return out

    return run


# --------------------------------------------------------------------------- contenders
# Each contender: name, k and request(prompt, n) -> Sample. All share `enc_engine._encode`, so
# every contender sees the same chat-templated token ids.


class Base:
    """The floor: the plain (unwrapped) base model generating the same number of tokens."""

    def __init__(self, model: nn.Module, engine: LoGoEngine) -> None:
        self.name, self.k, self.model, self.engine = "base", 0, model, engine

    def request(self, prompt: str, n: int) -> Sample:
        def prepare():
            enc, _ = self.engine._encode([prompt], n)
            return lambda clock: self.model.generate(**enc, **fixed_length(self.engine.tokenizer, n, clock))

        return timed(n, prepare)


class Engine:
    """Ours: one early-exit probe, top-k, one concatenated low-rank pair per module.

    k = 0 is the wrapped model with no mixture (the wrappers' own overhead). Goes through the
    engine's own `_plan` (encode, probe, select, build the mixture) and `_generate_ids`.
    """

    def __init__(self, engine: LoGoEngine, k: int) -> None:
        self.name = f"engine k={k}" if k else "engine, no adapters"
        self.k, self.engine = k, engine

    def request(self, prompt: str, n: int) -> Sample:
        e = self.engine

        def prepare():
            adapters = [{}] if self.k == 0 else None
            _, enc, _, mixture, _, _ = e._plan([prompt], n, adapters, {} if self.k == 0 else {"k": self.k})
            return lambda clock: e._generate_ids(enc, mixture, n, {"min_new_tokens": n}, streamer=clock)

        return timed(n, prepare)


def load_peft(model: nn.Module, adapters: dict[str, Path]):
    """All adapters of the pool loaded into one PEFT model (PeftModel + load_adapter each)."""
    from peft import PeftModel

    names = list(adapters)
    peft_model = PeftModel.from_pretrained(model, str(adapters[names[0]]), adapter_name=names[0])
    for name in names[1:]:
        peft_model.load_adapter(str(adapters[name]), adapter_name=name)
    peft_model.eval()
    peft_model.base_model.set_adapter(names, inference_mode=True)  # the authors start with all active
    return peft_model


def reference_probe(
    peft_model, enc: dict, k: int, block: int = -1, module: str = "q_proj"
) -> tuple[list[str], list[float]]:
    """The authors' routing: a full forward pass with `output_hidden_states=True` through the PEFT
    model as it stands, then every adapter's q_proj output in a Python loop, norm, top-k."""
    from peft.tuners.lora import LoraLayer

    out = peft_model(**enc, output_hidden_states=True, return_dict=True)
    L = len(out.hidden_states) - 1
    h = out.hidden_states[block % L]  # [1, T, D]: the input of the probe block
    layer = peft_model.base_model.model.model.layers[block % L].get_submodule(
        block_modules(peft_model.base_model.model)[module]
    )
    assert isinstance(layer, LoraLayer)
    names = list(layer.lora_A.keys())
    proj = torch.stack(
        [(h @ layer.lora_A[n].weight.T) @ layer.lora_B[n].weight.T * layer.scaling[n] for n in names], dim=1
    )  # [1, N, T, O]: every token, as the reference does; the last one is kept
    sigma = torch.linalg.vector_norm(proj[:, :, -1], dim=-1)[0]  # [N]
    top, idx = torch.topk(sigma, k)
    return [names[i] for i in idx.tolist()], (top / top.sum()).tolist()


class Reference:
    """Reference-style (the authors' code, with PEFT's public API): the probe runs through the
    PEFT model with the previous request's adapters still active (as the reference does), then
    `set_adapter(selected)`, every LoRA layer's scaling multiplied by the adapter's weight for the
    request (restored after), `generate`: k LoRA pairs per module per token."""

    def __init__(self, peft_model, engine: LoGoEngine, k: int) -> None:
        self.name, self.k, self.peft, self.engine = f"reference k={k}", k, peft_model, engine

    def request(self, prompt: str, n: int) -> Sample:
        from peft.tuners.lora import LoraLayer

        restore: dict = {}

        def prepare():
            enc, _ = self.engine._encode([prompt], n)
            with torch.inference_mode():
                selected, weights = reference_probe(self.peft, enc, self.k)
            self.peft.base_model.set_adapter(selected, inference_mode=True)
            mult = dict(zip(selected, weights, strict=True))
            for mod in self.peft.modules():
                if isinstance(mod, LoraLayer):
                    restore[mod] = dict(mod.scaling)
                    mod.scaling = {a: s * mult.get(a, 1.0) for a, s in mod.scaling.items()}
            return generate_then(
                lambda clock: self.peft.generate(**enc, **fixed_length(self.engine.tokenizer, n, clock)), undo
            )

        def undo() -> None:  # restore every layer's scaling (the reference's context manager)
            for mod, scaling in restore.items():
                mod.scaling = scaling
            restore.clear()

        try:
            return timed(n, prepare)
        finally:
            undo()  # after a failure too


class PeftMerge:
    """PEFT merge-per-request: the reference probe (on the clean base, adapters disabled), then
    `add_weighted_adapter(selected, weights, "mix", combination_type="cat")`, generate, delete."""

    def __init__(self, peft_model, engine: LoGoEngine, k: int) -> None:
        self.name, self.k, self.peft, self.engine = f"peft merge k={k}", k, peft_model, engine

    def request(self, prompt: str, n: int) -> Sample:
        def prepare():
            enc, _ = self.engine._encode([prompt], n)
            with torch.inference_mode(), self.peft.disable_adapter():
                selected, weights = reference_probe(self.peft, enc, self.k)
            self.peft.base_model.add_weighted_adapter(selected, weights, "mix", combination_type="cat")
            self.peft.base_model.set_adapter("mix", inference_mode=True)
            return generate_then(
                lambda clock: self.peft.generate(**enc, **fixed_length(self.engine.tokenizer, n, clock)), undo
            )

        def undo() -> None:
            if "mix" in self.peft.peft_config:
                self.peft.base_model.delete_adapter("mix")

        try:
            return timed(n, prepare)
        finally:
            undo()  # after a failure too


# --------------------------------------------------------------------------- figures


def med(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def run_e2e(contenders: list, prompts: list[str], n: int, reps: int, log) -> dict[str, list[Sample]]:
    """Every contender on every prompt (n new tokens), interleaved; the order rotates each round."""
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for c in contenders:  # warm-up: first-use costs (stacks, calibration, allocator) are not timed
        c.request(prompts[0], 2)
    rnd = 0
    for rep in range(reps):
        for i, p in enumerate(prompts):
            order = contenders[rnd % len(contenders) :] + contenders[: rnd % len(contenders)]
            rnd += 1
            for c in order:
                samples[c.name].append(c.request(p, n))
            log(f"  e2e round {rep + 1}/{reps}, prompt {i + 1}/{len(prompts)} done")
    return samples


def paired_ratio(xs: list[float], base: list[float]) -> float:
    """Median of sample-by-sample ratios (same prompt, same round)."""
    return med([x / b for x, b in zip(xs, base, strict=True)])


def summarise_e2e(samples: dict[str, list[Sample]], contenders: list, lengths: tuple[int, int]) -> list[dict]:
    """Latency of a short and a long request, and decode speed, each against the base model's.

    The short request is read off the long one's clock (the request would end there)."""
    short, long_ = lengths
    base = samples["base"]
    rows = []
    for c in contenders:
        ss = samples[c.name]
        row = {"contender": c.name, "k": c.k, "setup_ms": 1000 * med([x.setup_s for x in ss])}
        for n in (short, long_):
            row[f"e2e_{n}_s"] = med([x.latency(n) for x in ss])
            row[f"e2e_{n}_ratio"] = paired_ratio([x.latency(n) for x in ss], [x.latency(n) for x in base])
        row["decode_tps"] = med([x.decode_tps for x in ss])
        row["decode_ratio"] = paired_ratio([x.decode_tps for x in ss], [x.decode_tps for x in base])
        rows.append(row)
    return rows


def amortisation(samples: dict[str, list[Sample]]) -> dict[str, list[float]]:
    """Average time per generated token after n tokens, (setup + prefill + decode up to n) / n."""
    out = {}
    for name, ss in samples.items():
        n = len(ss[0].token_s)
        out[name] = [med([s.token_s[i] / (i + 1) for s in ss]) for i in range(n)]
    return out


def probe_vs_n(model, tok, root: Path, sizes: Sequence[int], prompts: list[str], reps: int, log) -> list[dict]:
    """Routing cost (`engine.route`, k = 3) for pools of growing size, under each of `ROUTINGS`."""
    engines, load_s, first_s = {}, {}, {}
    for n in sizes:
        adapters = write_adapters(model, root / "adapters", n)
        t0 = time.perf_counter()
        engines[n] = build_engine(model, tok, adapters, root)
        load_s[n] = time.perf_counter() - t0
        for label, how in ROUTINGS.items():  # first call: stacks the probe tensors, calibrates
            t0 = time.perf_counter()
            engines[n].route(prompts[0], k=min(3, n), **how)
            first_s[(label, n)] = time.perf_counter() - t0
        log(f"  pool N={n}: load {load_s[n]:.1f}s, first routes {[round(first_s[(r, n)], 2) for r in ROUTINGS]} s")
    times: dict[tuple[str, int], list[float]] = {(r, n): [] for r in ROUTINGS for n in sizes}
    for _ in range(reps):
        for p in prompts:
            for label, how in ROUTINGS.items():
                for n in sizes:
                    t0 = time.perf_counter()
                    engines[n].route(p, k=min(3, n), **how)
                    times[(label, n)].append(time.perf_counter() - t0)
    return [
        {
            "routing": label,
            "n": n,
            "route_ms": 1000 * med(times[(label, n)]),
            "ratio": paired_ratio(times[(label, n)], times[(label, sizes[0])]),
            "first_route_s": first_s[(label, n)],
            "load_s": load_s[n],
        }
        for label in ROUTINGS
        for n in sizes
    ]


def batched_routing(engine: LoGoEngine, prompts: list[str], reps: int) -> dict:
    """route_batch(B prompts) against B route() calls, interleaved."""
    one_call, calls = [], []
    engine.route_batch(prompts, k=3)
    for _ in range(reps):
        t0 = time.perf_counter()
        batch = engine.route_batch(prompts, k=3)
        one_call.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        single = [engine.route(p, k=3) for p in prompts]
        calls.append(time.perf_counter() - t0)
    same = sum(a.selected == b.selected for a, b in zip(batch, single, strict=True)) / len(prompts)
    return {
        "prompts": len(prompts),
        "one_call_s": med(one_call),
        "separate_calls_s": med(calls),
        "speedup": paired_ratio(calls, one_call),
        "same_selection": same,
    }


def memory(configs: dict[str, tuple], root: Path, log, requests: int = 4, parallel: int = 4) -> list[dict]:
    """Resident memory of each configuration ({label: (adapters, k, route kwargs)}), each in a
    fresh subprocess, after `requests` requests.

    RSS does not depend on timing, so `parallel` subprocesses run at once (one torch thread
    each). The first configuration is the reference point (the base model alone)."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    specs = [
        {
            "label": label,
            "root": str(root),
            "k": k,
            "route": how,
            "requests": requests,
            "adapters": {n: str(p) for n, p in adapters.items()},
        }
        for label, (adapters, k, how) in configs.items()
    ]
    rows: list[dict] = []
    for i in range(0, len(specs), parallel):
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "logo_core.bench", "--memory-child", json.dumps(spec)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for spec in specs[i : i + parallel]
        ]
        for spec, proc in zip(specs[i : i + parallel], procs, strict=True):
            stdout, stderr = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"memory probe {spec['label']!r} failed:\n{stderr[-3000:]}")
            rows.append(json.loads(stdout.strip().splitlines()[-1]))
            log(f"  memory {spec['label']}: {rows[-1]['rss_mb']:.0f} MB")
    base = rows[0]["rss_mb"]
    smallest = rows[1]["rss_mb"] if len(rows) > 1 else base
    for r in rows:
        r["over_base_mb"] = r["rss_mb"] - base
        r["over_smallest_pool_mb"] = r["rss_mb"] - smallest if r["config"].startswith("engine") else None
    return rows


def chat_encode(tok, prompt: str) -> dict:
    text = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
    enc = tok([text], return_tensors="pt", add_special_tokens=False)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def memory_child(spec: dict) -> None:
    """Load one configuration, serve a few requests, print its RSS as JSON (subprocess side)."""
    import psutil

    torch.manual_seed(0)
    model, tok = load_base()
    adapters = {k: Path(v) for k, v in spec["adapters"].items()}
    prompts = PROMPTS[: spec["requests"]]
    if spec["label"].startswith("reference"):
        peft_model = load_peft(model, adapters)
        for p in prompts:
            enc = chat_encode(tok, p)
            with torch.inference_mode():
                selected, _ = reference_probe(peft_model, enc, spec["k"])
                peft_model.base_model.set_adapter(selected, inference_mode=True)
                peft_model.generate(**enc, **fixed_length(tok, 8, Clock()))
    elif adapters:
        engine = build_engine(model, tok, adapters, Path(spec["root"]))
        for p in prompts:
            engine.generate(p, max_new_tokens=8, k=spec["k"], **spec.get("route", {}))
    else:
        for p in prompts:
            with torch.inference_mode():
                model.generate(**chat_encode(tok, p), **fixed_length(tok, 8, Clock()))
    gc.collect()
    rss = psutil.Process().memory_info().rss / 2**20
    print(json.dumps({"config": spec["label"], "n": len(adapters), "k": spec["k"], "rss_mb": rss}))


def trained_pool(path: Path, min_adapters: int = 4):
    """The repository's trained pool (adapters.yaml) and a few test prompts of each of its tasks,
    or None while it has fewer than `min_adapters` adapters on disk."""
    from .registry import load_config
    from .tasks import TASKS

    try:
        cfg = load_config(path)
    except Exception:  # absent, or being rewritten by the trainer right now
        return None
    cfg.adapters = [a for a in cfg.adapters if a.path and (cfg.adapter_dir(a) / "adapter_model.safetensors").is_file()]
    if len(cfg.adapters) < min_adapters:
        return None
    prompts = [ex.prompt for a in cfg.adapters if a.name in TASKS for ex in TASKS[a.name].examples("test", 4)]
    return cfg, prompts or PROMPTS


def agreement(ref: list, got: list) -> tuple[float, float]:
    """Share of prompts with the same top-k set, and with the same top-1."""
    same_set = sum(set(a.selected) == set(b.selected) for a, b in zip(ref, got, strict=True)) / len(ref)
    same_top1 = sum(a.selected[0] == b.selected[0] for a, b in zip(ref, got, strict=True)) / len(ref)
    return same_set, same_top1


def dtype_compare(
    yaml_path: Path,
    prompts: list[str],
    agreement_prompts: list[str],
    n: int,
    reps: int,
    k: int,
    log,
    trained: tuple | None = None,
) -> list[dict]:
    """fp32 / bf16 / int8 engines (`LoGoEngine.from_config(..., dtype=...)`): decode speed of the
    base and of a k-mixture, and routing agreement with fp32 (same top-k set, same top-1), on the
    synthetic pool and, when given (`trained_pool`), on the trained pool with its tasks' prompts."""
    engines = {}
    for d in ("fp32", "bf16", "int8"):
        engines[d] = LoGoEngine.from_config(yaml_path, dtype=d)
        log(f"  dtype {d} loaded")
    routes = {d: e.route_batch(agreement_prompts, k=k) for d, e in engines.items()}
    trained_routes = {}
    if trained is not None:
        cfg, trained_prompts = trained
        for d, e in engines.items():  # the same (wrapped) models, the trained pool
            pool, _ = load_pool(cfg, e.model)
            te = LoGoEngine(e.model, e.tokenizer, pool, cfg.defaults, cfg.neutral_prompts)
            trained_routes[d] = te.route_batch(trained_prompts, k=min(k, len(pool)))
    contenders = {d: (Engine(e, 0), Engine(e, k)) for d, e in engines.items()}
    for plain, mixed in contenders.values():  # warm-up
        plain.request(prompts[0], 2), mixed.request(prompts[0], 2)
    tps: dict[str, tuple[list[float], list[float]]] = {d: ([], []) for d in engines}
    for _ in range(reps):
        for p in prompts:
            for d, (plain, mixed) in contenders.items():
                tps[d][0].append(plain.request(p, n).decode_tps)
                tps[d][1].append(mixed.request(p, n).decode_tps)
    rows = []
    for d in engines:
        ref, got = routes["fp32"], routes[d]
        same_set, same_top1 = agreement(ref, got)
        if trained_routes:
            t_set, t_top1 = agreement(trained_routes["fp32"], trained_routes[d])
            t_n, t_pool = len(trained_routes[d]), len(trained[0].adapters)
        else:
            t_set = t_top1 = t_n = t_pool = None
        rows.append(
            {
                "dtype": d,
                "base_decode_tps": med(tps[d][0]),
                f"k{k}_decode_tps": med(tps[d][1]),
                "base_vs_fp32": paired_ratio(tps[d][0], tps["fp32"][0]),
                f"k{k}_vs_fp32": paired_ratio(tps[d][1], tps["fp32"][1]),
                "same_topk": same_set,
                "same_top1": same_top1,
                "prompts": len(ref),
                "trained_same_topk": t_set,
                "trained_same_top1": t_top1,
                "trained_prompts": t_n,
                "trained_pool": t_pool,
            }
        )
    del engines
    gc.collect()
    return rows


# --------------------------------------------------------------------------- report


def targets(res: dict, s: Settings) -> list[dict]:
    """The issue's targets, measured value against threshold."""
    rows = {r["contender"]: r for r in res["e2e"]}
    long_ = s.lengths[1]
    k_mid, k_big = 3, s.ks[-1]
    (paper, shipped), big = list(ROUTINGS), s.memory_pools[-1]
    route = {(r["routing"], r["n"]): r for r in res["probe_vs_n"]}
    n0, n1 = s.pool_sizes[0], s.pool_sizes[-1]
    mem = {m["config"]: m for m in res["memory"]}
    out = [
        ("decode tokens/s, k=3 mixture / base", rows[f"engine k={k_mid}"]["decode_ratio"], ">=", 0.9),
        (f"decode tokens/s, k={k_big} mixture / base", rows[f"engine k={k_big}"]["decode_ratio"], ">=", 0.85),
        (
            f"route + {long_} tokens, k=3 / base generating {long_}",
            rows[f"engine k={k_mid}"][f"e2e_{long_}_ratio"],
            "<=",
            1.15,
        ),
        (
            f"reference / engine, end to end ({long_} tokens), k={k_big}",
            paired_ratio_rows(res, f"reference k={k_big}", f"engine k={k_big}", long_),
            ">=",
            1.5,
        ),
        (f"routing N={n1} / N={n0}, {paper}", route[(paper, n1)]["ratio"], "<=", 1.5),
        (f"routing N={n1} / N={n0}, {shipped}", route[(shipped, n1)]["ratio"], "<=", 1.5),
        (f"batched routing of {res['batched']['prompts']} prompts, speedup", res["batched"]["speedup"], ">=", 4.0),
        (f"resident MB added by N={big} adapters, {paper}", mem[f"engine N={big}"]["over_base_mb"], "<=", 150.0),
        (
            f"resident MB added by N={big} adapters, {shipped}",
            mem[f"engine N={big}, all blocks v_proj"]["over_base_mb"],
            "<=",
            150.0,
        ),
    ]
    return [
        {"target": t, "measured": v, "op": op, "threshold": th, "met": bool(v >= th if op == ">=" else v <= th)}
        for t, v, op, th in out
    ]


def paired_ratio_rows(res: dict, num: str, den: str, n: int) -> float:
    raw = res["raw_e2e"][str(n)]
    return paired_ratio(raw[num], raw[den])


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "**no**"
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.{digits}f}"
    return str(x)


def md_table(rows: list[dict], cols: list[tuple[str, str]], digits: int = 2) -> str:
    head = "| " + " | ".join(title for _, title in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(key), digits) for key, _ in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def markdown(res: dict, s: Settings) -> str:
    short, long_ = s.lengths
    m = res["meta"]
    parts = [
        "# LoGo benchmark (issue #5)",
        "",
        f"{m['when']} · {m['cpu']} · {m['threads']} torch threads · torch {m['torch']} · transformers "
        f"{m['transformers']} · peft {m['peft']} · mode `{m['mode']}` · {m['wall_s']:.0f} s. "
        f"CPU free: {m['cpu_free']} (training job running at start/end: {m['training_at_start']}/{m['training_at_end']}; "
        f"other processes kept {m['others_cores']:.2f} cores busy on average during the run).",
        "",
        f"SmolLM2-135M-Instruct fp32, greedy, exactly {long_} new tokens (the {short}-token latency is read off the same "
        f"request's per-token clock, plus its end-of-request cost); synthetic adapters (rank {RANK}, "
        f"alpha {ALPHA}, {'+'.join(TARGETS)}); end-to-end pool N = {s.n_pool}; {s.e2e_prompts} prompt(s) x {s.reps} "
        "round(s), interleaved; medians; ratios are medians of paired ratios against the base model in the same round; "
        "decode tok/s = 1 / the median time between two tokens.",
        "",
        "## End to end, per request",
        "",
        md_table(
            res["e2e"],
            [
                ("contender", "contender"),
                ("setup_ms", "route+mix ms"),
                (f"e2e_{short}_s", f"{short} tok s"),
                (f"e2e_{short}_ratio", "x base"),
                (f"e2e_{long_}_s", f"{long_} tok s"),
                (f"e2e_{long_}_ratio", "x base"),
                ("decode_tps", "decode tok/s"),
                ("decode_ratio", "x base"),
            ],
        ),
        "",
        "`engine, no adapters` is the wrapped model with no mixture (the wrappers' own cost). The reference "
        "probes with the previous request's adapters active, as the authors' code does; PEFT merge probes the clean base.",
        "",
        "## Routing cost as the pool grows (engine.route, k = 3, warm)",
        "",
        md_table(
            res["probe_vs_n"],
            [
                ("routing", "probe at"),
                ("n", "N"),
                ("route_ms", "route ms"),
                ("ratio", "x smallest N"),
                ("first_route_s", "first route s (stacks + calibration)"),
                ("load_s", "pool load s"),
            ],
        ),
        "",
        "## Batched routing",
        "",
        md_table(
            [res["batched"]],
            [
                ("prompts", "prompts"),
                ("one_call_s", "route_batch s"),
                ("separate_calls_s", "separate calls s"),
                ("speedup", "speedup"),
                ("same_selection", "same selection"),
            ],
        ),
        "",
        "## Resident memory (psutil RSS, one subprocess per configuration, after a few requests)",
        "",
        md_table(
            res["memory"],
            [
                ("config", "configuration"),
                ("k", "k"),
                ("rss_mb", "RSS MB"),
                ("over_base_mb", "over base alone MB"),
                ("over_smallest_pool_mb", "over the smallest pool MB"),
            ],
            0,
        ),
        "",
        "The engine's fixed overhead (libraries it imports, e.g. peft to read adapter_config.json; calibration) "
        "shows in the smallest pool; the difference to it is what the extra adapters cost.",
        "",
        f"## dtype (engine from_config(dtype=...); decode of {s.dtype_tokens} tokens; routing agreement with fp32 on {res['dtype'][0]['prompts']} prompts, k = 3)",
        "",
        md_table(
            res["dtype"],
            [
                ("dtype", "dtype"),
                ("base_decode_tps", "base tok/s"),
                ("base_vs_fp32", "x fp32"),
                ("k3_decode_tps", "k=3 tok/s"),
                ("k3_vs_fp32", "x fp32"),
                ("same_topk", "same top-3 (synthetic)"),
                ("same_top1", "same top-1 (synthetic)"),
                ("trained_same_topk", f"same top-3 (trained, N={res['dtype'][0]['trained_pool']})"),
                ("trained_same_top1", "same top-1 (trained)"),
            ],
        ),
        "",
        "Synthetic random adapters score close together, so small numeric changes reorder them more easily than "
        f"trained adapters' would; the trained pool (when present) is routed on {res['dtype'][0]['trained_prompts']} "
        "test prompts of its own tasks.",
        "",
        "## Targets",
        "",
        md_table(
            res["targets"],
            [("target", "target"), ("measured", "measured"), ("op", ""), ("threshold", "target"), ("met", "met")],
        ),
        "",
        "Amortisation curve: `amortisation.png` / `amortisation.html` (time per generated token, setup included, against tokens generated).",
        "",
    ]
    return "\n".join(parts)


def plot_amortisation(curves: dict[str, list[float]], out: Path, keep: Sequence[str]) -> str | None:
    """The paper's figure: average time per generated token against tokens generated (left), and
    the same as a multiple of the base model's (right), where the routing cost amortises."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("ms per generated token (log scale)", "x the base model's time per token")
    )
    colours = ["#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3"]
    base = curves["base"]
    for name, colour in zip(keep, colours, strict=False):
        ys = curves[name]
        xs = list(range(1, len(ys) + 1))
        line = {"color": colour, "dash": "dot" if name.startswith("reference") else "solid"}
        fig.add_trace(go.Scatter(x=xs, y=[1000 * y for y in ys], name=name, line=line, legendgroup=name), 1, 1)
        ratio = [y / b for y, b in zip(ys, base, strict=True)]
        fig.add_trace(go.Scatter(x=xs, y=ratio, name=name, line=line, legendgroup=name, showlegend=False), 1, 2)
    fig.update_xaxes(title_text="generated tokens")
    fig.update_yaxes(type="log", tickvals=[20, 50, 100, 200, 500, 1000, 2000, 5000], row=1, col=1)
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_layout(
        title="Amortisation: (routing + mixing + prefill + decode time) / generated tokens",
        template="plotly_white",
        width=1200,
        height=520,
    )
    fig.write_html(out / "amortisation.html", include_plotlyjs="cdn")
    try:
        fig.write_image(out / "amortisation.png", scale=2)
    except Exception as e:  # kaleido needs a Chromium; the HTML is still written
        return f"PNG export failed: {e}"
    return None


def machine() -> dict:
    import peft
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
    }


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds busy on the whole machine, CPU seconds used by this process and its children)."""
    import psutil

    t = psutil.cpu_times()
    own = psutil.Process().cpu_times()
    return t.user + t.nice + t.system, own.user + own.system + own.children_user + own.children_system


def training_running() -> bool:
    res = subprocess.run(["pgrep", "-f", "logo_core.train"], capture_output=True, text=True)
    return bool(res.stdout.strip())


# --------------------------------------------------------------------------- main


def run(s: Settings, out: Path, mode: str, log=print, threads: int | None = None) -> dict:
    """Every figure of the issue in one run; writes JSON, markdown and the plot to `out`.

    Args:
        s: what to measure (`FULL` or `QUICK`).
        out: output folder.
        mode: a label for the report.
        log: progress messages.
        threads: torch intra-op threads for this run (restored after); None keeps torch's default.
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run(s, out, mode, log)
    finally:
        torch.set_num_threads(before)


def _run(s: Settings, out: Path, mode: str, log) -> dict:
    t_start = time.perf_counter()
    meta = {"mode": mode, "when": time.strftime("%Y-%m-%d %H:%M"), **machine()}
    meta["training_at_start"], meta["load_start"] = training_running(), os.getloadavg()[0]
    busy0 = busy_cpu_seconds()
    res: dict = {"settings": asdict(s)}
    with tempfile.TemporaryDirectory(prefix="logo-bench-") as tmp:
        root = Path(tmp)
        base_model, tok = load_base()
        eng_model, _ = load_base()
        n_all = max(s.n_pool, *s.pool_sizes, *s.memory_pools)
        t0 = time.perf_counter()
        adapters = write_adapters(eng_model, root / "adapters", n_all)
        log(f"wrote {n_all} synthetic adapters in {time.perf_counter() - t0:.1f}s")
        pool = dict(list(adapters.items())[: s.n_pool])
        engine = build_engine(eng_model, tok, pool, root)
        peft_ref = load_peft(load_base()[0], pool)
        peft_merge = load_peft(load_base()[0], pool)
        log(f"models ready ({time.perf_counter() - t_start:.0f}s)")

        ks = [k for k in s.ks if k <= s.n_pool]
        peer_ks = [k for k in s.peer_ks if k <= s.n_pool]
        contenders = [Base(base_model, engine), Engine(engine, 0)]
        contenders += [Engine(engine, k) for k in ks] + [Reference(peft_ref, engine, k) for k in peer_ks]
        contenders += [PeftMerge(peft_merge, engine, k) for k in peer_ks]
        log("end to end ...")
        samples = run_e2e(contenders, PROMPTS[: s.e2e_prompts], s.lengths[1], s.reps, log)
        res["e2e"] = summarise_e2e(samples, contenders, s.lengths)
        res["raw_e2e"] = {str(n): {c: [x.latency(n) for x in v] for c, v in samples.items()} for n in s.lengths}
        res["raw_decode_tps"] = {c: [x.decode_tps for x in v] for c, v in samples.items()}
        curves = amortisation(samples)
        res["amortisation"] = {"ms_per_token": {c: [1000 * y for y in ys] for c, ys in curves.items()}}
        del peft_ref, peft_merge, contenders, base_model
        gc.collect()

        log("routing cost against pool size ...")
        res["probe_vs_n"] = probe_vs_n(eng_model, tok, root, s.pool_sizes, PROMPTS[:4], s.route_reps, log)
        log("batched routing ...")
        res["batched"] = batched_routing(engine, PROMPTS[: s.batch], max(2, s.reps + 1))
        log("dtypes ...")
        yaml_path = root / "adapters.yaml"
        from .registry import save_config

        save_config(pool_config(pool, root), yaml_path)
        trained = trained_pool(Path(s.trained_pool)) if s.trained_pool else None
        log(f"  trained pool for routing agreement: {len(trained[0].adapters) if trained else 'none yet'}")
        res["dtype"] = dtype_compare(
            yaml_path, PROMPTS[: s.dtype_timed], PROMPTS[: s.dtype_prompts], s.dtype_tokens, s.reps, 3, log, trained
        )
        del engine, eng_model
        gc.collect()
        log("memory (one subprocess per configuration) ...")
        first = lambda n: dict(list(adapters.items())[:n])  # noqa: E731
        paper, shipped = ROUTINGS.values()
        big = s.memory_pools[-1]
        configs = {"base alone": ({}, 0, {})}
        configs |= {f"engine N={n}": (first(n), 3, paper) for n in s.memory_pools}
        configs[f"engine N={big}, all blocks v_proj"] = (first(big), 3, shipped)
        if s.memory_extras:
            configs[f"engine N={big}, k={s.ks[-1]}"] = (first(big), min(s.ks[-1], big), paper)
            configs[f"reference N={s.n_pool}"] = (first(s.n_pool), 3, {})
        res["memory"] = memory(configs, root, log, requests=4 if s.memory_extras else 2)

    meta["training_at_end"], meta["load_end"] = training_running(), os.getloadavg()[0]
    meta["wall_s"] = time.perf_counter() - t_start
    busy1 = busy_cpu_seconds()
    # Cores kept busy by other processes on average during the run: the noise on our timings.
    meta["others_cores"] = max(0.0, (busy1[0] - busy0[0]) - (busy1[1] - busy0[1])) / meta["wall_s"]
    meta["cpu_free"] = not (meta["training_at_start"] or meta["training_at_end"]) and meta["others_cores"] < 0.15
    res["meta"] = meta
    res["targets"] = targets(res, s)
    out.mkdir(parents=True, exist_ok=True)
    big = s.ks[-1]
    keep = ["base", "engine k=3", f"engine k={big}", "reference k=3", f"reference k={big}"]
    res["amortisation"]["png_error"] = plot_amortisation(curves, out, keep)
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "bench.md").write_text(markdown(res, s))
    return res


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m logo_core.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small pools, few tokens, one repetition (smoke run)")
    ap.add_argument(
        "--out", type=Path, default=None, help="output folder (default docs/bench, docs/bench/quick with --quick)"
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; with --quick, 1 on a busy machine)"
    )
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return
    out = args.out or Path("docs/bench/quick" if args.quick else "docs/bench")
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    if training_running():
        log("warning: a training job (logo_core.train) is running: timings will be noisy")
    # A smoke run on a busy machine: one thread degrades gently, several threads spin on each other.
    threads = args.threads or (1 if args.quick and os.getloadavg()[0] > 1.0 else None)
    res = run(QUICK if args.quick else FULL, out, "quick" if args.quick else "full", log, threads)
    print(markdown(res, QUICK if args.quick else FULL))
    log(f"wrote {out}/bench.json, bench.md, amortisation.png/.html")


if __name__ == "__main__":
    main()
