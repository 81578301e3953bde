"""Orchestration only: probe -> signals -> select -> generate with the request's private mixture.

Example:
    >>> engine = LoGoEngine.from_config("adapters.yaml")
    >>> r = engine.route("What is 47 + 38?", k=3)
    >>> r.selected, r.weights
    >>> engine.generate("What is 47 + 38?", max_new_tokens=32).text
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import signals
from .anatomy import decoder_layers
from .errors import RequestError
from .generation import SeededSampler, StopOnEvent, count_tokens, generation_config, stream_in_thread
from .loading import Placement, input_device, load, provenance, site_placement
from .mixing import Mixture, attach, select_top_k, ties_at_cut
from .options import (  # noqa: I001
    GENERATE_FIELDS,
    ROUTE_FIELDS,
    Context,
    GenerateOptions,
    RouteOptions,
    check_mixture,
    check_prompt,
    check_prompts,
    split_kwargs,
)
from .pool import AdapterPool, LoadReport, load_pool
from .probe import RESIDUAL, ProbeCache, run_probe, wants_for
from .prompts import Encoded, PromptEncoder
from .registry import PoolConfig, load_config, with_overrides
from .results import Generation, Routing


@dataclass
class Plan:
    """One request, ready to decode: its rows' routings, inputs, settings and mixture."""

    routings: list[Routing]
    enc: Encoded
    gen: GenerateOptions
    mixture: Mixture | None
    started: float


class LoGoEngine:
    """Route prompts over an adapter pool and generate with each prompt's own mixture.

    The model is shared and never modified: the probe and every generation run on private views
    of it (`views.private_view`), so concurrent requests cannot see each other's adapters.

    Args:
        model: a transformers causal LM (`model.layers` blocks), placed by `loading.load`.
        tokenizer: its tokenizer.
        pool: the validated adapters.
        config: adapters.yaml (defaults, engine settings, neutral prompts); the built-in ones if None.
        placement: device and dtypes (read off the model if None).
        probe_model: the model the probe runs (a copy in another dtype), else `model`.
        load_report: adapters skipped at load time (the app and CLI show them).
        provenance: model id, revision and adapter hashes, recorded in every generation.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        pool: AdapterPool,
        config: PoolConfig | None = None,
        placement: Placement | None = None,
        probe_model: nn.Module | None = None,
        load_report: LoadReport | None = None,
        provenance: dict | None = None,
    ) -> None:
        cfg = config or PoolConfig()
        self.model, self.tokenizer, self.pool = model, tokenizer, pool
        self.probe_model = probe_model or model
        self.placement = placement or Placement(input_device(model), "fp32", next(model.parameters()).dtype)
        self.defaults, self.settings, self.neutral_prompts = cfg.defaults, cfg.engine, list(cfg.neutral_prompts)
        self.load_report = load_report or LoadReport({})
        self.provenance = provenance or {"model": str(getattr(model.config, "_name_or_path", type(model).__name__))}
        self.n_layers = len(decoder_layers(model))
        self.context = Context(len(pool), self.n_layers, tuple(pool.modules))
        ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self.encode = PromptEncoder(tokenizer, self.settings.max_prompt_tokens, ctx)
        self.probe_cache = (
            ProbeCache(int(self.settings.probe_cache_mb * 2**20)) if self.settings.probe_cache_mb else None
        )
        on_cpu = self.placement.device.type == "cpu"
        self.fold = self.settings.mixture == "fold" or (self.settings.mixture == "auto" and on_cpu)
        self.decoder = None  # a compiled decode path (`compiled.CompiledDecoder`), when enabled
        self._neutral: dict = {}
        self._calibration: dict[tuple, Tensor] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, path: str | Path = "adapters.yaml", **base_model) -> LoGoEngine:
        """Load the base model and the adapter pool of `adapters.yaml`, then calibrate.

        Args:
            path: the pool file.
            **base_model: overrides of its `base_model` fields (e.g. `dtype="bf16"`, `device="cpu"`).
        """
        return cls.from_pool_config(with_overrides(load_config(path), base_model=base_model))

    @classmethod
    def from_pool_config(cls, cfg: PoolConfig) -> LoGoEngine:
        loaded = load(cfg.base_model)
        model = loaded.model
        pool, report = load_pool(cfg, model, where=lambda key: site_placement(model, *key, loaded.placement))
        origin = provenance(cfg.base_model, loaded.placement, pool.files)
        engine = cls(model, loaded.tokenizer, pool, cfg, loaded.placement, loaded.probe_model, report, origin)
        engine.warm_up()
        return engine

    def warm_up(self) -> float:
        """Calibrate the default setting now rather than in the first request. Returns seconds."""
        t0 = time.perf_counter()
        try:
            opts = self.options()
        except RequestError:  # an empty pool or defaults that do not fit it: requests will say so
            return 0.0
        for b in opts.blocks:
            for m in opts.module:
                self.calibration(b, m, opts.signal, opts.probe_input)
        return time.perf_counter() - t0

    @property
    def adapters(self) -> list[str]:
        return list(self.pool.names)

    # ------------------------------------------------------------------ validation

    def options(self, **route) -> RouteOptions:
        """The defaults of adapters.yaml overridden by `route` (None = default), checked against this
        engine; raises `RequestError` with the fix."""
        if not self.pool.files:
            raise RequestError("the adapter pool is empty: add adapters to adapters.yaml")
        values = {f: getattr(self.defaults, f) for f in ROUTE_FIELDS}
        if "k" not in route or route["k"] is None:
            values["k"] = min(self.defaults.k, len(self.pool))  # a default larger than a partly skipped pool
        return RouteOptions.resolve({**values, **route}, self.context)

    def generate_options(self, **gen) -> GenerateOptions:
        return GenerateOptions.resolve({**{f: getattr(self.defaults, f) for f in GENERATE_FIELDS}, **gen})

    # ------------------------------------------------------------------ routing

    def calibration(self, block: int, module: str, signal: str, probe_input: str) -> Tensor:
        """c_i for one site (LOGO.md 2), from one probe pass of the neutral prompts (cached). [N]"""
        key = (block, module, signal, probe_input)
        with self._lock:
            if not self._neutral:
                enc = self.encode(self.neutral_prompts, 0, self.placement.device)
                every = {(b, m) for b in range(self.n_layers) for m in (RESIDUAL, *self.pool.modules)}
                self._neutral = run_probe(self.probe_model, enc.input_ids, enc.attention_mask, every)
            if key not in self._calibration:
                h = self._neutral[(block, RESIDUAL if probe_input == "residual" else module)]
                self._calibration[key] = signals.calibration(self._site(h, block, module), signal)
            return self._calibration[key]

    def _site(self, h: Tensor, block: int, module: str, calibration: Tensor | None = None) -> signals.Site:
        A, Bs, mask = self.pool.probe_stack((block, module))
        return signals.Site(h.to(A.device), A, Bs, mask, calibration)

    def _sites(self, hs: dict, opts: RouteOptions, block: int | None = None, module: str | None = None) -> list:
        """The probed sites of `opts` (or one block / module of them), calibrated if asked."""
        out = []
        for b in opts.blocks if block is None else (block,):
            for m in opts.module if module is None else (module,):
                cal = self.calibration(b, m, opts.signal, opts.probe_input) if opts.calibrated else None
                out.append(self._site(hs[(b, RESIDUAL if opts.probe_input == "residual" else m)], b, m, cal))
        return out

    def _probe(self, enc: Encoded, wants: set) -> dict:
        """`run_probe`, through the probe cache for single prompts (a prompt's vectors never depend on
        what it was batched with). A miss captures every block up to the deepest one wanted, so any
        later setting on the same prompt hits."""
        if self.probe_cache is None or enc.input_ids.shape[0] != 1:
            return run_probe(self.probe_model, enc.input_ids, enc.attention_mask, wants)
        key = tuple(enc.input_ids[0].tolist())
        hit = self.probe_cache.get(key, wants)
        if hit is not None:
            return hit
        every = {(b, m) for b in range(max(b for b, _ in wants) + 1) for m in (RESIDUAL, *self.pool.modules)}
        hs = run_probe(self.probe_model, enc.input_ids, enc.attention_mask, wants | every)
        self.probe_cache.put(key, hs)
        return hs

    def _route(self, prompts: Sequence[str], enc: Encoded, opts: RouteOptions) -> list[Routing]:
        t0 = time.perf_counter()
        hs = self._probe(enc, wants_for(opts.blocks, opts.module, opts.probe_input))
        scores = signals.score(self._sites(hs, opts), opts.signal).cpu()  # [B, N]
        probe_s = (time.perf_counter() - t0) / len(prompts)
        return [self._routing(p, scores[i], opts, probe_s, enc.notices[i]) for i, p in enumerate(prompts)]

    def _routing(self, prompt: str, scores: Tensor, opts: RouteOptions, probe_s: float, notices: list) -> Routing:
        idx, w = select_top_k(scores, opts.k)
        names = self.pool.names
        ties = [names[i] for i in ties_at_cut(scores, idx)]
        if ties:  # the pool order, not the prompt, decided who is in
            notices = [*notices, f"Tie at the top-{opts.k} cut: {', '.join(ties)} score the same; pool order chose."]
        return Routing(
            prompt=prompt,
            scores=dict(zip(names, scores.tolist())),
            selected=[names[j] for j in idx],
            weights={names[j]: wj for j, wj in zip(idx, w)},
            options={"mode": "routed", **opts.trace()},
            ties=ties,
            timings={"probe_s": probe_s},
            notices=list(notices),
        )

    def route_batch(self, prompts: Sequence[str], **route) -> list[Routing]:
        """Route several prompts with one probe pass (see `route` for the arguments)."""
        prompts = check_prompts(prompts, self.settings.max_prompt_chars)
        opts = self.options(**route)
        return self._route(prompts, self.encode(prompts, 0, self.placement.device), opts)

    def route(self, prompt: str, **route) -> Routing:
        """Score every adapter for this prompt and pick the top k.

        Args:
            prompt: the user's message (the chat template is applied here).
            **route: `RouteOptions` fields (k, signal, calibrated, layer, module, probe_input);
                omitted or None = the defaults of adapters.yaml.

        Returns:
            A `Routing`: every adapter's score, the selected names and their weights.
        """
        return self.route_batch([check_prompt(prompt, self.settings.max_prompt_chars)], **route)[0]

    def sweep_batch(self, prompts: Sequence[str], settings: Sequence[RouteOptions]) -> list[Tensor]:
        """Per-block scores of several settings from ONE probe pass over every block they need.

        Returns:
            One [B, L_s, N] tensor per setting: the scores at each of its blocks (their mean over
            blocks is what `route` uses: `signals.average`).
        """
        prompts = check_prompts(prompts, self.settings.max_prompt_chars)
        enc = self.encode(prompts, 0, self.placement.device)
        wants = set().union(*(wants_for(s.blocks, s.module, s.probe_input) for s in settings))
        hs = self._probe(enc, wants)
        return [
            torch.stack([signals.score(self._sites(hs, s, block=b), s.signal) for b in s.blocks], dim=1).cpu()
            for s in settings
        ]

    def layer_sweep(self, prompt: str, **route) -> Tensor:
        """Scores of every adapter at every block for one prompt (`layer` is ignored). [L, N]"""
        opts = self.options(**{**route, "layer": f"0:{self.n_layers}"})
        return self.sweep_batch([check_prompt(prompt, self.settings.max_prompt_chars)], [opts])[0][0]

    # ------------------------------------------------------------------ generation

    def mixture_for(self, routings: Sequence[Routing]) -> Mixture | None:
        """The low-rank mixture of each row (one shared mixture when all rows agree)."""
        return Mixture.build([[(self.pool.factors(n), w) for n, w in r.weights.items()] for r in routings])

    def plan(self, prompts: Sequence[str], adapters: Sequence[dict] | None = None, **kwargs) -> Plan:
        """Validate a request, route it (or take its explicit mixtures) and build its mixture."""
        t0 = time.perf_counter()
        prompts = check_prompts(prompts, self.settings.max_prompt_chars)
        route, gen = split_kwargs(kwargs, explicit=adapters is not None)
        gen = self.generate_options(**gen)
        if adapters is None:
            opts = self.options(**route)
        elif not isinstance(adapters, list | tuple) or len(adapters) != len(prompts):
            raise RequestError(f"`adapters` must be a list of {len(prompts)} mixtures, one per prompt")
        else:
            adapters = [check_mixture(a, self.pool.names) for a in adapters]
        enc = self.encode(prompts, gen.max_new_tokens, self.placement.device)  # the probe sees what generation sees
        if adapters is None:
            routings = self._route(prompts, enc, opts)
        else:
            routings = [Routing(p, {}, list(a), dict(a), {"mode": "explicit"}) for p, a in zip(prompts, adapters)]
            for r, n in zip(routings, enc.notices):
                r.notices = list(n)
        return Plan(routings, enc, gen, self.mixture_for(routings), t0)

    def decode(self, plan: Plan, streamer=None, stop: threading.Event | None = None) -> Tensor:
        """Generate the plan's new tokens ([B, T_new]) on a private view carrying its mixture."""
        cfg = generation_config(plan.gen, self.tokenizer)
        processors = []
        if plan.gen.do_sample and plan.gen.seed is not None:
            processors.append(SeededSampler([plan.gen.seed] * plan.enc.input_ids.shape[0], self.placement.device))
        criteria = [StopOnEvent(stop)] if stop is not None else []
        if self.decoder is not None and self.decoder.accepts(plan):
            out = self.decoder.generate(plan, cfg, processors, criteria, streamer)
        else:
            view = attach(self.model, plan.mixture, fold_weights=self.fold)
            with torch.inference_mode():
                out = view.generate(
                    **plan.enc.inputs(),
                    generation_config=cfg,
                    logits_processor=processors or None,
                    stopping_criteria=criteria or None,
                    streamer=streamer,
                )
        return out[:, plan.enc.input_ids.shape[1] :]

    def finish(self, plan: Plan, i: int, new_ids: Tensor, generate_s: float, text: str | None, stopped=False):
        """Row i's `Generation`: text, routing, settings, timings, provenance."""
        n_tok = count_tokens(new_ids, self.tokenizer.eos_token_id)
        timings = {
            "probe_s": plan.routings[i].timings.get("probe_s", 0.0),
            "generate_s": generate_s,
            "total_s": time.perf_counter() - plan.started,
            "new_tokens": n_tok,
            "tokens_per_s": n_tok / max(generate_s, 1e-9),
        }
        if text is None:
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        r = plan.routings[i]
        return Generation(text, r, plan.gen.model_dump(), timings, stopped, self.provenance, r.notices)

    def generate_batch(self, prompts: Sequence[str], adapters: Sequence[dict] | None = None, **kwargs) -> list:
        """Route and generate a batch; each row gets its own mixture (see `generate`)."""
        plan = self.plan(prompts, adapters, **kwargs)
        t1 = time.perf_counter()
        new = self.decode(plan)
        t2 = time.perf_counter()
        return [self.finish(plan, i, new[i], t2 - t1, None) for i in range(len(plan.routings))]

    def generate(self, prompt: str, adapters: dict[str, float] | None = None, **kwargs) -> Generation:
        """Route a prompt and answer it with the weighted mixture of its top-k adapters.

        Args:
            prompt: the user's message.
            adapters: skip routing and use these {name: weight} (`{}` = the base model alone).
            **kwargs: `RouteOptions` fields (k, signal, ...) and `GenerateOptions` fields
                (max_new_tokens, do_sample, temperature, top_p, top_k, seed, min_new_tokens).

        Returns:
            A `Generation`: text, routing trace, settings, timings, provenance.
        """
        return self.generate_batch([prompt], None if adapters is None else [adapters], **kwargs)[0]

    def stream(self, prompt: str, adapters: dict[str, float] | None = None, timeout: float = 120.0, **kwargs):
        """Like `generate`, but returns a `GenerationStream` that yields text as it is decoded.

        Args:
            timeout: seconds to wait for the next piece before the stream fails (a stuck decoder).
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
            raise RequestError(f"`timeout` must be a number of seconds in (0, 3600], got {timeout!r}")
        plan = self.plan([prompt], None if adapters is None else [adapters], **kwargs)
        return stream_in_thread(
            lambda streamer, stop: self.decode(plan, streamer, stop),
            lambda ids, seconds, text, stopped: self.finish(plan, 0, ids, seconds, text, stopped),
            self.tokenizer,
            plan.routings[0],
            timeout,
        )

    def enable_compiled_decode(self, log=print) -> float:
        """Build and compile the fixed-shape decode path (`compiled.py`) now. Returns seconds."""
        from .compiled import CompiledDecoder

        self.decoder = CompiledDecoder.for_engine(self)
        return self.decoder.warm_up(self.encode, self.tokenizer, log)
