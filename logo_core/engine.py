"""Orchestration only: probe -> signals -> select -> generate with the private mixture.

Example:
    >>> engine = LoGoEngine.from_config("adapters.yaml")
    >>> r = engine.route("What is 47 + 38?", k=3)
    >>> r.selected, r.weights
    >>> engine.generate("What is 47 + 38?", max_new_tokens=32).text
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn
from transformers import StoppingCriteria, StoppingCriteriaList

from .errors import RequestError
from .loading import block_modules, decoder_layers, load_base
from .mixing import Mixture, MixtureLinear, build_mixture, select_top_k, use_mixture
from .pool import AdapterPool, LoadReport, load_pool
from .probe import RESIDUAL, install_probe_hooks, run_probe
from .registry import NEUTRAL_PROMPTS, PoolConfig, RoutingDefaults, load_config
from .signals import SIGNALS, lora_outputs

MAX_NEW_TOKENS_CAP = 1024  # a request above this is clamped, with a notice
PROBE_INPUTS = ("residual", "module")


@dataclass(frozen=True)
class RouteOptions:
    """Validated routing settings: the blocks and modules to listen at, and how to score."""

    k: int
    signal: str
    calibrated: bool
    layers: tuple[int, ...]  # non-negative block indices
    modules: tuple[str, ...]
    probe_input: str

    def wants(self) -> set[tuple[int, str]]:
        """Probe capture keys these options need."""
        if self.probe_input == "residual":
            return {(b, RESIDUAL) for b in self.layers}
        return {(b, m) for b in self.layers for m in self.modules}


@dataclass
class Routing:
    """The routing trace of one prompt: every adapter's score, the chosen k, their weights."""

    prompt: str
    scores: dict[str, float]  # every adapter of the pool, pool order
    selected: list[str]  # best first
    weights: dict[str, float]  # selected -> merge weight, sums to 1
    options: dict
    timings: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """A generated answer, its routing and its timings (seconds)."""

    text: str
    routing: Routing
    timings: dict[str, float]
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


class GenerationStream:
    """Iterate over text pieces as they are decoded; `routing` is ready before the first piece and
    `result` (a `Generation`) after the last."""

    def __init__(self, routing: Routing, pieces: Iterator[str], finish, stop: threading.Event) -> None:
        self.routing, self._pieces, self._finish, self._stop = routing, pieces, finish, stop
        self.result: Generation | None = None

    def __iter__(self) -> Iterator[str]:
        text = []
        try:
            for piece in self._pieces:
                text.append(piece)
                yield piece
        finally:  # also when the consumer stops early (a UI Stop button closes the generator)
            self._stop.set()
        self.result = self._finish("".join(text))

    def close(self) -> None:
        """Stop decoding at the next token; the background generation thread then ends."""
        self._stop.set()


class _StopOnEvent(StoppingCriteria):
    """Ends generation when an event is set (a cancelled stream)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def parse_layers(layer: int | str | Sequence[int], n_layers: int) -> tuple[int, ...]:
    """`-1`, `"20"`, `"15:30"` (a slice) or `[3, 5]` -> sorted non-negative block indices."""

    def check(i: int) -> int:
        if not -n_layers <= i < n_layers:
            raise RequestError(
                f"`layer` must be between {-n_layers} and {n_layers - 1} (the model has {n_layers} blocks), got {i}"
            )
        return i % n_layers

    if isinstance(layer, bool):
        raise RequestError(f"`layer` must be an int, 'a:b' or a list of ints, got {layer!r}")
    if isinstance(layer, int):
        return (check(layer),)
    if isinstance(layer, str):
        text = layer.strip()
        try:
            if ":" in text:
                a, b = (int(p) if p.strip() else None for p in text.split(":", 1))
                blocks = range(n_layers)[slice(a, b)]
                if a is not None:
                    check(a)
                if not blocks:
                    raise RequestError(f"`layer` range {layer!r} selects no block of {n_layers}")
                return tuple(blocks)
            return (check(int(text)),)
        except ValueError as e:
            if isinstance(e, RequestError):
                raise
            raise RequestError(f"`layer` must be an int, 'a:b' or a list of ints, got {layer!r}") from None
    blocks = sorted({check(int(i)) for i in layer})
    if not blocks:
        raise RequestError("`layer` list is empty")
    return tuple(blocks)


def _wrap_linears(model: nn.Module) -> None:
    """Put a `MixtureLinear` around every linear layer of every block, once."""
    for b, layer in enumerate(decoder_layers(model)):
        for name, path in block_modules(model).items():
            base = layer.get_submodule(path)
            if isinstance(base, MixtureLinear):
                continue
            parent_path, _, child = path.rpartition(".")
            parent = layer.get_submodule(parent_path) if parent_path else layer
            w = base.weight() if callable(getattr(base, "weight", None)) else base.weight
            d_in = getattr(base, "in_features", w.shape[1])
            d_out = getattr(base, "out_features", w.shape[0])
            setattr(parent, child, MixtureLinear(base, (b, name), d_in, d_out))


class LoGoEngine:
    """Route prompts over an adapter pool and generate with each prompt's own mixture.

    The model is shared and never mutated per request: it is wrapped once at construction,
    and each request's mixture is passed through a context variable.

    Args:
        model: a transformers causal LM (Llama/Qwen2/DeepSeek-style `model.layers`).
        tokenizer: its tokenizer.
        pool: the validated adapters.
        defaults: default routing settings (from adapters.yaml).
        neutral_prompts: prompts used for calibration.
        load_report: adapters skipped at load time (shown by the app and CLI).
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        pool: AdapterPool,
        defaults: RoutingDefaults | None = None,
        neutral_prompts: Sequence[str] = NEUTRAL_PROMPTS,
        load_report: LoadReport | None = None,
        model_name: str | None = None,
        probe_cache_size: int = 0,
    ) -> None:
        self.model, self.tokenizer, self.pool = model, tokenizer, pool
        self.model_name = model_name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        # Probe vectors of recent single prompts (all blocks), so that re-routing the same prompt with
        # other settings (a UI slider) costs no forward pass. Off by default: benchmarks and batch
        # jobs should pay for every probe.
        self.probe_cache_size = probe_cache_size
        self._probe_cache: OrderedDict[tuple, dict] = OrderedDict()
        self.defaults = defaults or RoutingDefaults()
        self.neutral_prompts = list(neutral_prompts)
        self.load_report = load_report or LoadReport({})
        self.n_layers = len(decoder_layers(model))
        _wrap_linears(model)
        install_probe_hooks(model)
        self._neutral: dict[tuple[int, str], Tensor] = {}
        self._calibration: dict[tuple, Tensor] = {}
        self._lock = threading.Lock()
        ctx = getattr(model.config, "max_position_embeddings", None) or 2048
        self.context_length = int(ctx)

    @classmethod
    def from_config(cls, path: str | Path = "adapters.yaml", dtype: str | None = None, **kwargs) -> LoGoEngine:
        """Load the base model and the adapter pool described by `adapters.yaml`, then warm up.

        Args:
            path: the pool file.
            dtype: override the file's base model dtype (`fp32`, `bf16`, `int8`).
            **kwargs: passed to the constructor (e.g. `probe_cache_size`).
        """
        cfg = load_config(path)
        return cls.from_pool_config(cfg, dtype=dtype, **kwargs)

    @classmethod
    def from_pool_config(cls, cfg: PoolConfig, dtype: str | None = None, **kwargs) -> LoGoEngine:
        spec = cfg.base_model if dtype is None else cfg.base_model.model_copy(update={"dtype": dtype})
        model, tok = load_base(spec)
        pool, report = load_pool(cfg, model)
        name = "SmolLM2-135M-Instruct" if spec.id == "default" else spec.id
        engine = cls(model, tok, pool, cfg.defaults, cfg.neutral_prompts, report, model_name=name, **kwargs)
        engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """Run the neutral-prompt calibration pass now rather than in the first request. Returns seconds."""
        t0 = time.perf_counter()
        try:
            opts = self.options()
        except RequestError:  # an empty pool or defaults that do not fit it: requests will say so
            return 0.0
        for b in opts.layers:
            for m in opts.modules:
                self.calibration(b, m, opts.signal, opts.probe_input)
        return time.perf_counter() - t0

    @property
    def adapters(self) -> list[str]:
        return list(self.pool.names)

    # ------------------------------------------------------------------ validation

    def options(
        self,
        k: int | None = None,
        signal: str | None = None,
        calibrated: bool | None = None,
        layer: int | str | Sequence[int] | None = None,
        module: str | Sequence[str] | None = None,
        probe_input: str | None = None,
    ) -> RouteOptions:
        """Fill in defaults and validate routing settings; raises `RequestError` with the fix."""
        d = self.defaults
        n = len(self.pool)
        if n == 0:
            raise RequestError("the adapter pool is empty: add adapters to adapters.yaml")
        k = min(d.k, n) if k is None else k  # a default larger than a (partly skipped) pool shrinks
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
            raise RequestError(f"`k` must be between 1 and {n} (the pool size), got {k!r}")
        signal = d.signal if signal is None else signal
        if signal not in SIGNALS:
            raise RequestError(f"`signal` must be one of {sorted(SIGNALS)}, got {signal!r}")
        probe_input = d.probe_input if probe_input is None else probe_input
        if probe_input not in PROBE_INPUTS:
            raise RequestError(f"`probe_input` must be one of {list(PROBE_INPUTS)}, got {probe_input!r}")
        module = d.module if module is None else module
        modules = [m.strip() for m in module.split(",")] if isinstance(module, str) else list(module)
        for m in modules:
            if m not in self.pool.modules:
                raise RequestError(f"`module` {m!r} is not adapted by any adapter; choose from {self.pool.modules}")
        layers = parse_layers(d.layer if layer is None else layer, self.n_layers)
        calibrated = d.calibrated if calibrated is None else bool(calibrated)
        return RouteOptions(k, signal, calibrated, layers, tuple(modules), probe_input)

    def _encode(self, prompts: Sequence[str], max_new_tokens: int = 0) -> tuple[dict, list[list[str]]]:
        """Chat-template and left-pad prompts, truncating over-long ones with a notice."""
        if isinstance(prompts, str) or not prompts:
            raise RequestError("`prompts` must be a non-empty list of strings")
        tok = self.tokenizer
        budget = min(self.defaults.max_prompt_tokens, self.context_length - max_new_tokens) - 32  # template room
        texts, notices = [], []
        for p in prompts:
            if not isinstance(p, str):
                raise RequestError(f"`prompt` must be a string, got {type(p).__name__}")
            if not p.strip():
                raise RequestError("`prompt` is empty: type a question or instruction")
            row: list[str] = []
            ids = tok(p, add_special_tokens=False)["input_ids"]
            if len(ids) > budget:
                p = tok.decode(ids[:budget])
                row.append(
                    f"Prompt truncated from {len(ids)} to {budget} tokens (the limit for this model and length)."
                )
            if tok.chat_template:
                p = tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                )
            texts.append(p)
            notices.append(row)
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=not tok.chat_template)
        device = next(self.model.parameters()).device
        return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}, notices

    # ------------------------------------------------------------------ routing

    def _neutral_vectors(self, key: tuple[int, str]) -> Tensor:
        """Probe vectors of the neutral prompts at every block and module (one pass, cached)."""
        with self._lock:
            if not self._neutral:
                enc, _ = self._encode(self.neutral_prompts)
                wants = {(b, RESIDUAL) for b in range(self.n_layers)}
                wants |= {(b, m) for b in range(self.n_layers) for m in self.pool.modules}
                self._neutral = run_probe(self.model, enc["input_ids"], enc["attention_mask"], wants)
            return self._neutral[key]

    def calibration(self, block: int, module: str, signal: str, probe_input: str) -> Tensor:
        """c_i: mean signal of each adapter over the neutral prompts (LOGO.md 2), cached. [N]"""
        key = (block, module, signal, probe_input)
        if key not in self._calibration:
            h = self._neutral_vectors((block, RESIDUAL if probe_input == "residual" else module))
            c = SIGNALS[signal](lora_outputs(h, *self.pool.probe_stack(block, module))).mean(0)
            # An adapter that does not touch this module has c = 0: leave its (zero) score as is.
            self._calibration[key] = torch.where(c > 0, c, torch.ones_like(c))
        return self._calibration[key]

    def _signals(self, hs: dict[tuple[int, str], Tensor], opts: RouteOptions) -> Tensor:
        """Per-prompt adapter scores [B, N], averaged over the probed blocks and modules."""
        total = 0
        for b in opts.layers:
            for m in opts.modules:
                h = hs[(b, RESIDUAL if opts.probe_input == "residual" else m)]
                sig = SIGNALS[opts.signal](lora_outputs(h, *self.pool.probe_stack(b, m)))  # [B, N]
                # An adapter that does not adapt m says nothing there (entropy of o = 0 is not 0).
                sig = sig * self.pool.has_module(b, m)
                if opts.calibrated:
                    sig = sig / self.calibration(b, m, opts.signal, opts.probe_input)
                total = total + sig
        return total / (len(opts.layers) * len(opts.modules))

    def route_batch(self, prompts: Sequence[str], **kwargs) -> list[Routing]:
        """Route several prompts with one probe pass (see `route` for the arguments)."""
        opts = self.options(**kwargs)
        t0 = time.perf_counter()
        enc, notices = self._encode(prompts)
        return self._route(prompts, enc, notices, opts, t0)

    def _probe(self, enc: dict, wants: set[tuple[int, str]]) -> dict[tuple[int, str], Tensor]:
        """`run_probe`, through the per-prompt cache when it is on (single prompts only, so a
        prompt's vectors never depend on what it was batched with)."""
        if not self.probe_cache_size or enc["input_ids"].shape[0] != 1:
            return run_probe(self.model, enc["input_ids"], enc["attention_mask"], wants)
        key = tuple(enc["input_ids"][0].tolist())
        with self._lock:
            hit = self._probe_cache.get(key)
            if hit is not None and wants <= hit.keys():
                self._probe_cache.move_to_end(key)
                return hit
        # A miss captures every block up to the deepest one wanted: same pass, any later setting hits.
        last = max(b for b, _ in wants)
        everything = {(b, m) for b in range(last + 1) for m in (RESIDUAL, *self.pool.modules)}
        hs = run_probe(self.model, enc["input_ids"], enc["attention_mask"], wants | everything)
        with self._lock:
            self._probe_cache[key] = {**self._probe_cache.get(key, {}), **hs}
            while len(self._probe_cache) > self.probe_cache_size:
                self._probe_cache.popitem(last=False)
        return hs

    def _route(
        self, prompts: Sequence[str], enc: dict, notices: list[list[str]], opts: RouteOptions, t0: float
    ) -> list[Routing]:
        hs = self._probe(enc, opts.wants())
        scores = self._signals(hs, opts)  # [B, N]
        probe_s = time.perf_counter() - t0
        out = []
        for i, prompt in enumerate(prompts):
            idx, w = select_top_k(scores[i], opts.k)
            out.append(
                Routing(
                    prompt=prompt,
                    scores={n: float(s) for n, s in zip(self.pool.names, scores[i].tolist())},
                    selected=[self.pool.names[j] for j in idx],
                    weights={self.pool.names[j]: wj for j, wj in zip(idx, w)},
                    options=self._trace_options(opts),
                    timings={"probe_s": probe_s / len(prompts)},
                    notices=notices[i],
                )
            )
        return out

    def route(self, prompt: str, **kwargs) -> Routing:
        """Score every adapter for this prompt and pick the top k.

        Args:
            prompt: the user's message (chat template applied here).
            k: how many adapters to merge (1..N).
            signal: `norm` or `entropy`.
            calibrated: divide by each adapter's mean signal on neutral prompts.
            layer: probe block(s): int (negative from the end), `a:b`, or a list.
            module: adapted module(s) to probe (`q_proj`, `q_proj,v_proj`, ...).
            probe_input: `residual` (block input, the reference) or `module` (the module's input).

        Returns:
            A `Routing` with scores for every adapter, the selected names and their weights.
        """
        return self.route_batch([prompt], **kwargs)[0]

    def layer_sweep(self, prompt: str, **kwargs) -> Tensor:
        """Scores of every adapter at every block for one prompt, from one full probe pass. [L, N]

        Takes the routing keywords of `route` (`layer` is ignored: every block is scored).
        """
        opts = self.options(**{**kwargs, "layer": -1})
        sweep = self.sweep_batch([prompt], opts.modules, (opts.probe_input,), (opts.signal,), (opts.calibrated,))
        return torch.stack([sweep[(opts.probe_input, m, opts.signal, opts.calibrated)][0] for m in opts.modules]).mean(
            0
        )

    def sweep_batch(
        self,
        prompts: Sequence[str],
        modules: Sequence[str] | None = None,
        probe_inputs: Sequence[str] = PROBE_INPUTS,
        signals: Sequence[str] = tuple(SIGNALS),
        calibrated: Sequence[bool] = (False, True),
    ) -> dict[tuple[str, str, str, bool], Tensor]:
        """Every block's scores under many settings from ONE full probe pass (for analyses).

        Returns:
            {(probe_input, module, signal, calibrated): [B, L, N] scores}.
        """
        modules = list(modules or self.pool.modules)
        for m in modules:
            self.options(module=m)  # validates
        enc, _ = self._encode(prompts)
        wants = {(b, RESIDUAL) for b in range(self.n_layers)} | {(b, m) for b in range(self.n_layers) for m in modules}
        hs = self._probe(enc, wants)
        out = {}
        for pi in probe_inputs:
            for m in modules:
                for sig in signals:
                    for cal in calibrated:
                        opts = [RouteOptions(1, sig, cal, (b,), (m,), pi) for b in range(self.n_layers)]
                        out[(pi, m, sig, cal)] = torch.stack([self._signals(hs, o) for o in opts], dim=1)
        return out

    # ------------------------------------------------------------------ generation

    @staticmethod
    def _trace_options(opts: RouteOptions | None) -> dict:
        """The settings as a trace records them; the same keys whether routed or explicit."""
        if opts is None:
            keys = ("k", "signal", "calibrated", "layers", "modules", "probe_input")
            return {"mode": "explicit", **dict.fromkeys(keys)}
        return {
            "mode": "routed",
            "k": opts.k,
            "signal": opts.signal,
            "calibrated": opts.calibrated,
            "layers": list(opts.layers),
            "modules": list(opts.modules),
            "probe_input": opts.probe_input,
        }

    def _explicit_routing(self, prompt: str, adapters: dict[str, float]) -> Routing:
        for name in adapters:
            if name not in self.pool.names:
                raise RequestError(f"unknown adapter {name!r}; the pool has {self.pool.names}")
        return Routing(prompt, {}, list(adapters), dict(adapters), self._trace_options(None))

    def mixture_for(self, routings: Sequence[Routing]) -> Mixture | None:
        """The low-rank mixture of each routed row (one shared mixture when all rows agree)."""
        rows = [
            [(self.pool.factors(n), w * self.pool.files[self.pool.index(n)].scale) for n, w in r.weights.items()]
            for r in routings
        ]
        if not any(rows):
            return None
        if all(r.weights == routings[0].weights for r in routings):
            rows = rows[:1]
        return build_mixture(rows)

    def _plan(self, prompts, max_new_tokens, adapters, kwargs):
        if max_new_tokens is None:
            max_new_tokens = self.defaults.max_new_tokens
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise RequestError(f"`max_new_tokens` must be a positive integer, got {max_new_tokens!r}")
        notice = []
        if max_new_tokens > MAX_NEW_TOKENS_CAP:
            notice = [f"max_new_tokens {max_new_tokens} capped to {MAX_NEW_TOKENS_CAP}."]
            max_new_tokens = MAX_NEW_TOKENS_CAP
        t0 = time.perf_counter()
        opts = self.options(**kwargs) if adapters is None else None
        enc, notices = self._encode(prompts, max_new_tokens)  # the probe sees what generation sees
        if adapters is None:
            routings = self._route(prompts, enc, notices, opts, t0)
        else:
            routings = [self._explicit_routing(p, a) for p, a in zip(prompts, adapters, strict=True)]
        mixture = self.mixture_for(routings)
        return routings, enc, [n + notice for n in notices], mixture, max_new_tokens, time.perf_counter() - t0

    def _generate_ids(
        self, enc: dict, mixture: Mixture | None, max_new_tokens: int, sampling: dict, streamer=None, stop=None
    ) -> Tensor:
        gen = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        if sampling.get("do_sample"):
            gen = {"do_sample": True, "temperature": sampling["temperature"], "top_p": sampling["top_p"], "top_k": None}
        gen["min_new_tokens"] = min(sampling.get("min_new_tokens") or 0, max_new_tokens) or None
        if stop is not None:
            gen["stopping_criteria"] = StoppingCriteriaList([_StopOnEvent(stop)])
        with use_mixture(mixture):
            return self.model.generate(
                **enc, max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, streamer=streamer, **gen
            )

    def generate_batch(
        self,
        prompts: Sequence[str],
        max_new_tokens: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        adapters: Sequence[dict[str, float]] | None = None,
        min_new_tokens: int = 0,
        **kwargs,
    ) -> list[Generation]:
        """Route and generate a batch; each row gets its own mixture (see `generate`)."""
        t0 = time.perf_counter()
        routings, enc, notices, mixture, max_new_tokens, plan_s = self._plan(prompts, max_new_tokens, adapters, kwargs)
        t1 = time.perf_counter()
        sampling = {
            "do_sample": do_sample,
            "temperature": temperature,
            "top_p": top_p,
            "min_new_tokens": min_new_tokens,
        }
        out = self._generate_ids(enc, mixture, max_new_tokens, sampling)
        t2 = time.perf_counter()
        new = out[:, enc["input_ids"].shape[1] :]
        results = []
        for i, r in enumerate(routings):
            timings = self._timings(r, new[i], generate_s=t2 - t1, total_s=t2 - t0)
            text = self.tokenizer.decode(new[i], skip_special_tokens=True)
            results.append(Generation(text, r, timings, notices[i]))
        return results

    def _timings(self, routing: Routing, new_ids: Tensor, generate_s: float, total_s: float) -> dict[str, float]:
        """probe, prefill + decode and total seconds, and the tokens generated (up to the first EOS)."""
        hits = (new_ids == self.tokenizer.eos_token_id).nonzero()
        n_tok = int(hits[0, 0]) + 1 if len(hits) else int(new_ids.shape[0])
        return {
            "probe_s": routing.timings.get("probe_s", 0.0),
            "generate_s": generate_s,
            "total_s": total_s,
            "new_tokens": n_tok,
            "tokens_per_s": n_tok / max(generate_s, 1e-9),
        }

    def generate(
        self, prompt: str, max_new_tokens: int | None = None, adapters: dict[str, float] | None = None, **kwargs
    ) -> Generation:
        """Route a prompt and answer it with the weighted mixture of its top-k adapters.

        Args:
            prompt: the user's message.
            max_new_tokens: generation length (default from adapters.yaml, capped at 1024).
            adapters: skip routing and use these {name: weight} (`{}` = the base model alone).
            do_sample, temperature, top_p: sampling (greedy by default).
            min_new_tokens: do not stop at EOS before this many tokens (benchmarks).
            **kwargs: routing settings, as for `route`.

        Returns:
            A `Generation`: text, routing trace, timings (probe, prefill+decode, total).
        """
        batch = None if adapters is None else [adapters]
        return self.generate_batch([prompt], max_new_tokens, adapters=batch, **kwargs)[0]

    def stream(
        self,
        prompt: str,
        max_new_tokens: int | None = None,
        adapters: dict[str, float] | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float = 1.0,
        min_new_tokens: int = 0,
        timeout: float = 120.0,
        **kwargs,
    ) -> GenerationStream:
        """Like `generate`, but returns a `GenerationStream` that yields text as it is decoded."""
        from transformers import TextIteratorStreamer

        t0 = time.perf_counter()
        batch = None if adapters is None else [adapters]
        routings, enc, notices, mixture, max_new_tokens, _ = self._plan([prompt], max_new_tokens, batch, kwargs)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
        box: dict = {}
        stop = threading.Event()
        sampling = {
            "do_sample": do_sample,
            "temperature": temperature,
            "top_p": top_p,
            "min_new_tokens": min_new_tokens,
        }

        def work() -> None:
            t1 = time.perf_counter()
            try:
                box["ids"] = self._generate_ids(enc, mixture, max_new_tokens, sampling, streamer, stop)
            except BaseException as e:  # surfaced to the consumer in finish()
                box["error"] = e
                streamer.end()
            box["generate_s"] = time.perf_counter() - t1

        thread = threading.Thread(target=work, daemon=True)
        thread.start()

        def finish(text: str) -> Generation:
            thread.join()
            if "error" in box:
                raise box["error"]
            new = box["ids"][0, enc["input_ids"].shape[1] :]
            timings = self._timings(routings[0], new, box["generate_s"], time.perf_counter() - t0)
            return Generation(text, routings[0], timings, notices[0])

        return GenerationStream(routings[0], iter(streamer), finish, stop)
