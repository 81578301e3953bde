"""The public facade: a `Router` (probe -> signals -> calibration -> top-k) and a `Decoder` (a plan's
mixture -> tokens) behind one object. Requests are validated here; the work happens in those two. Example:
    >>> engine = LoGoEngine.from_config("adapters.yaml")
    >>> engine.route("What is 47 + 38?", k=3).selected
    >>> engine.generate("What is 47 + 38?", max_new_tokens=32).text
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from . import generation, loading, options
from .decoder import Decoder, Plan
from .loading import Placement
from .options import GenerateOptions
from .pool import AdapterPool, LoadReport, load_pool
from .prompts import PromptEncoder
from .registry import PoolConfig, load_config, with_overrides
from .results import Generation, Routing
from .router import Router


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
        self.defaults, self.settings, self.load_report = cfg.defaults, cfg.engine, load_report or LoadReport({})
        self.placement = placement or Placement(loading.input_device(model), "fp32", next(model.parameters()).dtype)
        self.provenance = provenance or {"model": str(getattr(model.config, "_name_or_path", type(model).__name__))}
        ctx = int(getattr(model.config, "max_position_embeddings", None) or 2048)
        self.encode = PromptEncoder(tokenizer, self.settings.max_prompt_tokens, ctx)
        self.router = Router(probe_model or model, pool, self.encode, self.placement.device, cfg)
        self.n_layers = self.router.n_layers
        self.decoder = Decoder(model, tokenizer, pool, self.placement.device, self.settings.mixture, self.provenance)

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
        engine.router.warm_up()
        if cfg.engine.compile and not loading.on_zero_gpu():  # ZeroGPU has no GPU at start-up: eager there
            engine.enable_compiled_decode()
        if loading.batching_wanted(cfg.engine.batching, loaded.placement):  # a dedicated GPU
            engine.decoder.enable_batching(cfg.engine.batch_window_ms / 1000, cfg.engine.batch_max_rows)
        return engine

    @property
    def adapters(self) -> list[str]:
        return list(self.pool.names)

    def route_options(self, **route) -> options.RouteOptions:
        """adapters.yaml's defaults overridden by `route`, checked (`Router.options`)."""
        return self.router.options(**route)

    def generate_options(self, **gen) -> GenerateOptions:
        return options.warn_ignored(GenerateOptions.resolve(options.merged(self.defaults, GenerateOptions, gen)), gen)

    def route(self, prompt: str, **route) -> Routing:
        """Score every adapter for this prompt and pick the top k; returns a `Routing` (every adapter's score,
        the selected names, their weights). `**route`: `RouteOptions` fields (k, signal, calibrated, layer,
        module, probe_input); omitted or None = adapters.yaml's defaults."""
        return self.router.route_batch([options.check_prompt(prompt, self.settings.max_prompt_chars)], **route)[0]

    def route_batch(self, prompts: Sequence[str], **route) -> list[Routing]:
        """Route several prompts with one probe pass (see `route`)."""
        return self.router.route_batch(prompts, **route)

    def plan(self, prompts: Sequence[str], adapters: Sequence[dict] | None = None, **kwargs) -> Plan:
        """Validate a request, route it (or take its explicit mixtures) and build its mixture."""
        t0 = time.perf_counter()
        prompts = options.check_prompts(prompts, self.settings.max_prompt_chars)
        route, gen = options.split_kwargs(kwargs, explicit=adapters is not None)
        gen = self.generate_options(**gen)
        if adapters is None:
            opts = self.route_options(**route)
        else:
            adapters = options.check_mixtures(adapters, self.pool.names, len(prompts))
        enc = self.encode(prompts, gen.max_new_tokens, self.placement.device)  # the probe sees what generation sees
        if adapters is None:
            routings = self.router.routings(prompts, enc, opts)
        else:
            routings = [Routing.explicit(p, a, n) for p, a, n in zip(prompts, adapters, enc.notices)]
        return self.decoder.plan(routings, enc, gen, t0)

    def generate_batch(self, prompts: Sequence[str], adapters: Sequence[dict] | None = None, **kwargs) -> list:
        """Route and generate a batch; each row gets its own mixture (see `generate`)."""
        return [self.decoder.finish(d) for d in self.decoder.run(self.plan(prompts, adapters, **kwargs))]

    def generate(self, prompt: str, adapters: dict[str, float] | None = None, **kwargs) -> Generation:
        """Route a prompt and answer it with the weighted mixture of its top-k adapters; returns a `Generation`
        (text, routing trace, settings, timings, provenance). `adapters`: skip routing and use these
        {name: weight} (`{}` = the base model alone). `**kwargs`: `RouteOptions` fields (k, signal, ...) and
        `GenerateOptions` fields (max_new_tokens, do_sample, temperature, top_p, top_k, seed, min_new_tokens)."""
        return self.generate_batch([prompt], None if adapters is None else [adapters], **kwargs)[0]

    def stream(self, prompt: str, adapters: dict[str, float] | None = None, timeout: float = 120.0, **kwargs):
        """Like `generate`, but returns a `GenerationStream` that yields text as it is decoded; `timeout`:
        seconds to wait for the next piece before the stream fails (a stuck decoder)."""
        options.check_timeout(timeout)
        plan = self.plan([prompt], None if adapters is None else [adapters], **kwargs)
        decode = lambda streamer, stop: self.decoder.run(plan, streamer, [stop])[0]  # noqa: E731
        return generation.stream_in_thread(decode, self.decoder.finish, self.tokenizer, plan.routings[0], timeout)

    def export_adapter(self, weights: dict[str, float], directory: str | Path) -> Path:
        """Write a mixture {adapter: weight} as one PEFT adapter (`Decoder.export`)."""
        return self.decoder.export(options.check_mixture(weights, self.pool.names), options.check_folder(directory))

    def enable_compiled_decode(self, log=print) -> float:
        """Build and compile the fixed-shape decode path (`compiled.py`) now. Returns seconds."""
        s, max_len = self.settings, self.encode.max_prompt_tokens + self.defaults.max_new_tokens
        return self.decoder.enable_compiled(s.max_mixture_rank, s.batch_buckets, max_len, self.encode, log)
