"""Evaluation harness: routing accuracy, task scores against baselines on seen and unseen tasks, the
probe's cost against its accuracy, plots.

    python -m logo_core.eval --out docs/eval            # the full run behind the README tables
    python -m logo_core.eval --quick --out /tmp/eval    # a small slice, end to end (the test)
    python -m logo_core.eval --render --out docs/eval   # redraw tables and plots from results.json
    python -m logo_core.eval --jsonl rows.jsonl --metric rouge_l   # {"context", "completion"} rows

Seen tasks have an adapter in the pool; unseen tasks (a held-out member of a family, or a whole
held-out family) have none: their scores are the headline. Every probe setting is scored from ONE
probe pass per batch (`Router.sweep`); the routing setting and k are chosen on dev prompts
drawn from the tasks' dev splits (items never trained on), then reported on the held-out test splits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import baselines, signals
from .engine import LoGoEngine
from .intervals import bootstrap, fmt, paired
from .mixing import acting, select_top_k
from .options import RouteOptions
from .tasks import METRICS, TASKS, Task

KS = (1, 3, 5, 10, 20)


# ------------------------------------------------------------------------------------------ routing


# The harness's grid is the per-site family (neutral constants, last token, never abstaining); the background
# calibration and token readings are scored by the routing lab (`logo_core.lab`), which chose the default.
GRID = {"calibration": "neutral", "pooling": "last", "abstain_below": -1e9}


def grid_options(engine: LoGoEngine, **route) -> RouteOptions:
    """`Router.options` with the harness's grid fixed (`GRID`), whatever adapters.yaml's defaults."""
    return engine.router.options(**{**GRID, **route})


def probe_sites(engine: LoGoEngine, module_sets: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """(probe input, module set) pairs the engine can probe: every adapted module (or `module_sets`) from its own
    input, and from the residual stream where the modules take it (down_proj and o_proj do not)."""
    sets = list(engine.pool.modules) if module_sets is None else list(module_sets)
    ctx = engine.router.context
    return [
        (pi, m) for pi in ("residual", "module") for m in sets if pi == "module" or not ctx.not_residual(m.split(","))
    ]


def full_settings(engine: LoGoEngine) -> list[RouteOptions]:
    """Every (probe input, module, signal, calibrated) over all blocks: one sweep holds every setting."""
    return [
        grid_options(
            engine, k=1, layer=f"0:{engine.router.n_layers}", module=m, probe_input=pi, signal=sig, calibrated=cal
        )
        for pi, m in probe_sites(engine)
        for sig in signals.SIGNALS
        for cal in (False, True)
    ]


def run_sweep(engine: LoGoEngine, prompts: Sequence[str], batch_size: int) -> dict[tuple, torch.Tensor]:
    """{(probe_input, module, signal, calibrated): [P, L, N]} block-by-block scores of every prompt."""
    settings = full_settings(engine)
    chunks = []
    for i in tqdm(range(0, len(prompts), batch_size), desc="probe sweep", leave=False):
        chunks.append(engine.router.sweep(list(prompts[i : i + batch_size]), settings))
    keys = [(s.probe_input, s.module[0], s.signal, s.calibrated) for s in settings]
    return {key: torch.cat([c[j] for c in chunks]) for j, key in enumerate(keys)}


def setting_scores(sweep: dict, s: RouteOptions) -> torch.Tensor:
    """[P, N] scores of a setting, the mean over its blocks and modules as the engine routes."""
    sites = [sweep[(s.probe_input, m, s.signal, s.calibrated)][:, b] for b in s.blocks for m in s.module]
    return signals.average(sites)


def label(s: RouteOptions) -> str:
    return f"{s.signal}/{'cal' if s.calibrated else 'raw'} block {s.layer_text} {'+'.join(s.module)} {s.probe_input}"


def candidate_settings(engine: LoGoEngine, every: int = 1) -> list[RouteOptions]:
    """Single blocks (every `every`-th) and block ranges, each module set, both probe inputs and
    signals, calibrated or not: the space the default is chosen from."""
    L, mods = engine.router.n_layers, engine.pool.modules
    default = ",".join(engine.router.options().module)  # adapters.yaml's module set, whatever else the pool adapts
    module_sets = list(dict.fromkeys([*mods, default, ",".join(mods)]))
    layers = [str(b) for b in range(0, L, every)] + [f"{a}:{L}" for a in (0, L // 3, L // 2, 2 * L // 3)]
    return [
        grid_options(engine, k=1, layer=lay, module=m, probe_input=pi, signal=sig, calibrated=cal)
        for lay in layers
        for pi, m in probe_sites(engine, module_sets)
        for sig in signals.SIGNALS
        for cal in (False, True)
    ]


def top_hits(scores: torch.Tensor, labels: Sequence[int], k: int = 1) -> torch.Tensor:
    """[P] bool: the prompt's own adapter is among the top-k (ties -> pool order, as select_top_k)."""
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    return (top == torch.tensor(labels)[:, None]).any(dim=1)


def family_hits(scores: torch.Tensor, families: Sequence[str], adapter_family: Sequence[str]) -> torch.Tensor:
    """[P] bool: the top-1 adapter belongs to the prompt's family."""
    top = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, 0]
    return torch.tensor([adapter_family[j] == f for j, f in zip(top.tolist(), families)])


def pct(x: torch.Tensor) -> float:
    return 100.0 * x.float().mean().item() if len(x) else float("nan")


def probe_costs(engine: LoGoEngine, settings: Sequence[RouteOptions], prompts: Sequence[str], rounds: int = 3):
    """Median ms of one warm `route` per setting, the settings interleaved round by round (so a busy
    spell of a shared machine hits them all alike)."""
    kws = [
        dict(
            layer=s.layer_text,
            module=",".join(s.module),
            probe_input=s.probe_input,
            signal=s.signal,
            calibrated=s.calibrated,
            **GRID,
        )
        for s in settings
    ]
    for kw in kws:  # warm: calibration and probe stacks are not timed
        engine.route(prompts[0], **kw)
    times: list[list[float]] = [[] for _ in settings]
    for _ in range(rounds):
        for p in prompts:
            for i, kw in enumerate(kws):
                t0 = time.perf_counter()
                engine.route(p, **kw)
                times[i].append(1000 * (time.perf_counter() - t0))
    return [statistics.median(t) for t in times]


# ------------------------------------------------------------------------------------------ task scores


def mixtures_from_scores(
    scores: torch.Tensor, names: Sequence[str], k: int, weighting: str = "proportional"
) -> list[dict[str, float]]:
    """Top-k mixtures (docs/method.md §5), one per row."""
    out = []
    for row in scores:
        idx, w = select_top_k(row, min(k, len(names)), weighting)
        out.append(acting({names[i]: wi for i, wi in zip(idx, w)}))
    return out


def max_tokens(examples, tokenizer) -> int:
    """Generation length for a task: room for its longest reference answer (capped at 48).

    The room is 8 tokens plus 3 a word, and never less than the reference's own tokens plus 2: a
    German number or a COBOL-CASE identifier is one word of up to 17 tokens, and a length counted
    in words alone cut the right answer short (and scored it wrong).
    """
    words = max(len(ex.answer.split()) for ex in examples)
    tokens = max(len(tokenizer(ex.answer, add_special_tokens=False).input_ids) for ex in examples)
    return min(48, max(8 + 3 * words, 2 + tokens))


@dataclass(frozen=True)
class ArrowJob:
    """A condition answered by PEFT's Arrow at this `top_k` (`arrow.ArrowPeer`), not by a mixture."""

    top_k: int


class Runner:
    """Generates each distinct (prompt, mixture, length) once, batched; conditions share the cache.

    With `cache_dir`, every answer is also appended to `answers-<digest>.jsonl` there, the digest taken over
    the engine's provenance (model, revision, adapter hashes), so an interrupted evaluation resumes where it
    stopped and a changed pool starts afresh. LoraHub's merged adapters are not written (they are refit).
    """

    def __init__(self, engine: LoGoEngine, batch_size: int, cache_dir: Path | None = None) -> None:
        self.engine, self.batch_size = engine, batch_size
        self.arrow = None  # PEFT's Arrow model, built for the first Arrow condition (arrow.ArrowPeer)
        self.cache: dict[str, str] = {}
        self.file = None
        if cache_dir is not None:
            blob = json.dumps(engine.provenance, sort_keys=True, default=str).encode()
            self.file = Path(cache_dir) / f"answers-{hashlib.sha256(blob).hexdigest()[:16]}.jsonl"
            if self.file.is_file():
                for line in self.file.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a line cut by a killed run (or a copy taken mid-write)
                        continue
                    self.cache[row["key"]] = row["answer"]

    @staticmethod
    def _key(prompt: str, mixture, n: int) -> str:
        if isinstance(mixture, dict):
            what = sorted([k, round(v, 6)] for k, v in mixture.items())
        elif isinstance(mixture, ArrowJob):
            what = ["arrow", mixture.top_k]
        else:
            what = ["custom", id(mixture)]  # a `Mixture` object (LoraHub's merged adapter)
        return json.dumps([prompt, n, what], ensure_ascii=False)

    def _keep(self, key: str, answer: str, persist: bool = True) -> None:
        self.cache[key] = answer
        if self.file is not None and persist:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            with self.file.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "answer": answer}, ensure_ascii=False) + "\n")

    def run(self, jobs: Sequence[tuple], desc: str) -> list[str]:
        """jobs: (prompt, {adapter: weight}, an `ArrowJob` or a `Mixture`, max_new_tokens) -> answers."""
        todo = {self._key(*j): j for j in jobs if self._key(*j) not in self.cache}
        plain = sorted(
            ((k, j) for k, j in todo.items() if isinstance(j[1], dict)), key=lambda kv: (kv[1][2], len(kv[1][0]))
        )
        for i in tqdm(range(0, len(plain), self.batch_size), desc=desc, leave=False):
            chunk = plain[i : i + self.batch_size]
            n = max(j[2] for _, j in chunk)
            gens = self.engine.generate_batch(
                [j[0] for _, j in chunk], adapters=[j[1] for _, j in chunk], max_new_tokens=n
            )
            for (key, _), g in zip(chunk, gens):
                self._keep(key, g.text)
        arrow = [(k, j) for k, j in todo.items() if isinstance(j[1], ArrowJob)]
        for top_k in sorted({j[1].top_k for _, j in arrow}):
            from .arrow import ArrowPeer

            self.arrow = self.arrow or ArrowPeer(self.engine, top_k=top_k)  # one Arrow model serves every top_k
            peer = self.arrow.with_top_k(top_k)
            mine = sorted((kj for kj in arrow if kj[1][1].top_k == top_k), key=lambda kj: (kj[1][2], len(kj[1][0])))
            for i in tqdm(range(0, len(mine), self.batch_size), desc=f"{desc} (Arrow)", leave=False):
                chunk = mine[i : i + self.batch_size]
                texts = peer.generate_batch([j[0] for _, j in chunk], max(j[2] for _, j in chunk), self.batch_size)
                for (key, _), text in zip(chunk, texts):
                    self._keep(key, text)
        for key, (prompt, mixture, n) in todo.items():  # custom mixtures: plan, swap the mixture, decode
            if key not in self.cache:
                plan = self.engine.plan([prompt], adapters=[{}], max_new_tokens=n)
                plan.mixture = mixture
                text = self.engine.tokenizer.decode(self.engine.decoder.decode(plan)[0], skip_special_tokens=True)
                self._keep(key, text, persist=False)
        return [self.cache[self._key(*j)] for j in jobs]


def score_condition(runner: Runner, tasks: Sequence[Task], test: dict, mixes: Sequence, lengths: dict, desc: str):
    """One condition (one mixture per test prompt, in task order): ({task: mean score}, [per-prompt score])."""
    jobs = [(ex.prompt, m, lengths[t.name]) for (t, ex), m in zip(_rows(tasks, test), mixes, strict=True)]
    texts = runner.run(jobs, desc)
    per_prompt = [t.score(text, ex.answer) for (t, ex), text in zip(_rows(tasks, test), texts)]
    per_task: dict[str, list[float]] = {}
    for (t, _), score in zip(_rows(tasks, test), per_prompt):
        per_task.setdefault(t.name, []).append(score)
    return {name: statistics.fmean(v) for name, v in per_task.items()}, per_prompt


def choose_k(per_k: dict[int, Sequence[float]]) -> int:
    """k from dev prompts: the smallest, unless a larger k beats it by a paired interval above 0 (then the one
    of those with the best mean). With `lead` weights k is nearly free, so "the best dev mean" would pick a
    large k on noise (it chose k = 20 at 74.0 against 73.7 for k = 1, every interval overlapping)."""
    k0 = min(per_k)
    better = [k for k in per_k if k != k0 and paired(torch.tensor(per_k[k]), torch.tensor(per_k[k0]), scale=1.0)[1] > 0]
    return max(better, key=lambda k: (statistics.fmean(per_k[k]), -k)) if better else k0


def default_routing(engine: LoGoEngine, prompts: Sequence[str], batch_size: int) -> tuple[torch.Tensor, list[bool]]:
    """The shipped default's routing (adapters.yaml): [P, N] scores and, per prompt, whether it abstained."""
    names, rows = engine.adapters, []
    for i in tqdm(range(0, len(prompts), batch_size), desc="route (shipped default)", leave=False):
        rows += engine.route_batch(list(prompts[i : i + batch_size]))
    scores = torch.tensor([[r.scores[n] for n in names] for r in rows]).reshape(len(rows), len(names))
    return scores, [r.options.get("mode") == "abstained" for r in rows]


def default_mixtures(
    routed: tuple[torch.Tensor, list[bool]], names: Sequence[str], k: int, weighting: str
) -> list[dict]:
    """The shipped default's top-k mixtures (its `weighting`); an abstained prompt gets the base model ({})."""
    scores, abstained = routed
    mixes = mixtures_from_scores(scores, names, k, weighting)
    return [{} if a else m for m, a in zip(mixes, abstained, strict=True)]


def default_accuracy(routed: dict, names, adapter_family, seen, unseen, test) -> dict:
    """The shipped default's routing on the test prompts, each figure (mean, low, high) in percent: own
    adapter top-1 and top-3 (seen), top-1 in the prompt's family (seen; unseen tasks whose family has
    adapters), and how often it abstained."""
    out = {}
    if seen:
        scores, abstained = routed[("seen", "test")]
        rows = _rows(seen, test)
        own = torch.tensor([names.index(t.name) for t, _ in rows])
        fams = [t.family for t, _ in rows]
        keep = ~torch.tensor(abstained)  # an abstained prompt chose no adapter: a miss
        out["own_top1"] = bootstrap(top_hits(scores, own.tolist()) & keep)
        out["own_top3"] = bootstrap(top_hits(scores, own.tolist(), 3) & keep)
        out["family_hit"] = bootstrap(family_hits(scores, fams, adapter_family) & keep)
        out["abstained"] = bootstrap(~keep)
    if unseen:
        scores, abstained = routed[("unseen", "test")]
        rows = _rows(unseen, test)
        idx = [i for i, (t, _) in enumerate(rows) if t.family in adapter_family]
        if idx:
            hit = family_hits(scores[idx], [rows[i][0].family for i in idx], adapter_family)
            out["unseen_family_hit"] = bootstrap(hit & ~torch.tensor([abstained[i] for i in idx]))
    return out


def _rows(tasks: Sequence[Task], examples: dict) -> list:
    return [(t, ex) for t in tasks for ex in examples[t.name]]


def mean(d: dict[str, float], names: Sequence[str]) -> float:
    return statistics.fmean(d[n] for n in names) if names else float("nan")


# ------------------------------------------------------------------------------------------ the evaluation


def evaluate(
    engine: LoGoEngine,
    n_test: int = 20,
    n_dev: int = 10,
    batch_size: int = 16,
    ks: Sequence[int] = KS,
    quick: bool = False,
    lorahub_steps: int = 40,
    log=print,
    cache_dir: Path | None = None,
    arrow_ks: Sequence[int] = (1, 3),
) -> dict:
    """The whole evaluation; returns a JSON-able dict of every figure.

    `cache_dir`: keep every answer there (`Runner`), so a rerun after an interruption resumes.
    """
    names = engine.adapters
    adapter_family = [engine.pool.family(n) for n in names]
    seen = [t for t in TASKS.values() if t.name in names]
    unseen = [t for t in TASKS.values() if t.name not in names]
    if quick:
        seen, unseen = seen[:3], [t for t in unseen if t.family in {s.family for s in seen}][:1] + unseen[-1:]
    ks = [k for k in ks if k <= len(names)]
    test = {t.name: t.examples("test", n_test) for t in seen + unseen}
    dev = {t.name: t.examples("dev", n_dev) for t in seen + unseen}
    lengths = {t.name: max_tokens(test[t.name], engine.tokenizer) for t in seen + unseen}
    if quick:
        lengths = {name: min(8, n) for name, n in lengths.items()}
    t_start = time.perf_counter()

    # 1. Routing on seen tasks: every candidate setting from one sweep; top-1 and family hits.
    log("routing sweep ...")
    prompts = {split: [ex.prompt for t, ex in _rows(seen, ex_)] for split, ex_ in (("dev", dev), ("test", test))}
    labels = {
        split: [names.index(t.name) for t, _ in _rows(seen, ex_)] for split, ex_ in (("dev", dev), ("test", test))
    }
    fams = {split: [t.family for t, _ in _rows(seen, ex_)] for split, ex_ in (("dev", dev), ("test", test))}
    sweeps = {split: run_sweep(engine, prompts[split], batch_size) for split in ("dev", "test")}
    un_prompts = [ex.prompt for _, ex in _rows(unseen, test)]
    un_fams = [t.family for t, _ in _rows(unseen, test)]
    un_sweep = run_sweep(engine, un_prompts, batch_size) if unseen else None
    with_family = [i for i, f in enumerate(un_fams) if f in adapter_family]  # held-out members, not whole families
    candidates = candidate_settings(engine, every=6 if quick else 1)
    table = []
    for s in candidates:
        row = {"setting": label(s), "layer": s.layer_text, "module": list(s.module), "probe_input": s.probe_input}
        row |= {"signal": s.signal, "calibrated": s.calibrated, "sites": len(s.blocks) * len(s.module)}
        for split in ("dev", "test"):
            sc = setting_scores(sweeps[split], s)
            row[f"{split}_top1"] = pct(top_hits(sc, labels[split]))
            row[f"{split}_family"] = pct(family_hits(sc, fams[split], adapter_family))
            if split == "test":  # the reported figures carry their 95% intervals
                row["test_top1_ci"] = bootstrap(top_hits(sc, labels[split]))[1:]
                row["test_family_ci"] = bootstrap(family_hits(sc, fams[split], adapter_family))[1:]
        row["test_top3"] = pct(top_hits(setting_scores(sweeps["test"], s), labels["test"], 3))
        if un_sweep is not None and with_family:
            hits = family_hits(
                setting_scores(un_sweep, s)[with_family], [un_fams[i] for i in with_family], adapter_family
            )
            row["unseen_family"] = pct(hits)
        table.append(row)
    best_dev = max(r["dev_top1"] for r in table)

    # 2. Probe cost against accuracy: route ms of settings along depth, the default the cheapest on the front.
    log("probe cost ...")
    by_label = {r["setting"]: (r, s) for r, s in zip(table, candidates)}
    top = sorted(table, key=lambda r: (-r["dev_top1"], r["sites"]))[0]
    base_s = by_label[top["setting"]][1]
    L = engine.router.n_layers
    depth_layers = {top["layer"], str(L - 1), f"{L // 2}:{L}", f"0:{L}"}
    if not quick:  # the front along depth: single blocks, short and long ranges
        depth_layers |= {f"{2 * L // 3}:{L}", f"{L // 3}:{2 * L // 3}", *(str(b) for b in range(0, L, max(1, L // 6)))}
        depth_layers |= {f"{a}:{a + 3}" for a in range(0, L - 2, max(3, L // 5))}
    depth_layers = sorted(depth_layers)
    cost_prompts = prompts["test"][:: max(1, len(prompts["test"]) // 6)][: 2 if quick else 6]
    probed, costed = [], []
    for lay in depth_layers:
        probed.append(
            grid_options(
                engine,
                k=1,
                layer=lay,
                module=",".join(base_s.module),
                probe_input=base_s.probe_input,
                signal=base_s.signal,
                calibrated=base_s.calibrated,
            )
        )
    for s, ms in zip(probed, probe_costs(engine, probed, cost_prompts, rounds=1 if quick else 3)):
        r = {"setting": label(s), "sites": len(s.blocks) * len(s.module)}
        for split in ("dev", "test"):
            r[f"{split}_top1"] = pct(top_hits(setting_scores(sweeps[split], s), labels[split]))
        costed.append({**r, "route_ms": ms, "deepest_block": max(s.blocks), "layer": s.layer_text})
    ok = [c for c in costed if c["dev_top1"] >= best_dev - 1.0] or costed
    chosen_row = min(ok, key=lambda c: (c["route_ms"], -c["dev_top1"]))
    chosen = probed[costed.index(chosen_row)]
    L1 = L - 1
    reference = grid_options(
        engine,
        k=min(20, len(names)),
        layer=L1,
        module="q_proj" if "q_proj" in engine.pool.modules else engine.pool.modules[0],
        probe_input="residual",
        signal="norm",
        calibrated=False,
    )

    # 3. The shipped default (adapters.yaml) routes every prompt; k chosen on dev prompts (seen and unseen
    # separately), then every condition on test, each prompt's score kept for paired intervals.
    runner = Runner(engine, batch_size, cache_dir)
    retriever = baselines.Retriever(engine.pool.specs)
    log("routing with the shipped default ...")
    routed = {
        (split, which): default_routing(engine, [ex.prompt for _, ex in _rows(tasks, exs)], batch_size)
        for split, tasks in (("seen", seen), ("unseen", unseen))
        if tasks
        for which, exs in (("dev", dev), ("test", test))
    }
    weighting = engine.defaults.weighting
    k_dev: dict[str, dict[int, float]] = {"seen": {}, "unseen": {}}
    k_dev_ci: dict[str, dict[str, tuple]] = {"seen": {}, "unseen": {}}
    k_dev_per: dict[str, dict[int, list[float]]] = {"seen": {}, "unseen": {}}
    for split, tasks in (("seen", seen), ("unseen", unseen)):
        for k in ks if tasks else ():
            log(f"{split} dev k={k} ...")
            mixes = default_mixtures(routed[(split, "dev")], names, k, weighting)
            by_task, per = score_condition(runner, tasks, dev, mixes, lengths, f"{split} dev k={k}")
            k_dev[split][k] = mean(by_task, [t.name for t in tasks])
            k_dev_ci[split][str(k)] = bootstrap(torch.tensor(per), scale=1.0)
            k_dev_per[split][k] = per
    k_seen = choose_k(k_dev_per["seen"])
    k_unseen = choose_k(k_dev_per["unseen"]) if unseen else k_seen

    def conditions(tasks, split, sweep, rows, k_best) -> dict[str, list]:
        n = len(rows)
        conds = {"base": [{} for _ in range(n)]}
        if tasks is seen:
            conds["oracle"] = [{t.name: 1.0} for t, _ in rows]
        for k in ks:
            conds[f"LoGo k={k}"] = default_mixtures(routed[(split, "test")], names, k, weighting)
        if tasks is seen and any(routed[(split, "test")][1]):  # what abstaining costs on pool prompts
            conds[f"LoGo k={k_best}, never abstaining"] = mixtures_from_scores(
                routed[(split, "test")][0], names, k_best, weighting
            )
        if weighting != "proportional" and 3 in ks:  # the paper's weights at the same routing, for the merge rows
            conds["LoGo k=3 proportional"] = default_mixtures(routed[(split, "test")], names, 3, "proportional")
        conds[f"reference (raw norm, last block, q_proj, k={reference.k})"] = mixtures_from_scores(
            setting_scores(sweep, reference), names, reference.k
        )
        conds["uniform (all adapters)"] = [baselines.uniform(names) for _ in range(n)]
        conds[f"random k={k_best}"] = [baselines.random_k(names, k_best, seed=i) for i in range(n)]
        # Retrieval at k = 1 too: its own best (it weighs its picks uniformly, so a large k chosen for LoGo, whose
        # `lead` weights make k nearly free, would leave retrieval a strawman in the target rows).
        for k in sorted({1, k_best}):
            conds[f"retrieval k={k}"] = retriever.select([ex.prompt for _, ex in rows], k)
        for k in arrow_ks:
            conds[f"Arrow top_k={k} (PEFT)"] = [ArrowJob(min(k, len(names)))] * n
        return conds

    scores: dict[str, dict[str, dict[str, float]]] = {"seen": {}, "unseen": {}}
    per_prompt: dict[str, dict[str, list[float]]] = {"seen": {}, "unseen": {}}
    for split, tasks, sweep, k_best in (("seen", seen, sweeps["test"], k_seen), ("unseen", unseen, un_sweep, k_unseen)):
        if not tasks:
            continue
        rows = _rows(tasks, test)
        for cond, mixes in conditions(tasks, split, sweep, rows, k_best).items():
            log(f"{split}: {cond} ...")
            scores[split][cond], per_prompt[split][cond] = score_condition(
                runner, tasks, test, mixes, lengths, f"{split} {cond}"
            )
    if unseen:
        log("LoraHub ...")
        hub = baselines.LoraHub(engine, steps=lorahub_steps)
        mixes, lorahub = [], {}
        for i, t in enumerate(unseen):
            cands, w = hub.fit(t.examples("train", 5, seed=7), seed=i)
            lorahub[t.name] = dict(zip(cands, w))
            mixes += [hub.mixture(cands, w)] * len(test[t.name])
        cond = "LoraHub (5 examples per task)"
        scores["unseen"][cond], per_prompt["unseen"][cond] = score_condition(
            runner, unseen, test, mixes, lengths, "LoraHub"
        )
    shipped = default_accuracy(routed, names, adapter_family, seen, unseen, test)
    for split, tasks in (("seen", seen), ("unseen", unseen)):
        for cond in scores[split]:
            scores[split][cond]["average"] = mean(scores[split][cond], [t.name for t in tasks])

    # 4. Analyses for the plots.
    test_scores = routed[("seen", "test")][0]  # the shipped default's scores
    heat = torch.stack(
        [test_scores[[i for i, (t, _) in enumerate(_rows(seen, test)) if t.name == s.name]].mean(0) for s in seen]
    )
    by_block = {}
    for pi, m in probe_sites(engine):
        s = grid_options(
            engine, k=1, layer=0, module=m, probe_input=pi, signal=chosen.signal, calibrated=chosen.calibrated
        )
        key = (s.probe_input, m, s.signal, s.calibrated)
        by_block[f"{m} {pi}"] = [pct(top_hits(sweeps["test"][key][:, b], labels["test"])) for b in range(L)]
    return {
        "adapters": names,
        "adapter_families": adapter_family,
        "seen_tasks": [t.name for t in seen],
        "unseen_tasks": [t.name for t in unseen],
        "families": {t.name: t.family for t in seen + unseen},
        "metrics": {t.name: t.metric for t in seen + unseen},
        "n_test": n_test,
        "n_dev": n_dev,
        "ks": list(ks),
        "k_dev": {split: {str(k): v for k, v in d.items()} for split, d in k_dev.items()},
        "k_dev_ci": k_dev_ci,
        "k_seen": k_seen,
        "k_unseen": k_unseen,
        "shipped_default": engine.route_options().trace(),
        "default": {
            "label": label(chosen),
            "layer": chosen.layer_text,
            "module": ",".join(chosen.module),
            "probe_input": chosen.probe_input,
            "signal": chosen.signal,
            "calibrated": chosen.calibrated,
            "k": k_seen,
        },
        "reference": label(reference),
        "best_dev_top1": best_dev,
        "routing": table,
        "probe_cost": costed,
        "routing_by_block": by_block,
        "scores": scores,
        "per_prompt": per_prompt,
        "shipped_routing": shipped,
        "lorahub": lorahub if unseen else {},
        "heatmap": heat.tolist(),
        "wall_s": time.perf_counter() - t_start,
    }


# ------------------------------------------------------------------------------------------ report


def _fmt(x: float) -> str:
    return "–" if x != x else f"{x:.1f}"


def _ci(row: dict, key: str) -> str:
    """'86.7 [84.6, 88.9]' from a row's figure and its interval (the figure alone in older results)."""
    lo_hi = row.get(f"{key}_ci")
    return fmt((row[key], *lo_hi)) if lo_hi else _fmt(row[key])


def _family_table(results: dict, split: str) -> list[str]:
    """Conditions x families (mean over each family's tasks), the average and its 95% interval."""
    tasks = results[f"{split}_tasks"]
    fams = sorted({results["families"][t] for t in tasks})
    head = "| condition | " + " | ".join(fams) + " | **average** | 95% CI |"
    lines = [head, "|---|" + "---:|" * (len(fams) + 2)]
    for cond, sc in results["scores"][split].items():
        cells = [_fmt(statistics.fmean(sc[t] for t in tasks if results["families"][t] == f)) for f in fams]
        _, lo, hi = bootstrap(torch.tensor(results["per_prompt"][split][cond]), scale=1.0)
        ci = f"[{lo:.1f}, {hi:.1f}]"
        lines.append(f"| {cond} | " + " | ".join(cells) + f" | **{_fmt(sc['average'])}** | {ci} |")
    return lines


def targets(results: dict) -> list[str]:
    """The routing issue's targets, each read from a paired interval over the same test prompts (LoGo at
    the dev-chosen k minus the other condition, in points). A ">" row is met only when the whole interval
    is above the bar; a ">=" row when the estimate reaches it (the interval says how sure that is)."""
    pp = results["per_prompt"]
    logo = {"seen": f"LoGo k={results['k_seen']}", "unseen": f"LoGo k={results['k_unseen']}"}
    rows = []
    if pp.get("seen"):
        seen = pp["seen"]
        rows.append(("seen", logo["seen"], "oracle", -5.0, ">="))
        rows += [("seen", logo["seen"], c, 0.0, ">=") for c in seen if c.startswith("retrieval")]
        if f"{logo['seen']}, never abstaining" in seen:  # abstaining may cost pool prompts at most 2 points
            rows.append(("seen", logo["seen"], f"{logo['seen']}, never abstaining", -2.0, ">="))
        if "LoGo k=3" in seen and "LoGo k=1" in seen:
            rows.append(("seen", "LoGo k=3", "LoGo k=1", 0.0, ">="))
        if "LoGo k=3 proportional" in seen and "LoGo k=1" in seen:  # the paper's weights, for comparison
            rows.append(("seen", "LoGo k=3 proportional", "LoGo k=1", 0.0, ">="))
    if pp.get("unseen"):
        unseen = pp["unseen"]
        peers = ("uniform", "random", "retrieval", "LoraHub", "Arrow")
        rows += [("unseen", logo["unseen"], c, 0.0, ">") for c in unseen if c.startswith(peers)]
        rows.append(("unseen", logo["unseen"], "base", 10.0, ">="))
        if "LoGo k=3" in unseen and "LoGo k=1" in unseen:
            rows.append(("unseen", "LoGo k=3", "LoGo k=1", 0.0, ">"))
        if "LoGo k=3 proportional" in unseen and "LoGo k=1" in unseen:
            rows.append(("unseen", "LoGo k=3 proportional", "LoGo k=1", 0.0, ">"))
    lines = [
        "### Targets (task score, paired over the same test prompts)",
        "",
        "| tasks | condition | against | difference [95% CI], points | target | met |",
        "|---|---|---|---:|---|---|",
    ]
    for split, a, b, bar, op in rows:
        d = paired(torch.tensor(pp[split][a]), torch.tensor(pp[split][b]), scale=1.0)
        met = d[1] > bar if op == ">" else d[0] >= bar
        target = f"{op} {bar:+g}"
        lines.append(f"| {split} | {a} | {b} | {fmt(d)} | {target} | {'yes' if met else '**no**'} |")
    return lines


def shipped_routing(results: dict) -> list[str]:
    """The shipped default's routing accuracy on the test prompts, with 95% intervals."""
    r = results.get("shipped_routing") or {}
    names = {
        "own_top1": "own adapter top-1 (seen)",
        "own_top3": "own adapter in top-3 (seen)",
        "family_hit": "top-1 in the prompt's family (seen)",
        "unseen_family_hit": "top-1 in the prompt's family (unseen members)",
        "abstained": "abstained (the base model answered)",
    }
    lines = ["| routing figure | % [95% CI] |", "|---|---:|"]
    return lines + [f"| {names[k]} | {fmt(v)} |" for k, v in r.items() if k in names]


def markdown(results: dict) -> str:
    """The README tables."""
    r = results
    d = r["default"]
    lines = [
        f"Seen tasks: {len(r['seen_tasks'])} with an adapter each; unseen: {len(r['unseen_tasks'])} without "
        f"({', '.join(r['unseen_tasks'])}). {r['n_test']} held-out test prompts per task; the setting and k are "
        f"chosen on {r['n_dev']} dev prompts per task from the dev splits (items never trained on).",
        "",
        "LoGo rows route with the shipped default (adapters.yaml: "
        + ", ".join(f"{k} {v}" for k, v in r.get("shipped_default", {}).items() if k not in ("mode", "k"))
        + f"); k chosen on dev prompts (the smallest, unless a larger k beats it by a paired interval above 0): "
        f"{r['k_seen']} on seen tasks, {r['k_unseen']} on unseen tasks. "
        f"The per-site grid's best on dev, **{d['label']}**, is what the routing and probe-cost tables below score.",
        "",
        "### Unseen tasks (no adapter of their own): the headline",
        "",
    ]
    if r["unseen_tasks"]:
        conds = list(r["scores"]["unseen"])
        lines += ["| task | family | " + " | ".join(conds) + " |", "|---|---|" + "---:|" * len(conds)]
        for t in r["unseen_tasks"] + ["average"]:
            fam = r["families"].get(t, "")
            cells = [_fmt(r["scores"]["unseen"][c][t]) for c in conds]
            lines.append(f"| {'**average**' if t == 'average' else t} | {fam} | " + " | ".join(cells) + " |")
    if r["unseen_tasks"]:
        lines += ["", "Unseen tasks by family, with 95% intervals over prompts:", "", *_family_table(r, "unseen")]
    lines += ["", "### Seen tasks, by family (mean task score)", "", *_family_table(r, "seen")]
    lines += ["", "Per-task scores: `results.json`. Metrics: " + ", ".join(sorted(set(r["metrics"].values()))) + "."]
    ci = r.get("k_dev_ci", {})
    k_rows = [
        "| "
        + str(k)
        + " | "
        + " | ".join(fmt(ci[s][str(k)]) if str(k) in ci.get(s, {}) else "–" for s in ("seen", "unseen"))
        + " |"
        for k in r["ks"]
    ]
    lines += [
        "",
        "### k on dev prompts (95% intervals)",
        "",
        "| k | seen dev | unseen dev |",
        "|---:|---:|---:|",
        *k_rows,
    ]
    lines += ["", "### Routing (seen tasks: own adapter top-1, top-1 in the prompt's family)", ""]
    lines += [
        "| setting | dev top-1 | test top-1 [95% CI] | test top-3 | test family hit [95% CI] | unseen: family hit |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    best = sorted(r["routing"], key=lambda x: (-x["dev_top1"], x["sites"]))[:8]
    chosen = [x for x in r["routing"] if x["setting"] == d["label"]]
    ref = [x for x in r["routing"] if x["setting"] == r["reference"]]
    for x in {id(x): x for x in ref + chosen + best}.values():
        tag = " (reference)" if x["setting"] == r["reference"] else " (chosen)" if x["setting"] == d["label"] else ""
        lines.append(
            f"| {x['setting']}{tag} | {_fmt(x['dev_top1'])} | {_ci(x, 'test_top1')} | {_fmt(x['test_top3'])} | "
            f"{_ci(x, 'test_family')} | {_fmt(x.get('unseen_family', float('nan')))} |"
        )
    lines += ["", "### The shipped default's routing (test prompts)", "", *shipped_routing(r)]
    lines += ["", *targets(r)]
    lines += ["", "### Probe cost against routing accuracy (`route` ms, warm, one prompt)", ""]
    lines += [
        "| probe at | deepest block | sites | route ms | dev top-1 | test top-1 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for c in sorted(r["probe_cost"], key=lambda c: c["route_ms"]):
        tag = " **(chosen)**" if c["setting"] == d["label"] else ""
        lines.append(
            f"| {c['setting']}{tag} | {c['deepest_block']} | {c['sites']} | {c['route_ms']:.0f} | "
            f"{_fmt(c['dev_top1'])} | {_fmt(c['test_top1'])} |"
        )
    return "\n".join(lines) + "\n"


def write_outputs(results: dict, out: Path, png: bool = True) -> None:
    from . import plots

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(results))
    figures = {
        "heatmap": plots.heatmap(
            results["heatmap"],
            results["adapters"],
            results["seen_tasks"],
            title="Mean routing score: task prompts x adapters (the shipped default)",
            row_label="task",
            value_label="mean score",
        ),
        "routing_by_block": plots.accuracy_by_block(
            results["routing_by_block"], title="Own-adapter top-1 when probing one block"
        ),
        "probe_cost": plots.cost_accuracy(
            results["probe_cost"], chosen=results["default"]["label"], title="Probe cost against routing accuracy"
        ),
    }
    for name, fig in figures.items():
        fig.write_html(out / f"{name}.html", include_plotlyjs="cdn")
        if not png:
            continue
        try:
            fig.write_image(out / f"{name}.png", width=1000, height=650, scale=1)
        except Exception as e:  # kaleido needs a Chrome; HTML is still written
            print(f"warning: could not write {name}.png ({e})", file=sys.stderr)


def score_jsonl(engine: LoGoEngine, path: Path, metric: str, max_new_tokens: int, batch_size: int) -> dict:
    """LoGo and the base model on `{"context": ..., "completion": ...}` rows (the authors' format)."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts, refs = [r["context"] for r in rows], [r["completion"] for r in rows]
    out = {}
    for cond in ("base", "LoGo"):
        texts = []
        for i in tqdm(range(0, len(prompts), batch_size), desc=cond):
            chunk = prompts[i : i + batch_size]
            adapters = [{} for _ in chunk] if cond == "base" else None
            texts += [g.text for g in engine.generate_batch(chunk, adapters=adapters, max_new_tokens=max_new_tokens)]
        out[cond] = statistics.fmean(METRICS[metric](t, r) for t, r in zip(texts, refs))
    return {"file": str(path), "metric": metric, "rows": len(rows), "scores": out}


def dtype_check(config: str, dtype: str, probe_dtype: str, n_test: int, batch_size: int) -> str:
    """The shipped routing answered in fp32 and in `dtype` (routing on a `probe_dtype` copy): seen and
    unseen average task scores on the test prompts and how many prompts got the same adapters. Markdown."""
    rows, chosen = [], {}
    for label, kw in (
        ("fp32", {"dtype": "fp32"}),
        (f"{dtype} + {probe_dtype} probe", {"dtype": dtype, "probe_dtype": probe_dtype}),
    ):
        engine = LoGoEngine.from_config(config, **kw)
        tasks, t0 = list(TASKS.values()), time.perf_counter()
        per, chosen[label] = {}, []
        for t in tqdm(tasks, desc=label, leave=False):
            exs = t.examples("test", n_test)
            gens = [
                g
                for i in range(0, len(exs), batch_size)
                for g in engine.generate_batch(
                    [x.prompt for x in exs[i : i + batch_size]], max_new_tokens=max_tokens(exs, engine.tokenizer)
                )
            ]
            per[t.name] = statistics.fmean(t.score(g.text, x.answer) for g, x in zip(gens, exs))
            chosen[label] += [tuple(g.routing.selected) for g in gens]
        seen = [t.name for t in tasks if t.name in engine.adapters]
        unseen = [t.name for t in tasks if t.name not in engine.adapters]
        rows.append(
            f"| {label} | {_fmt(mean(per, seen))} | {_fmt(mean(per, unseen))} | {time.perf_counter() - t0:.0f} |"
        )
    a, b = chosen.values()
    same = sum(x == y for x, y in zip(a, b))
    return (
        "\n".join(
            [
                f"The shipped routing (adapters.yaml's defaults), {n_test} test prompts per task, batches of {batch_size}:",
                "",
                "| generation | seen average | unseen average | s |",
                "|---|---:|---:|---:|",
                *rows,
                "",
                f"Same adapters chosen: {same} of {len(a)} prompts.",
            ]
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m logo_core.eval", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="adapters.yaml")
    p.add_argument("--out", default="docs/eval", help="folder for results.json, results.md and plots")
    p.add_argument("--n-test", type=int, default=20, help="held-out test prompts per task")
    p.add_argument("--n-dev", type=int, default=10, help="dev prompts per task (dev split) to choose setting and k")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lorahub-steps", type=int, default=40, help="nevergrad steps of the LoraHub baseline")
    p.add_argument("--quick", action="store_true", help="a small slice (3 seen tasks, 2 unseen, 4 prompts each)")
    p.add_argument(
        "--cache",
        default="runs/eval",
        help="answers kept here, keyed by the pool's hashes: a rerun resumes ('' = none)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--jsonl", type=Path, help="score a file of {context, completion} rows instead")
    p.add_argument("--render", action="store_true", help="only redraw tables and plots from OUT/results.json")
    p.add_argument("--metric", default="rouge_l", choices=sorted(METRICS), help="metric for --jsonl")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation length for --jsonl")
    p.add_argument(
        "--dtype-check", metavar="DTYPE", help="compare task scores of fp32 and DTYPE generation (+ fp32 probe)"
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.dtype_check:
        md = dtype_check(args.config, args.dtype_check, "fp32", args.n_test, args.batch_size)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / f"dtype_{args.dtype_check}.md").write_text(md)
        print(md)
        return 0
    if args.render:
        results = json.loads((Path(args.out) / "results.json").read_text())
        write_outputs(results, Path(args.out))
        print(markdown(results))
        return 0
    engine = LoGoEngine.from_config(args.config)
    if args.jsonl:
        print(json.dumps(score_jsonl(engine, args.jsonl, args.metric, args.max_new_tokens, args.batch_size), indent=1))
        return 0
    if args.quick:
        results = evaluate(engine, 4, 3, args.batch_size, ks=(1, 3), quick=True, lorahub_steps=3)
    else:
        cache = Path(args.cache) if args.cache else None
        results = evaluate(
            engine, args.n_test, args.n_dev, args.batch_size, lorahub_steps=args.lorahub_steps, cache_dir=cache
        )
    from .lab import pool_hash
    from .registry import load_config

    results["pool"] = pool_hash(load_config(args.config))  # which weights these figures are of (update_readme)
    write_outputs(results, Path(args.out))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
