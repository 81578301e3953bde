"""The routing side of LoGo: probe -> signals -> calibration -> top-k -> `Routing` (docs/method.md §1-5).

The router owns everything a routing decision needs: the probe model, the pool's stacked factors,
the prompt encoder, the probe cache and the calibrations. It never generates; `explain`, `eval` and
the bench read routing numbers through its public methods.

Example:
    >>> router = engine.router
    >>> r = router.route_batch(["What is 47 + 38?"], k=3)[0]
    >>> per_block = router.sweep(["What is 47 + 38?"], [router.options(layer="0:30")])[0]  # [1, 30, N]
    >>> c = router.calibration(29, "v_proj", "norm", "residual")  # [N]
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import options, signals
from .anatomy import decoder_layers, residual_modules
from .calibration import (
    Calibration,
    StatsStore,
    decorrelate,
    decorrelation_stats,
    nearest_similarity,
    standardize,
    unit_rows,
)
from .errors import ConfigError, RequestError
from .mixing import select_top_k, ties_at_cut
from .options import Context, RouteOptions
from .pool import AdapterPool
from .probe import ProbeCache, neutral_wants, probe, run_probe, vector_key, wants_for
from .prompts import Encoded, PromptEncoder
from .registry import PoolConfig
from .results import Routing


class Router:
    """Score every adapter of a pool for each prompt and pick the top k.

    Args:
        model: the model the probe runs (the clean base model, or its fp32 copy); never modified.
        pool: the validated adapters.
        encode: the prompt encoder (the probe sees exactly the ids generation sees).
        device: where encoded prompts go (the model's input device).
        config: adapters.yaml: `defaults` (a request's omitted settings), `neutral_prompts` (the prompt
            set of the `neutral` calibration), `engine` (the longest prompt, the probe cache's budget).
    """

    def __init__(
        self, model: nn.Module, pool: AdapterPool, encode: PromptEncoder, device: torch.device, config: PoolConfig
    ) -> None:
        self.model, self.pool, self.encode, self.device = model, pool, encode, device
        self.defaults, self.max_prompt_chars = config.defaults, config.engine.max_prompt_chars
        cache_mb = config.engine.probe_cache_mb
        self.probe_cache = ProbeCache(int(cache_mb * 2**20)) if cache_mb else None
        self.n_layers = len(decoder_layers(model))
        self.context = Context(len(pool), self.n_layers, tuple(pool.modules), residual_modules(model, pool.modules))
        self.calibrations = {
            "neutral": Calibration("neutral", config.neutral_prompts),
            "background": Calibration("background", config.background(), apply=standardize),
        }
        self._vectors: dict[str, dict] = {}  # calibration kind -> its prompt set's probe vectors
        self._constants: dict[tuple, Tensor] = {}  # (kind, block, module, signal, probe_input) -> [N]
        self._stats: dict[tuple, tuple[Tensor, ...]] = {}  # background: setting -> (mu, sigma) [N] (or m, d, W)
        self.stats_store = _stats_store(config, pool, model)
        self._lock = threading.Lock()

    @property
    def neutral_prompts(self) -> list[str]:
        return list(self.calibrations["neutral"].prompts)

    def options(self, **route) -> RouteOptions:
        """The defaults of adapters.yaml, then a named `preset`, then `route` (None = default), checked
        against this model and pool; raises `RequestError` with the fix."""
        if not self.pool.files:
            raise RequestError("the adapter pool is empty: add adapters to adapters.yaml")
        k = min(self.defaults.k, len(self.pool))  # a default larger than a partly skipped pool shrinks
        preset = options.preset_values(route.get("preset"), len(self.pool))
        merged = options.merged(self.defaults, RouteOptions, {"k": k, **preset, **options.given(route)})
        return RouteOptions.resolve(merged, self.context)

    def warm_up(self) -> None:
        """Check adapters.yaml's defaults against this model and pool and calibrate them now rather than
        in the first request. Raises `ConfigError` naming the field that does not fit."""
        if self.pool.files:  # an empty pool still serves the base model; requests say why routing cannot
            try:
                o = self.options()
            except RequestError as e:
                raise ConfigError(f"adapters.yaml `defaults` do not fit this model and pool: {e}") from None
            if o.calibrated:
                self.calibrate(o)

    # ------------------------------------------------------------------------------ calibration

    def _prompt_vectors(self, kind: str) -> dict:
        """Every block's residual and module inputs of one calibration's prompt set (probed once; hold the lock)."""
        if kind not in self._vectors:
            enc = self.encode(list(self.calibrations[kind].prompts), 0, self.device)
            wants = neutral_wants(self.n_layers, self.pool.modules)
            self._vectors[kind] = run_probe(self.model, enc.input_ids, enc.attention_mask, wants, enc.user)
        return self._vectors[kind]

    def calibration(
        self, block: int, module: str, signal: str, probe_input: str, kind: str = "neutral", pooling: str = "last"
    ) -> Tensor:
        """[N] constants of one calibration kind at one site (its prompt set probed on first use)."""
        key = (kind, block, module, signal, probe_input, pooling)
        with self._lock:
            if key not in self._constants:
                h = self._prompt_vectors(kind)[vector_key(block, module, probe_input, pooling)]
                self._constants[key] = self.calibrations[kind].constants(self._site(h, block, module, signal), signal)
            return self._constants[key]

    def calibrate(self, opts: RouteOptions) -> None:
        """Compute (or load) every constant `opts` (and its abstain gate, `opts.gate`) needs now rather than in a
        request."""
        if opts.gate is not None:
            self.calibrate(opts.gate)
        if opts.nearest:
            self.nearest_bank(opts.nearest_block)
        if opts.decorrelation:
            self.decorrelation(opts)
        if opts.token_evidence:
            for m in opts.module:
                self.token_stats(opts, m)
        for b, m, p in itertools.product(opts.blocks, opts.module, opts.poolings):
            if opts.calibration == "background":
                self.background_stats(opts, m, p)
            else:
                self.calibration(b, m, opts.signal, opts.probe_input, opts.calibration, p)

    def background_stats(self, opts: RouteOptions, module: str, pooling: str) -> tuple[Tensor, Tensor]:
        """(mu, sigma) [N] of one stream (module, pooling): mean and spread over the background prompts of each
        adapter's block-mean raw score (docs/method.md §3); cached in memory and in `stats_store`."""
        key = (opts.blocks, module, pooling, opts.signal, opts.probe_input)
        with self._lock:
            if key not in self._stats:
                found = self.stats_store.load(key) if self.stats_store else None
                if found is None:
                    hs = self._prompt_vectors("background")
                    sites = [
                        self._site(hs[vector_key(b, module, opts.probe_input, pooling)], b, module, opts.signal)
                        for b in opts.blocks
                    ]
                    found = signals.zscore_stats(signals.score(sites, opts.signal).cpu())  # from [P, N]
                    if self.stats_store:
                        self.stats_store.save(key, found)
                self._stats[key] = found
            return self._stats[key]

    def decorrelation(self, opts: RouteOptions) -> tuple[Tensor, Tensor, Tensor]:
        """(m, d, W) of `opts.decorrelation` (`calibration.decorrelation_stats`): from the background prompts' calibrated
        scores under the same setting; cached in memory and in `stats_store`."""
        key = decorrelation_key(opts)
        names = ("m", "d", "W")
        with self._lock:
            found = self._stats.get(key) or (self.stats_store.load(key, names) if self.stats_store else None)
            if found is None:
                hs = self._prompt_vectors("background")
        if found is None:  # scored outside the lock: route_scores takes it for the per-stream constants
            found = decorrelation_stats(route_scores(self, hs, opts).cpu(), opts.decorrelation)
            if self.stats_store:
                self.stats_store.save(key, found, names=names)
        with self._lock:
            self._stats.setdefault(key, found)
            return self._stats[key]

    def token_stats(self, opts: RouteOptions, module: str) -> tuple[Tensor, Tensor]:
        """(mu, sigma) [N] of the token evidence of one module (`token_raw`) over the background prompts; cached in
        memory and in `stats_store`. The background's per-token vectors are probed here, a few prompts at a time,
        and dropped."""
        key = token_key(opts, module)
        with self._lock:
            found = self._stats.get(key) or (self.stats_store.load(key) if self.stats_store else None)
        if found is None:
            prompts = list(self.calibrations["background"].prompts)
            wants = wants_for(opts.token_blocks, (module,), opts.probe_input, ("tokens",))
            raw = []
            for i in range(0, len(prompts), 16):
                enc = self.encode(prompts[i : i + 16], 0, self.device)
                hs = run_probe(self.model, enc.input_ids, enc.attention_mask, wants, enc.user)
                raw.append(token_raw(self, hs, user_weights(enc, opts.token_pooling), opts, module).cpu())
            found = signals.zscore_stats(torch.cat(raw))
            if self.stats_store:
                self.stats_store.save(key, found)
        with self._lock:
            self._stats.setdefault(key, found)
            return self._stats[key]

    def token_scores(self, hs: dict, user: Tensor, opts: RouteOptions) -> Tensor:
        """[B, N] the token evidence (`token_weight`): each module's `token_raw` z-scored against the background
        prompts (`token_stats`), averaged over the modules."""
        return torch.stack(
            [standardize(token_raw(self, hs, user, opts, m).cpu(), self.token_stats(opts, m)) for m in opts.module]
        ).mean(0)

    def nearest_bank(self, block: int) -> Tensor:
        """[P, D] the background prompts' residual inputs of `block`, averaged over their user's tokens, at unit
        length: what the `nearest` abstain signal compares a prompt with; cached in memory and in `stats_store`."""
        key, names = nearest_bank_key(block), ("V",)
        with self._lock:
            found = self._stats.get(key) or (self.stats_store.load(key, names) if self.stats_store else None)
            if found is None:
                found = (unit_rows(self._prompt_vectors("background")[nearest_key(block)]).cpu(),)
                if self.stats_store:
                    self.stats_store.save(key, found, names=names)
            self._stats[key] = found
            return found[0]

    # ------------------------------------------------------------------------------ scoring

    def _site(self, h: Tensor, block: int, module: str, signal: str, calibrate=None) -> signals.Site:
        A, M, mask = self.pool.probe_stack((block, module), signal)
        up = lambda: self.pool.probe_up((block, module))  # noqa: E731 (read only for entropy)
        return signals.Site(h.to(A.device), A, M, up, mask, calibrate)

    def _sites(self, hs: dict, opts: RouteOptions, blocks: Sequence[int] | None = None) -> list[signals.Site]:
        """The probed sites of `opts` (or of some of its blocks), calibrated if asked.

        `background` gives every site of a stream (module, pooling) its stream's (mu, sigma): the mean
        over the sites is then the mean over streams of each stream's z-score of its block-mean raw
        signal (it is affine), and a per-block sweep still averages to it.
        """
        kind, out = self.calibrations[opts.calibration], []
        for b in opts.blocks if blocks is None else blocks:
            for m, p in itertools.product(opts.module, opts.poolings):
                fn = None
                if opts.calibrated and opts.calibration == "background":
                    fn = functools.partial(kind.apply, c=self.background_stats(opts, m, p))
                elif opts.calibrated:
                    c = self.calibration(b, m, opts.signal, opts.probe_input, opts.calibration, p)
                    fn = functools.partial(kind.apply, c=c)
                out.append(self._site(hs[vector_key(b, m, opts.probe_input, p)], b, m, opts.signal, fn))
        return out

    def _probe(self, enc: Encoded, settings: Sequence[RouteOptions]) -> dict:
        wants = set().union(*(wants_for(s.blocks, s.module, s.probe_input, s.poolings) for s in settings))
        wants |= {nearest_key(s.nearest_block) for s in settings if s.nearest}
        for s in settings:
            if s.token_evidence:
                wants |= wants_for(s.token_blocks, s.module, s.probe_input, ("tokens",))
        return probe(self.model, enc, wants, self.probe_cache, self.pool.modules)

    def routings(self, prompts: Sequence[str], enc: Encoded, opts: RouteOptions) -> list[Routing]:
        """Route checked prompts already encoded (`enc`, the ids generation will see) with resolved options."""
        t0 = time.perf_counter()
        g = opts.gate  # a copy of the options: made once per request
        hs = self._probe(enc, [opts] if g is None else [opts, g])  # one pass for both
        codes: dict = {}  # A h of each stream, shared by the routing and the abstain signal where their sites agree
        scores = route_scores(self, hs, opts, codes).cpu()  # [B, N]
        # what abstain_below reads: the calibrated scores, never decorrelated
        gate = scores if g is None else route_scores(self, hs, g, codes).cpu()
        if opts.decorrelation:
            scores = decorrelate(scores, self.decorrelation(opts))
        if opts.token_evidence:
            scores = scores + opts.token_evidence * self.token_scores(hs, user_weights(enc, opts.token_pooling), opts)
        if opts.nearest:  # how close the prompt is to the background prompts, not how any adapter scores
            b = opts.nearest_block
            best = nearest_similarity(hs[nearest_key(b)], self.nearest_bank(b)).cpu().tolist()
        else:
            best = gate.max(-1).values.tolist() if gate.shape[-1] else [float("-inf")] * len(prompts)
        probe_s = (time.perf_counter() - t0) / len(prompts)
        user = enc.user if enc.user is not None else enc.attention_mask  # the user's own tokens of each row
        n_user = user.sum(-1).tolist()
        return [
            self._routing(p, scores[i], best[i], opts, probe_s, enc.notices[i], n_user[i])
            for i, p in enumerate(prompts)
        ]

    def _routing(
        self, prompt: str, scores: Tensor, best: float, opts: RouteOptions, probe_s: float, notices: list, n_user: int
    ) -> Routing:
        """One prompt's decision: abstain (too short, or `best`, the abstain signal's best score, under
        `abstain_below`), else the top k of `scores`."""
        names = self.pool.names
        table = dict(zip(names, scores.tolist()))
        gate = best if opts.abstain_below is not None else None  # the trace's `abstain_score`
        if opts.abstain_min_tokens and n_user < opts.abstain_min_tokens:
            why = (
                f"The prompt has {n_user} token{'s' * (n_user != 1)}, fewer than abstain_min_tokens "
                f"{opts.abstain_min_tokens} (shorter than the prompts this pool is for): answered by the base model."
            )
            return abstained(prompt, table, opts, probe_s, notices, why, "short", gate)
        if opts.nearest and not best >= opts.abstain_below:  # NaN abstains too
            why = (
                f"The prompt is unlike the prompts this pool is for (similarity to the nearest background prompt at "
                f"block {opts.nearest_block} {best:.3f} < abstain_below {opts.abstain_below:g}): answered by the "
                "base model."
            )
            return abstained(prompt, table, opts, probe_s, notices, why, "unlike_pool", gate)
        if opts.abstain_below is not None and not best >= opts.abstain_below:  # NaN abstains too
            g = opts.gate
            signal = "" if g is None or g.signal == opts.signal else f"{g.signal} "
            where = "" if g is None or g.module == opts.module else f" on {','.join(g.module)}"
            why = (
                f"No adapter stands out (best {signal}score{where} {best:.3f} < abstain_below {opts.abstain_below:g}): "
                "answered by the base model."
            )
            return abstained(prompt, table, opts, probe_s, notices, why, "no_standout", gate)
        idx, w = select_top_k(scores, opts.k, opts.weighting)
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
            abstain_score=gate,
        )

    # ------------------------------------------------------------------------------ public entry points

    def route_batch(self, prompts: Sequence[str], **route) -> list[Routing]:
        """Route several prompts with one probe pass.

        Args:
            prompts: the users' messages (the chat template is applied here).
            **route: `RouteOptions` fields (k, signal, calibrated, layer, module, probe_input);
                omitted or None = the defaults of adapters.yaml.

        Returns:
            One `Routing` per prompt: every adapter's score, the selected names and their weights.
        """
        prompts = options.check_prompts(prompts, self.max_prompt_chars)
        opts = self.options(**route)
        return self.routings(prompts, self.encode(prompts, 0, self.device), opts)

    def sweep(self, prompts: Sequence[str], settings: Sequence[RouteOptions]) -> list[Tensor]:
        """Per-block scores of several settings from ONE probe pass over every block they need.

        Returns:
            One [B, L_s, N] tensor per setting: the scores at each of its blocks (their mean over
            blocks is what `route_batch` uses: `signals.average`).
        """
        prompts = options.check_prompts(prompts, self.max_prompt_chars)
        enc = self.encode(prompts, 0, self.device)
        hs = self._probe(enc, settings)
        out = []
        for s in settings:
            per_block = torch.stack([signals.score(self._sites(hs, s, [b]), s.signal) for b in s.blocks], dim=1).cpu()
            if s.decorrelation:
                per_block = decorrelate(per_block, self.decorrelation(s))
            if s.token_evidence:  # one term for the whole prompt: added to every block, so the mean is still the route
                per_block = (
                    per_block
                    + s.token_evidence * self.token_scores(hs, user_weights(enc, s.token_pooling), s)[:, None, :]
                )
            out.append(per_block)
        return out

    def layer_sweep(self, prompt: str, **route) -> Tensor:
        """Scores of every adapter at every block for one prompt (every block: no `layer`). [L, N]"""
        if route.get("layer") is not None:
            raise RequestError(
                f"`layer` has no effect on a layer sweep (it scores every block), got {route['layer']!r}"
            )
        opts = self.options(**{**route, "layer": f"0:{self.n_layers}"})
        return self.sweep([options.check_prompt(prompt, self.max_prompt_chars)], [opts])[0][0]


def nearest_key(block: int) -> tuple:
    """The probe key the `nearest` abstain signal reads: the block's residual input, mean over the user's tokens."""
    return vector_key(block, "", "residual", "mean")


def nearest_bank_key(block: int) -> tuple:
    """The `StatsStore` key of the `nearest` bank at `block` (beside the pool and the background)."""
    return ("nearest", block)


def token_key(opts: RouteOptions, module: str) -> tuple:
    """What the token evidence's (mu, sigma) of one module depend on (beside the pool and the background)."""
    if opts.token_pooling == "mean":  # the key of the first shipped constants, before `token_pooling` existed
        return ("tokens", opts.token_blocks, module, opts.signal, opts.probe_input)
    return ("tokens", opts.token_blocks, module, opts.signal, opts.probe_input, opts.token_pooling)


def user_weights(enc: Encoded, pooling: str = "mean") -> Tensor:
    """[B, T] averaging weights over each row's user tokens (every real token without `user`): alike (`mean`), or
    the t-th of them weighing t (`recency`, `token_pooling`)."""
    w = (enc.user if enc.user is not None else enc.attention_mask).float()
    if pooling == "recency":
        w = w * w.cumsum(-1)  # 1, 2, ..., T over each row's own tokens (left padding adds nothing)
    return w / w.sum(-1, keepdim=True).clamp_min(1e-12)


def token_raw(router: Router, hs: dict, user: Tensor, opts: RouteOptions, module: str) -> Tensor:
    """[B, N] one module's raw token evidence: each adapter's signal at every token of every `token_blocks` block
    (the per-token vectors `hs` holds), averaged over the user's tokens (`user`, [B, T] weights) and the blocks.

    A mean of per-token signals, not the signal of the mean vector (the `mean` pooling): a word that lies in an
    adapter's subspace keeps its full weight instead of being blurred with the rest of the prompt.
    """
    per_block = []
    for b in opts.token_blocks:
        h = hs[vector_key(b, module, opts.probe_input, "tokens")]  # [B, T, D]
        h = torch.where(user.to(h.device)[..., None] > 0, h, 0.0)  # padding says nothing (and may not be finite)
        B, T, D = h.shape
        sig = signals.site_score(router._site(h.reshape(B * T, D), b, module, opts.signal), opts.signal)
        per_block.append(torch.einsum("bt,btn->bn", user.to(sig.device), sig.reshape(B, T, -1)))
    return torch.stack(per_block).mean(0)


def decorrelation_key(opts: RouteOptions) -> tuple:
    """What a decorrelation's (m, d, W) depend on (beside the pool and the background): its `StatsStore` key."""
    return ("decorrelate", opts.blocks, opts.module, opts.poolings, opts.signal, opts.probe_input, opts.decorrelation)


def _stats_store(config: PoolConfig, pool: AdapterPool, model: nn.Module) -> StatsStore | None:
    """Where background constants are kept: shipped beside the pool, then the user cache; None (memory only)
    when an adapter's weights have no hash to key them by."""
    from .loading import cache_dir

    shas = [f.sha256 for f in pool.files]
    if not shas or not all(shas):
        return None
    identity = {
        "model": config.base_model.id,
        "revision": config.base_model.revision,
        "probe_dtype": str(next(model.parameters()).dtype),
        "adapters": shas,
        "background": config.background(),
    }
    return StatsStore(identity, [config.root / "assets" / "calibration"], cache_dir() / "calibration")


def abstained(
    prompt: str,
    scores: dict,
    opts: RouteOptions,
    probe_s: float,
    notices: list,
    why: str,
    reason: str,
    best: float | None = None,
) -> Routing:
    """The routing of a prompt answered by the base model: nothing selected; `reason` (`no_standout`: the best
    score of the abstain signal, `best`, is under `abstain_below`; `short`: fewer tokens than
    `abstain_min_tokens`) goes in the trace."""
    return Routing(
        prompt=prompt,
        scores=scores,
        selected=[],
        weights={},
        options={"mode": "abstained", "abstain_reason": reason, **opts.trace()},
        timings={"probe_s": probe_s},
        notices=[*notices, why],
        abstain_score=best,
    )


def route_scores(router: Router, hs: dict, opts: RouteOptions, codes: dict | None = None) -> Tensor:
    """[B, N] every adapter's score from the probe's vectors `hs`: the fast path where it applies, else the
    reference path (`Router._sites` + `signals.score`, one site at a time), which the fast one equals."""
    fast = fast_quadratic_score(router, hs, opts, codes)
    return fast if fast is not None else signals.score(router._sites(hs, opts), opts.signal)


def fast_quadratic_score(router: Router, hs: dict, opts: RouteOptions, codes: dict | None = None) -> Tensor | None:
    """[B, N] what `signals.score(router._sites(hs, opts), signal)` gives for a quadratic-form signal (`norm`,
    `subspace`, `subspace_cos`), each stream's blocks in one einsum.

    The reference path costs two einsums and a calibration per site (60 sites x 2 poolings for the default);
    this costs two per module (every token reading in one), and with `codes` (a dict kept for one request) the
    routing and the abstain signal share the first, A h, where they read the same sites. None where it does not
    apply (a signal of whole outputs, sites on several devices).
    """
    quad = signals.QUADRATIC.get(opts.signal)
    if quad is None:
        return None
    parts = []
    for m in opts.module:
        stacked = router.pool.probe_stacks(tuple((b, m) for b in opts.blocks), opts.signal)
        if stacked is None:
            return None
        A, M, mask = stacked
        # every token reading of the stream's blocks in one einsum: [S, P*B, D] for P readings of B prompts
        h = torch.stack(
            [torch.cat([hs[vector_key(b, m, opts.probe_input, p)] for p in opts.poolings]) for b in opts.blocks]
        )
        h = h.to(A.device)
        key = (m, opts.blocks, opts.probe_input, opts.poolings)  # `codes`: z = A h of these sites, any signal
        z = codes.get(key) if codes is not None else None
        if z is None:
            z = signals.stacked_codes(h, A)
            if codes is not None:
                codes[key] = z
        sig = signals.stacked_quadratic(z, M)
        sig = torch.where(mask[:, None, :], signals.unit(sig, h) if quad.unit else sig, 0.0)  # [S, P*B, N]
        for p, raw in zip(opts.poolings, sig.chunk(len(opts.poolings), dim=1), strict=True):
            if opts.calibrated and opts.calibration == "background":  # one (mu, s) per stream
                raw = standardize(raw, router.background_stats(opts, m, p))
            elif opts.calibrated:  # neutral: one constant per site, [S, 1, N]
                kind = router.calibrations[opts.calibration]
                c = [router.calibration(b, m, opts.signal, opts.probe_input, opts.calibration, p) for b in opts.blocks]
                raw = kind.apply(raw, torch.stack(c)[:, None, :])
            parts.append(raw)
    return torch.cat(parts).mean(0)
