"""Orchestration only: probe -> signals -> select -> generate with the request's private mixture.

Example:
    >>> engine = LoGoEngine.from_config("adapters.yaml")
    >>> r = engine.route("What is 47 + 38?", k=3)
    >>> r.selected, r.weights
    >>> engine.generate("What is 47 + 38?", max_new_tokens=32).text
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from . import generation, loading, options, signals
from .anatomy import decoder_layers
from .batcher import MicroBatcher
from .calibration import Calibration
from .errors import ConfigError, RequestError
from .loading import Placement
from .mixing import Mixture, attach, select_top_k, ties_at_cut
from .options import Context, GenerateOptions, RouteOptions
from .pool import AdapterPool, LoadReport, load_pool
from .probe import RESIDUAL, ProbeCache, neutral_wants, probe, run_probe, wants_for
from .prompts import Encoded, PromptEncoder
from .registry import PoolConfig, load_config, with_overrides
from .results import Generation, Routing, make_timings


@dataclass
class Plan:
    """One request, ready to decode: its rows' routings, inputs, settings and mixture."""

    routings: list[Routing]
    enc: Encoded
    gen: GenerateOptions
    mixture: Mixture | None
    started: float
    seeds: list[int] | None = None  # a sampled request's seed per row (drawn when none was given)


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
        self.placement = placement or Placement(loading.input_device(model), "fp32", next(model.parameters()).dtype)
        self.defaults, self.settings, self.neutral_prompts = cfg.defaults, cfg.engine, list(cfg.neutral_prompts)
        self.load_report = load_report or LoadReport({})
        self.provenance = provenance or {"model": str(getattr(model.config, "_name_or_path", type(model).__name__))}
        self.n_layers = len(decoder_layers(model))
        self.context = Context(len(pool), self.n_layers, tuple(pool.modules))
        ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self.encode = PromptEncoder(tokenizer, self.settings.max_prompt_tokens, ctx)
        cache_mb, mode = self.settings.probe_cache_mb, self.settings.mixture
        self.probe_cache = ProbeCache(int(cache_mb * 2**20)) if cache_mb else None
        self.fold = mode == "fold" or (mode == "auto" and self.placement.device.type == "cpu")
        self.decoder = None  # a compiled decode path (`compiled.CompiledDecoder`), when enabled
        self.batcher = None  # a `batcher.MicroBatcher`, when batching is on
        self.calibration = Calibration(self._probe_neutral, self._site)

    @classmethod
    def from_config(cls, path: str | Path = "adapters.yaml", **base_model) -> LoGoEngine:
        """Load the base model and the adapter pool of `adapters.yaml` (`**base_model` overrides fields of
        its `base_model`, e.g. `dtype="bf16"`), then calibrate."""
        return cls.from_pool_config(with_overrides(load_config(path), base_model=base_model))

    @classmethod
    def from_pool_config(cls, cfg: PoolConfig) -> LoGoEngine:
        loaded = loading.load(cfg.base_model)
        model = loaded.model
        pool, report = load_pool(cfg, model, where=lambda key: loading.site_placement(model, *key, loaded.placement))
        origin = loading.provenance(cfg.base_model, loaded.placement, pool.files)
        engine = cls(model, loaded.tokenizer, pool, cfg, loaded.placement, loaded.probe_model, report, origin)
        engine.warm_up()
        if cfg.engine.compile and not loading.on_zero_gpu():  # ZeroGPU has no GPU at start-up: eager there
            engine.enable_compiled_decode()
        if loading.batching_wanted(cfg.engine.batching, loaded.placement):
            engine.batcher = MicroBatcher(engine, cfg.engine.batch_window_ms / 1000, cfg.engine.batch_max_rows)
        return engine

    @property
    def frontend(self):
        """What the app and the API call (`generate`, `stream`): the micro-batcher when on, else the engine."""
        return self.batcher or self

    def warm_up(self) -> None:
        """Check adapters.yaml's defaults against this model and pool, and calibrate them now rather than
        in the first request. Raises `ConfigError` naming the field that does not fit."""
        if self.pool.files:  # an empty pool still serves the base model; requests say why routing cannot
            try:
                o = self.route_options()
            except RequestError as e:
                raise ConfigError(f"adapters.yaml `defaults` do not fit this model and pool: {e}") from None
            for b, m in itertools.product(o.blocks, o.module):
                self.calibration(b, m, o.signal, o.probe_input)

    @property
    def adapters(self) -> list[str]:
        return list(self.pool.names)

    def route_options(self, **route) -> RouteOptions:
        """The defaults of adapters.yaml overridden by `route` (None = default), checked against this
        engine; raises `RequestError` with the fix."""
        if not self.pool.files:
            raise RequestError("the adapter pool is empty: add adapters to adapters.yaml")
        k = min(self.defaults.k, len(self.pool))  # a default larger than a partly skipped pool shrinks
        return RouteOptions.resolve(options.merged(self.defaults, RouteOptions, {"k": k, **route}), self.context)

    def generate_options(self, **gen) -> GenerateOptions:
        return options.warn_ignored(GenerateOptions.resolve(options.merged(self.defaults, GenerateOptions, gen)), gen)

    def _probe_neutral(self) -> dict:
        enc = self.encode(self.neutral_prompts, 0, self.placement.device)
        wants = neutral_wants(self.n_layers, self.pool.modules)
        return run_probe(self.probe_model, enc.input_ids, enc.attention_mask, wants)

    def _site(self, h: Tensor, block: int, module: str, calibration: Tensor | None = None) -> signals.Site:
        A, G, mask = self.pool.probe_stack((block, module))
        up = functools.partial(self.pool.probe_up, (block, module))
        return signals.Site(h.to(A.device), A, G, up, mask, calibration)

    def _sites(self, hs: dict, opts: RouteOptions, block: int | None = None, module: str | None = None) -> list:
        """The probed sites of `opts` (or one block / module of them), calibrated if asked."""
        out = []
        for b in opts.blocks if block is None else (block,):
            for m in opts.module if module is None else (module,):
                cal = self.calibration(b, m, opts.signal, opts.probe_input) if opts.calibrated else None
                out.append(self._site(hs[(b, RESIDUAL if opts.probe_input == "residual" else m)], b, m, cal))
        return out

    def _probe(self, enc: Encoded, wants: set) -> dict:
        return probe(self.probe_model, enc, wants, self.probe_cache, self.pool.modules)

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
        prompts = options.check_prompts(prompts, self.settings.max_prompt_chars)
        opts = self.route_options(**route)
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
        return self.route_batch([options.check_prompt(prompt, self.settings.max_prompt_chars)], **route)[0]

    def sweep_batch(self, prompts: Sequence[str], settings: Sequence[RouteOptions]) -> list[Tensor]:
        """Per-block scores of several settings from ONE probe pass over every block they need.

        Returns:
            One [B, L_s, N] tensor per setting: the scores at each of its blocks (their mean over
            blocks is what `route` uses: `signals.average`).
        """
        prompts = options.check_prompts(prompts, self.settings.max_prompt_chars)
        enc = self.encode(prompts, 0, self.placement.device)
        wants = set().union(*(wants_for(s.blocks, s.module, s.probe_input) for s in settings))
        hs = self._probe(enc, wants)
        return [
            torch.stack([signals.score(self._sites(hs, s, block=b), s.signal) for b in s.blocks], dim=1).cpu()
            for s in settings
        ]

    def layer_sweep(self, prompt: str, **route) -> Tensor:
        """Scores of every adapter at every block for one prompt (every block: no `layer`). [L, N]"""
        if route.get("layer") is not None:
            raise RequestError(
                f"`layer` has no effect on a layer sweep (it scores every block), got {route['layer']!r}"
            )
        opts = self.route_options(**{**route, "layer": f"0:{self.n_layers}"})
        return self.sweep_batch([options.check_prompt(prompt, self.settings.max_prompt_chars)], [opts])[0][0]

    def mixture_for(self, routings: Sequence[Routing]) -> Mixture | None:
        """The low-rank mixture of each row (one shared mixture when all rows agree)."""
        return Mixture.build([[(self.pool.factors(n), w) for n, w in r.weights.items()] for r in routings])

    def export_adapter(self, weights: dict[str, float], directory: str | Path) -> Path:
        """Write a mixture {adapter: weight} as one PEFT adapter (the rank-concatenated LoRA, LOGO.md 4)
        that `PeftModel.from_pretrained` loads to compute what this engine computes."""
        weights, directory = options.check_mixture(weights, self.pool.names), options.check_folder(directory)
        if (mixture := self.mixture_for([Routing("", {}, list(weights), weights, {})])) is None:
            raise RequestError("`adapters` is empty: there is no mixture to export")
        return loading.save_peft_adapter(mixture, self.model, directory, self.provenance.get("model", ""))

    def plan(self, prompts: Sequence[str], adapters: Sequence[dict] | None = None, **kwargs) -> Plan:
        """Validate a request, route it (or take its explicit mixtures) and build its mixture."""
        t0 = time.perf_counter()
        prompts = options.check_prompts(prompts, self.settings.max_prompt_chars)
        route, gen = options.split_kwargs(kwargs, explicit=adapters is not None)
        gen = self.generate_options(**gen)
        if adapters is None:
            opts = self.route_options(**route)
        elif not isinstance(adapters, list | tuple) or len(adapters) != len(prompts):
            raise RequestError(f"`adapters` must be a list of {len(prompts)} mixtures, one per prompt")
        else:
            adapters = [options.check_mixture(a, self.pool.names) for a in adapters]
        enc = self.encode(prompts, gen.max_new_tokens, self.placement.device)  # the probe sees what generation sees
        if adapters is None:
            routings = self._route(prompts, enc, opts)
        else:
            routings = [Routing(p, {}, list(a), dict(a), {"mode": "explicit"}) for p, a in zip(prompts, adapters)]
            for r, n in zip(routings, enc.notices):
                r.notices = list(n)
        seeds = (
            [gen.seed if gen.seed is not None else generation.new_seed() for _ in prompts] if gen.do_sample else None
        )
        return Plan(routings, enc, gen, self.mixture_for(routings), t0, seeds)

    def merge_plans(self, plans: Sequence[Plan]) -> Plan:
        """One plan of several one-row plans with the same generation settings (the micro-batcher's)."""
        routings = [r for p in plans for r in p.routings]
        enc = self.encode([r.prompt for r in routings], plans[0].gen.max_new_tokens, self.placement.device)
        seeds = [s for p in plans for s in p.seeds] if plans[0].seeds else None
        return Plan(routings, enc, plans[0].gen, self.mixture_for(routings), min(p.started for p in plans), seeds)

    def decode(self, plan: Plan, streamer=None, stops: Sequence[threading.Event] = ()) -> Tensor:
        """Generate the plan's new tokens ([B, T_new]) on a private view carrying its mixture.

        Args:
            streamer: transformers' streamer interface (put/end), fed every new token.
            stops: one event for all rows, or one per row: a set event ends that row (Stop).
        """
        cfg = generation.generation_config(plan.gen, self.tokenizer)
        processors = [generation.SeededSampler(plan.seeds, self.placement.device)] if plan.seeds else []
        criteria = [generation.StopOnEvent(list(stops))] if stops else []
        if self.decoder is not None and self.decoder.accepts(plan):
            out = self.decoder.generate(plan, cfg, processors, criteria, streamer)
        else:
            view = attach(self.model, plan.mixture, fold_weights=self.fold)
            out = generation.run_generate(view, plan.enc.inputs(), cfg, processors, criteria, streamer)
        return out[:, plan.enc.input_ids.shape[1] :]

    def finish(self, plan: Plan, i: int, new_ids: Tensor, generate_s: float, text: str | None, stopped=False):
        """Row i's `Generation`: text, routing, settings, timings, provenance."""
        r, gen = plan.routings[i], plan.gen.model_dump()
        n_tok = generation.count_tokens(new_ids, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id)
        timings = make_timings(r.timings.get("probe_s", 0.0), generate_s, time.perf_counter() - plan.started, n_tok)
        if text is None:
            text = self.tokenizer.decode(new_ids, skip_special_tokens=True)
        if plan.seeds:
            gen["seed"] = plan.seeds[i]  # the seed actually used: `replay` gives the same answer
        return Generation(text, r, gen, timings, stopped, self.provenance, r.notices)

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
        options.check_timeout(timeout)
        plan = self.plan([prompt], None if adapters is None else [adapters], **kwargs)
        return generation.stream_in_thread(
            lambda streamer, stop: self.decode(plan, streamer, [stop])[0],
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
