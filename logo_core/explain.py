"""Why a prompt got its adapters: every number of one routing decision, in plain words (the app's
"How LoGo chose" view; docs/method.md §1-5).

The numbers come from the router's own public methods, never recomputed here: raw signals from a
sweep with `calibrated=False`, constants from `router.calibration`, per-block scores from a sweep with
the routing's own settings, final scores, selection and weights from the `Routing` itself.

Example:
    >>> r = engine.route("What is the capital of Peru?")
    >>> x = explain(engine.router, r)
    >>> x.raw[0][x.names.index(r.selected[0])], x.constants[0][x.names.index(r.selected[0])]
    >>> print(summary_markdown(x))
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .mixing import LEAD_SHARE
from .options import ROUTE_FIELDS
from .prompts import GAP
from .results import Routing
from .router import Router, user_weights


@dataclass
class Explanation:
    """The numbers behind one routing.

    Attributes:
        routing: the routing explained (final scores, selection, weights, ties, options).
        names: the pool's adapters, in pool order (the columns of the per-site lists).
        sites: the probed (block, module, pooling) triples, in the order the router averages them.
        raw: [S][N] each adapter's raw signal at each site.
        constants: [S][N] the divisor at each site: c_i (neutral), the background spread s_i (background),
            1.0 when not calibrated.
        shifts: [S][N] what is subtracted first: the background mean mu_i (background), else 0.
        per_site: [S][N] the router's score at each site, (raw - shift) / constant; their mean over sites
            is `routing.scores`.
        prompt_tokens: tokens the probe read (chat template included).
        neutral_prompts: how many neutral prompts the neutral constants average over.
        background_prompts: how many background prompts mu and s come from.
        decorrelation: with `decorrelate`: its strength a, the background's mean m and spread d of the z-scores [N],
            and W [N][N] (`calibration.decorrelate`); the mean of `per_site` is then the z before it and
            `routing.scores` = ((z - m) / d) W. None without it.
        tokens: with `token_weight`: the weight w, the blocks read, and each adapter's token evidence t [N] (its
            z-scored mean signal over the user's tokens, `Router.token_scores`); `routing.scores` = (the above) + w t.
            None without it.
    """

    routing: Routing
    names: list[str]
    sites: list[tuple[int, str, str]]
    raw: list[list[float]]
    constants: list[list[float]]
    shifts: list[list[float]]
    per_site: list[list[float]]
    prompt_tokens: int
    neutral_prompts: int
    background_prompts: int
    decorrelation: tuple[float, list[float], list[float], list[list[float]]] | None = None
    tokens: tuple[float, list[int], list[float]] | None = None

    def before_tokens(self, n: str) -> float:
        """An adapter's score before the token evidence is added (the decorrelated z, or z)."""
        if self.tokens is None:
            return self.routing.scores[n]
        w, _, t = self.tokens
        return self.routing.scores[n] - w * t[self.names.index(n)]

    @property
    def background(self) -> bool:
        o = self.routing.options
        return bool(o["calibrated"]) and o.get("calibration") == "background"

    def streams(self) -> list[tuple[str, str]]:
        """The (module, pooling) streams, in order; each is z-scored on its own when calibrated by background."""
        return list(dict.fromkeys((m, p) for _, m, p in self.sites))

    def stream_mean(self, rows: list[list[float]], stream: tuple[str, str], i: int) -> float:
        """The mean over one stream's blocks of rows[site][i]."""
        vals = [row[i] for (_, m, p), row in zip(self.sites, rows) if (m, p) == stream]
        return sum(vals) / len(vals)


def explain(router: Router, routing: Routing) -> Explanation:
    """Recompute, with the router's own methods, every number behind `routing` (a routed `Routing`)."""
    opts = router.options(**{f: routing.options[f] for f in ROUTE_FIELDS if f in routing.options})
    streams = list(itertools.product(opts.module, opts.poolings))
    settings = []  # per stream: raw and (when calibrated) calibrated scores at each block, one probe pass for all
    for m, p in streams:
        base = {**opts.model_dump(), "module": [m], "pooling": p, "preset": None, "decorrelate": 0.0, "token_weight": 0}
        settings.append(router.options(**{**base, "calibrated": False}))
        settings.append(router.options(**base))
    swept = router.sweep([routing.prompt], settings)  # 2 x streams tensors [1, L_s, N]
    N = len(router.pool)
    background = opts.calibrated and opts.calibration == "background"
    by_site = {}
    for i, (m, p) in enumerate(streams):
        raw, scored = swept[2 * i][0], swept[2 * i + 1][0]  # [L_s, N]
        if background:
            mu, sd = (t.tolist() for t in router.background_stats(opts, m, p))
        for j, b in enumerate(opts.blocks):
            if background:
                c, shift = sd, mu
            elif opts.calibrated:
                c = router.calibration(b, m, opts.signal, opts.probe_input, opts.calibration, p).tolist()
                shift = [0.0] * N
            else:
                c, shift = [1.0] * N, [0.0] * N
            by_site[(b, m, p)] = (raw[j].tolist(), c, shift, scored[j].tolist())
    sites = [(b, m, p) for b in opts.blocks for m, p in streams]  # the router's averaging order
    tokens = router.encode([routing.prompt], 0, router.device).input_ids.shape[1]
    dec = None
    if opts.decorrelation:
        m_, d_, w_ = router.decorrelation(opts)
        dec = (opts.decorrelation, m_.tolist(), d_.tolist(), w_.tolist())
    tok = None
    if opts.token_evidence:
        enc = router.encode([routing.prompt], 0, router.device)
        hs = router._probe(enc, [opts])
        t = router.token_scores(hs, user_weights(enc, opts.token_pooling), opts)[0]
        tok = (opts.token_evidence, list(opts.token_blocks), t.tolist())
    return Explanation(
        routing=routing,
        names=list(router.pool.names),
        sites=sites,
        raw=[by_site[s][0] for s in sites],
        constants=[by_site[s][1] for s in sites],
        shifts=[by_site[s][2] for s in sites],
        per_site=[by_site[s][3] for s in sites],
        prompt_tokens=int(tokens),
        neutral_prompts=len(router.neutral_prompts),
        background_prompts=len(router.calibrations["background"].prompts),
        decorrelation=dec,
        tokens=tok,
    )


# ------------------------------------------------------------------------------------ plain words


def name(text: str) -> str:
    """An adapter name as inline code (underscores and HTML stay literal)."""
    return "`" + text.replace("`", "'") + "`"


def fmt(v: float) -> str:
    return f"{v:.4g}"


SIGNAL_TEXT = {  # what each signal measures, in the words of How LoGo chose
    "norm": "‖o_i‖ (its length: `norm`)",
    "entropy": "1 / H(softmax(o_i)) (`entropy`)",
    "subspace": "‖V_iᵀh‖, the length of h inside the subspace A_i reads, every direction alike (`subspace`)",
    "subspace_cos": "‖V_iᵀh‖ / ‖h‖, the share of h inside the subspace A_i reads (`subspace_cos`)",
}


def _mean(rows: list[list[float]], i: int) -> float:
    return sum(r[i] for r in rows) / len(rows)


def decorrelation_text(x: Explanation, top: list[str]) -> str:
    """The decorrelation step in one sentence, with the best adapters' z before and score after, and the adapter the
    first of them loses most to (`Explanation.decorrelation`)."""
    a, m, d, w = x.decorrelation
    idx = {n: i for i, n in enumerate(x.names)}
    z = [_mean(x.per_site, i) for i in range(len(x.names))]
    u = [(zj - mj) / dj for zj, mj, dj in zip(z, m, d)]
    moves = ", ".join(f"{name(n)} {fmt(z[idx[n]])} → {fmt(x.before_tokens(n))}" for n in top)
    first = idx[top[0]]
    v, j = min((u[j] * w[j][first], j) for j in range(len(z)) if j != first)
    why = f"; {name(top[0])} loses most to {name(x.names[j])} ({fmt(v)})" if v < 0 else ""
    return (
        f" Then **decorrelation** (a = {a:g}) takes out what siblings share over the background: "
        f"((z − m)/d)·((1 − a)I + aR)^(−½): {moves}{why}."
    )


def tokens_text(x: Explanation, top: list[str]) -> str:
    """The token evidence step in one sentence, with the best adapters' numbers (`Explanation.tokens`)."""
    w, blocks, t = x.tokens
    late = " (the t-th token weighing t)" if x.routing.options.get("token_pooling") == "recency" else ""
    idx = {n: i for i, n in enumerate(x.names)}
    adds = ", ".join(
        f"{name(n)} {fmt(x.before_tokens(n))} + {w:g} × {fmt(t[idx[n]])} = {fmt(x.routing.scores[n])}" for n in top
    )
    return (
        f" Then **token evidence** (w = {w:g}, blocks {blocks[0]}–{blocks[-1]}): the signal at each of your tokens, "
        f"averaged{late} and z-scored, so a word naming the task counts wherever it stands: {adds}."
    )


def summary_markdown(x: Explanation, show: int = 3) -> str:
    """The decision in six numbered steps with this prompt's numbers (anchors `how-1` .. `how-6`)."""
    r, o = x.routing, x.routing.options
    idx = {n: i for i, n in enumerate(x.names)}
    ranked = sorted(r.scores, key=lambda n: -r.scores[n])
    top = ranked[:show]
    S, modules = len(x.sites), ", ".join(o["module"])
    blocks = o["blocks"]
    where = f"block **{blocks[0]}**" if len(blocks) == 1 else f"blocks **{blocks[0]}–{blocks[-1]}**"
    if len(blocks) > 1 and blocks != list(range(blocks[0], blocks[-1] + 1)):
        where = "blocks **" + ", ".join(map(str, blocks)) + "**"
    what = "the hidden state entering the block" if o["probe_input"] == "residual" else "the module's own input"
    signal = SIGNAL_TEXT.get(o["signal"], f"`{o['signal']}`")
    mean = f" averaged over the {S} probed sites (block x module x token reading)" if S > 1 else ""
    raw = ", ".join(f"{name(n)} {fmt(_mean(x.raw, idx[n]))}" for n in top)
    if x.background:
        stream = x.streams()[0]
        z = ", ".join(
            f"{name(n)} ({fmt(x.stream_mean(x.raw, stream, idx[n]))} − {fmt(x.shifts[0][idx[n]])}) / "
            f"{fmt(x.constants[0][idx[n]])} = {fmt(x.stream_mean(x.per_site, stream, idx[n]))}"
            for n in (top[:2] if x.decorrelation else top)  # two, as the decorrelation sentence: a lecture screen
        )
        several = len(x.streams()) > 1
        step3 = (
            f"Each adapter's block-mean signal is compared with its values on {x.background_prompts} unlabelled "
            "background prompts (the pool's example prompts): "
            "z_i = (σ_i − μ_i) / s_i, μ_i and s_i the background's mean and spread: an adapter loud on every "
            f"prompt gains nothing. {'For ' + stream[0] + ' · ' + stream[1] + ' token' + (': ' if several else ': ')}{z}."
            + (f" z averages the {len(x.streams())} streams." if several else "")
            + (decorrelation_text(x, top[:2]) if x.decorrelation else "")
            + (tokens_text(x, top[:2]) if x.tokens else "")
        )
    elif o["calibrated"]:
        cal = ", ".join(
            f"{name(n)} {fmt(x.raw[0][idx[n]])} / {fmt(x.constants[0][idx[n]])} = {fmt(x.per_site[0][idx[n]])}"
            for n in top
        )
        at = f" At block {x.sites[0][0]} ({x.sites[0][1]}): {cal}." if S > 1 else f" {cal}."
        step3 = (
            f"Each σ_i is divided by c_i, the adapter's mean signal on {x.neutral_prompts} neutral prompts "
            f"(loudly trained adapters would win every prompt otherwise).{at}"
            + (" The score is the mean of σ/c over the sites (table below)." if S > 1 else "")
        )
    else:
        step3 = "Calibration is off: the score is the raw signal" + (" (mean over the sites)." if S > 1 else ".")
    k, n_pool = len(r.selected), len(x.names)
    left = [n for n in ranked if n not in r.selected][:1]
    cut = f" · first left out: {name(left[0])} {fmt(r.scores[left[0]])}" if left else ""
    total = sum(max(r.scores[n], 0.0) for n in r.selected)
    lead = o.get("weighting", "proportional") == "lead" and len(r.selected) > 1
    # lead: the best at full strength, the others at LEAD_SHARE of their proportional weight
    factor = f"{LEAD_SHARE:g} × " if lead else ""
    weights = ", ".join(
        f"{name(n)} = {r.weights[n]:.3f}"
        if lead and i == 0
        else f"{name(n)} {factor}{fmt(max(r.scores[n], 0.0))} / {fmt(total)} = {r.weights[n]:.3f}"
        for i, n in enumerate(r.selected)
    )
    mix = " + ".join(f"{r.weights[n]:.2f}·Δ{name(n)}(x)" for n in r.selected)
    gate = abstain_text(r)
    steps = [
        f"**Probe.** One pass of the base model over the prompt (**{x.prompt_tokens} tokens** with the chat "
        f"template), stopped after block {blocks[-1]}. At {where} LoGo reads h: {what} at "
        + {
            "last": "the last prompt token",
            "mean": "the mean over your tokens",
            "both": "the last prompt token and the mean over your tokens (two readings)",
        }[o.get("pooling", "last")]
        + ".",
        f"**Signal.** Each adapter i maps h to o_i = s_i·B_i·A_i·h at **{modules}**, reading h through the r "
        f"directions of A_i; its signal σ_i = {signal}{mean}. "
        f"Raw signal of the best: {raw}.",
        f"**Calibration.** {step3}",
        f"**Top-k cut.** k = {k} of {n_pool}: "
        + ", ".join(f"{name(n)} {fmt(r.scores[n])}" for n in r.selected)
        + cut
        + (f" · **tie** at the cut: {', '.join(map(name, r.ties))} (pool order chose)." if r.ties else ".")
        + (f" {gate}" if gate and r.selected else ""),
        (
            (
                f"**Weights** (`lead`). The best adapter at full strength, w_1 = 1; each other w_i = {LEAD_SHARE:g} × "
                f"max(score_i, 0) / Σ max(score_j, 0) over the chosen: {weights}. (Chosen on dev over the paper's "
                "proportional weights: docs/lab/merges.)"
                if lead
                else f"**Weights.** w_i = max(score_i, 0) / Σ max(score_j, 0) over the chosen: {weights}."
            )
            if r.selected
            else (
                f"**Abstained.** The prompt is shorter than `abstain_min_tokens` = {o.get('abstain_min_tokens')} "
                "tokens, shorter than every prompt the pool is for, so no score above means anything: the base "
                "model answers alone."
                if o.get("abstain_reason") == "short"
                else f"**Abstained.** The prompt is unlike every prompt the pool is for: {gate} The base model "
                "answers alone."
                if o.get("abstain_reason") == "unlike_pool"
                else f"**Abstained.** No adapter stands out: {gate} The base model answers alone."
            )
        ),
        f"**Mixture.** While answering, every adapted module computes y = W x + {mix}, "
        "where Δ(x) = s·B·A·x is one adapter's LoRA update.",
    ]
    cal_name = o.get("calibration", "neutral") + "-calibrated" if o["calibrated"] else "raw"
    if x.decorrelation:
        cal_name += f", decorrelated {x.decorrelation[0]:g},"
    if x.tokens:
        cal_name += f" + token evidence {x.tokens[0]:g},"
    settings = (
        f"k = {k} · {o.get('weighting', 'proportional')} weights · {cal_name} {o['signal']} · {where} · "
        f"{modules} · {o['probe_input']} · {o.get('pooling', 'last')}"
    )
    head = f"**How LoGo chose the adapters for this prompt** ({settings})"
    return "\n\n".join([head, *(f'<a id="how-{i}"></a>**{i} ·** {text}' for i, text in enumerate(steps, 1))])


def abstain_text(r: Routing) -> str:
    """The abstain check in words: whose best score met `abstain_below` or fell under it ('' without one)."""
    o, best = r.options, r.abstain_score
    if best is None or o.get("abstain_below") is None:
        return ""
    verdict = "≥" if best >= o["abstain_below"] else "<"
    if o.get("abstain_signal") == "nearest":
        return (
            f"Abstain check: nearest background prompt {fmt(best)} {verdict} `abstain_below` {o['abstain_below']:g} "
            f"(block {o.get('abstain_layer')})."
        )
    which = "" if o.get("abstain_signal", "same") in ("same", o["signal"]) else f"**{o['abstain_signal']}** "
    mods = o.get("abstain_module", "same")
    mods = [mods] if isinstance(mods, str) else list(mods)
    modules = o["module"] if isinstance(o["module"], list) else [o["module"]]
    where = "" if mods in (["same"], modules) else f" on **{','.join(mods)}**"
    return f"Abstain check: best {which}score{where} {fmt(best)} {verdict} `abstain_below` {o['abstain_below']:g}."


def table_markdown(x: Explanation, limit: int | None = None) -> str:
    """Every adapter, best first: raw signal, constant, score, chosen, weight (means over sites when several)."""
    r = x.routing
    idx = {n: i for i, n in enumerate(x.names)}
    ranked = sorted(r.scores, key=lambda n: -r.scores[n])
    several = len(x.sites) > 1
    m_ = " (mean)" if several else ""
    cols = f" | μ{m_} | s{m_}" if x.background else f" | c{m_}"
    cols += " | z" if x.decorrelation else ""
    cols += " | token t" if x.tokens else ""
    head = f"| rank | adapter | raw σ{m_}{cols}"
    extra = (2 if x.background else 1) + bool(x.decorrelation) + bool(x.tokens)
    lines = [
        head + " | score | chosen | weight |",
        "|---:|---|---:|" + "---:|" * extra + "---:|:---:|---:|",
    ]
    for rank, n in enumerate(ranked[:limit], 1):
        i = idx[n]
        chosen = "✔" if n in r.weights else ("tie" if n in r.ties else "")
        weight = f"{r.weights[n]:.3f}" if n in r.weights else ""
        consts = (
            f"{fmt(_mean(x.shifts, i))} | {fmt(_mean(x.constants, i))}" if x.background else fmt(_mean(x.constants, i))
        )
        consts += f" | {fmt(_mean(x.per_site, i))}" if x.decorrelation else ""
        consts += f" | {fmt(x.tokens[2][i])}" if x.tokens else ""
        lines.append(
            f"| {rank} | {name(n)} | {fmt(_mean(x.raw, i))} | {consts} | {fmt(r.scores[n])} | {chosen} | {weight} |"
        )
    if limit is not None and len(ranked) > limit:
        lines.append(f"| | *{len(ranked) - limit} more* |" + " |" * (4 + extra))
    return "\n".join(lines)


def per_site_markdown(x: Explanation, limit: int | None = None) -> str:
    """Raw signal, constant and score of the best adapters at every probed site (one row per site)."""
    r = x.routing
    idx = {n: i for i, n in enumerate(x.names)}
    ranked = sorted(r.scores, key=lambda n: -r.scores[n])[:limit]
    streams = len(x.streams()) > 1
    head = "| block | " + " | ".join(name(n) for n in ranked) + " |"
    out = []
    first = (
        "z at each site (its mean is z, decorrelated into the score)"
        if x.decorrelation
        else "score at each site (its mean is the score)"
    )
    tables = [(first, x.per_site), ("raw σ", x.raw)]
    tables += (
        [("μ (background mean)", x.shifts), ("s (background spread)", x.constants)]
        if x.background
        else [("c", x.constants)]
    )
    for title, rows in tables:
        lines = [f"**{title}**", "", head, "|---:|" + "---:|" * len(ranked)]
        for (b, m, p), row in zip(x.sites, rows):
            site = f"{b} · {m} · {p}" if streams else str(b)
            lines.append(f"| {site} | " + " | ".join(fmt(row[idx[n]]) for n in ranked) + " |")
        if rows is x.per_site:
            lines.append("| **mean** | " + " | ".join(f"**{fmt(_mean(rows, idx[n]))}**" for n in ranked) + " |")
            if x.decorrelation:
                lines.append("| **score** | " + " | ".join(f"**{fmt(r.scores[n])}**" for n in ranked) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def cut_parts(router: Router, prompt: str, max_new_tokens: int) -> tuple[str, str, str] | None:
    """(kept start, left-out middle, kept end) of a prompt the encoder cut to fit, read off the ids the
    model sees (the encoder marks the cut with `GAP`); None when the whole prompt fits."""
    enc = router.encode([prompt], max_new_tokens, router.device)
    if not enc.notices[0]:
        return None
    ids, e = enc.input_ids[0].tolist(), router.encode
    head, _, tail = e.tok.decode(ids[len(e.head) : len(ids) - len(e.tail)]).partition(GAP)
    return head, prompt[len(head) : len(prompt) - len(tail)], tail


def cut_note(parts: tuple[str, str, str]) -> str:
    """Which part of a long prompt the model did not see, in one sentence."""
    head, middle, tail = parts
    return (
        f"The model saw the start up to «…{head[-50:]}» and the end from «{tail[:50]}…»; the {len(middle):,} "
        f"characters between, «{middle[:40]}…{middle[-40:]}», were left out."
    )
