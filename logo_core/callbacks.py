"""The page's state and event handlers: `Page` (the components `app.layout` builds) and `Callbacks`
(call the engine, `plots` or `explain`, return {component: value}), testable without a browser; the
plain-words helpers they share.

Example:
    >>> with gr.Blocks():
    ...     page = app.layout(engine)
    >>> out = Callbacks(engine, PrivateFiles(), page).route("What is 47 + 38?", None, *values)
    >>> out[page.chart]  # the signal chart; what a callback leaves out stays as it is
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import time
import zipfile
from pathlib import Path

import gradio as gr

from . import explain, plots
from .compare import PEERS, Peers, Row
from .engine import LoGoEngine
from .errors import LoGoError
from .hosting import PrivateFiles
from .mixing import acting
from .options import GENERATE_FIELDS, PRESET_FIELDS, ROUTE_FIELDS
from .results import Routing

TOP = 15  # bars drawn before "Show all"
FIELDS = ROUTE_FIELDS + GENERATE_FIELDS  # the settings controls, in this order in every callback
NUMERIC = (
    "k",
    "layer",
    "abstain_below",
    "abstain_min_tokens",
    "abstain_layer",
    "token_layer",
    "max_new_tokens",
    "min_new_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
)
COMPARE = PEERS
BLOCK0 = (
    "Block 0 routes every prompt alike: the last token's input there is the embedding of the chat template's "
    "last token, the same for every prompt, so no adapter's score depends on the prompt (calibrated, they all tie)."
)
STALE = "Answer (to an earlier prompt or settings: press Generate for this one)"


def plain(text: str) -> str:
    """Text shown in Markdown but never read as Markdown or HTML (ASCII punctuation escaped, one line)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def compare_line(row: Row) -> str:
    """'first token 0.31 s · 30.5 tokens/s · number_words_de 100%' (or why a peer did not answer)."""
    t = row.timings
    speed = f"first token **{t['first_token_s']:.2f} s** · {t['tokens_per_s']:.1f} tokens/s · " if t else ""
    note = f" · {plain(row.note)}" if row.note else ""
    return f"{speed}{plain(mixture_text(row.weights))}{note}"


def box(notes: list[str]) -> dict:
    return gr.update(value="\n\n".join(f"⚠️ {plain(n)}" for n in notes), visible=bool(notes))


def key(prompt: str, values) -> str:
    """What an answer was made from; when the page's prompt or settings no longer match, the answer is stale."""
    return json.dumps([prompt, list(values)], default=str)


def timing_line(t: dict, first_token_s: float | None, stopped: bool) -> str:
    """'12 tokens · probe 21 ms · first token 0.31 s · 30.5 tokens/s · total 0.52 s' ('stopped after 5 tokens · ...')."""
    n, first = int(t["new_tokens"]), f" · first token {first_token_s:.2f} s" if first_token_s is not None else ""
    return (
        f"{'stopped after ' if stopped else ''}{n} tokens · probe {t['probe_s'] * 1e3:.0f} ms{first} · "
        f"{t['tokens_per_s']:.1f} tokens/s · total {t['total_s']:.2f} s"
    )


def mixture_text(weights: dict) -> str:
    """'capitals 54%, arithmetic 46%'; the base model and the uniform mixture in words."""
    if not weights:
        return "base model alone"
    if len(weights) > 3 and max(weights.values()) - min(weights.values()) < 1e-9:
        return f"all {len(weights)} adapters, {next(iter(weights.values())):.0%} each"
    return ", ".join(f"{n} {w:.0%}" for n, w in weights.items())


class Page:
    """The components the callbacks read and write: `app.layout` creates them and sets them here (one
    attribute each, as annotated below)."""

    prompt: gr.Textbox
    answer: gr.Textbox
    status: gr.Markdown
    notices: gr.Markdown
    chart: gr.Plot
    show_all: gr.Checkbox
    trace: gr.DownloadButton
    adapter_file: gr.File
    settings_notice: gr.Markdown
    controls: dict  # {setting: its control}, in FIELDS order
    block: gr.Slider  # "...or pick one block" (sets `layer`)
    presets: gr.Dropdown  # fills the routing controls with a named setting
    how: list  # "How LoGo chose": summary, every adapter's numbers, each probed site
    compared: list  # per COMPARE row its answer, then per row its numbers, then the latency panels
    sweep_tab: gr.Tab
    normalize: gr.Checkbox  # "scale each block to its best adapter"
    sweep_plot: gr.Plot
    generate_btn: gr.Button
    route_btn: gr.Button
    stop_btn: gr.Button
    export_btn: gr.Button
    compare_btn: gr.Button
    sweep_btn: gr.Button
    examples: list  # gr.Examples, one per family
    visitor: gr.State  # this page's id: Stop closes this visitor's answer only
    routing: gr.State  # the routing on the chart (a `Routing.to_dict()`)
    answered: gr.State  # `key` of what the answer was made from
    valid: gr.State  # the last valid settings
    sweep_cache: gr.State  # the visitor's last sweep matrix

    @property
    def settings(self) -> list:
        return list(self.controls.values())

    def routed(self) -> list:
        """What routing redraws."""
        return [self.chart, self.status, self.notices, self.answer, self.routing]

    def checked(self) -> list:
        """What a settings change updates: the routing, the notice, the numbers (back to valid ones if needed)."""
        return [*self.routed(), self.valid, self.settings_notice, *(self.controls[f] for f in NUMERIC)]

    def generated(self) -> list:
        return [self.answer, self.chart, self.status, self.notices, self.trace, self.routing, self.answered]


def preset_controls(engine: LoGoEngine, name: str | None) -> dict:
    """{routing setting: control value} of a named preset ("adapters.yaml": the defaults); {} for none."""
    if not name:
        return {}
    o = engine.route_options(preset=None if name == "adapters.yaml" else name)
    values = o.model_dump() | {
        "layer": o.layer_text,
        "module": list(o.module),
        "abstain_module": o.abstain_module_text,
        "token_layer": o.token_layer_text,
    }
    return {f: values[f] for f in PRESET_FIELDS}


class Callbacks:
    """The page's event handlers: call the engine, `plots` or `explain`, return {component: value}
    (components left out stay as they are). Testable without a browser.

    Args:
        engine: a loaded `LoGoEngine` (shared and read-only; every request's mixture is private).
        files: where downloads go.
        page: the components the handlers update.
    """

    def __init__(self, engine: LoGoEngine, files: PrivateFiles, page: Page) -> None:
        self.engine, self.files, self.page = engine, files, page
        self.descriptions = {n: engine.pool.description(n) for n in engine.pool.names}
        self.families = {n: engine.pool.family(n) for n in engine.pool.names}
        self.streams = {}  # visitor id -> the GenerationStream that Stop closes
        self.peers = Peers(engine)  # Arrow and the retriever, built on the first Compare

    def split(self, values) -> tuple[dict, dict]:
        """The controls' values as (routing, generation) settings; unticked *Sample* leaves the sampling
        controls out of the request (a greedy answer does not use them)."""
        s = dict(zip(FIELDS, values))
        if not s["do_sample"]:
            s |= dict.fromkeys(("temperature", "top_p", "top_k", "seed"))
        return {f: s[f] for f in ROUTE_FIELDS}, {f: s[f] for f in GENERATE_FIELDS}

    def chart(self, r: dict, show_all: bool = False):
        o = r["options"]
        title, subtitle = plots.signal_title(o), plots.probe_subtitle(o)
        top = None if show_all else TOP
        bars = (r["scores"], r["selected"], r["weights"], self.descriptions, title)
        return plots.signal_bars(*bars, subtitle=subtitle, families=self.families, ties=r["ties"], top=top)

    def notes(self, r: dict, max_new_tokens: int) -> list[str]:
        """The library's notices (a cut prompt, a tie), why block 0 cannot route, which part of a long prompt was cut."""
        o = r[
            "options"
        ]  # block 0's last token is the template's: the same for every prompt (unless the token evidence reads more)
        block0 = o["blocks"] == [0] and o.get("pooling", "last") == "last" and not o.get("token_weight")
        notes = list(r["notices"]) + ([BLOCK0] if block0 else [])
        parts = explain.cut_parts(self.engine.router, r["prompt"], max_new_tokens) if r["notices"] else None
        return notes + ([explain.cut_note(parts)] if parts else [])

    def answer_label(self, prompt: str, answered: str | None, *values):
        """An answer made from another prompt or other settings says so (and says nothing more once they match)."""
        if answered is None:
            return gr.skip()
        stale = key(prompt, values) != answered
        return gr.update(label=STALE if stale else "Answer", elem_classes=["answer", "stale"] if stale else ["answer"])

    def preset(self, name: str | None) -> dict:
        """The routing controls filled with a named setting (`options.PRESETS`, or adapters.yaml's defaults)."""
        return {self.page.controls[f]: v for f, v in preset_controls(self.engine, name).items()}

    def settings(self, prompt: str, answered: str | None, valid: dict, *values) -> dict:
        """A setting changed: check them all (a bad number goes back to its last valid value, beside the
        library's message with the range), then re-route the prompt, if there is one."""
        p = self.page
        try:
            self.engine.route_options(**self.split(values)[0])
            sampling = dict(zip(FIELDS, values)) | {"do_sample": True}  # every number shown is checked
            self.engine.generate_options(**{f: sampling[f] for f in GENERATE_FIELDS})
        except LoGoError as e:
            notice = box([f"{e} (back to the last valid value)"])
            return {p.settings_notice: notice, **{p.controls[f]: valid[f] for f in NUMERIC}}
        valid = dict(zip(FIELDS, values))
        routed = self.route(prompt, answered, *values) if prompt.strip() else {}
        routed.setdefault(p.answer, self.answer_label(prompt, answered, *values))
        # Valid numbers stay as the visitor has them now: values written back would be this event's, and undo
        # what was typed since it started (`hosting.lenient` sliders survive being left out).
        return {**routed, p.valid: valid, p.settings_notice: box([])}

    def route(self, prompt: str, answered: str | None, *values) -> dict:
        """Route only: redraw the chart and the notes; an answer made with other settings says so."""
        p = self.page
        try:
            r = self.engine.route(prompt, **self.split(values)[0]).to_dict()
        except LoGoError as e:
            return {p.chart: plots.empty_figure(str(e)), p.status: "", p.notices: box([str(e)]), p.answer: gr.skip()}
        status = (
            f"routing only · probe {r['timings']['probe_s'] * 1e3:.0f} ms · press Generate to answer with this mixture"
        )
        answer = self.answer_label(prompt, answered, *values)
        return {
            p.chart: self.chart(r),
            p.status: status,
            p.notices: box(self.notes(r, 0)),
            p.routing: r,
            p.answer: answer,
        }

    def generate(self, visitor: str, prompt: str, *values):
        """Route, draw the chart at once, stream the answer; Stop ends it after the current token."""
        p, (route, gen) = self.page, self.split(values)
        t0, first, text = time.perf_counter(), None, ""
        try:
            stream = self.engine.stream(prompt, **route, **gen)
        except LoGoError as e:
            yield {p.notices: box([str(e)]), p.status: ""}
            return
        r, self.streams[visitor] = stream.routing.to_dict(), stream
        notices = box(self.notes(r, gen["max_new_tokens"]))
        yield {
            p.answer: gr.update(value="", label="Answer", elem_classes=["answer"]),
            p.chart: self.chart(r),
            p.status: "generating…",
            p.notices: notices,
            p.routing: r,
            p.answered: None,
            p.trace: gr.update(value=None, interactive=False),
        }
        try:
            for piece in stream:
                first, text = first or time.perf_counter() - t0, text + piece
                yield {p.answer: text}
        except LoGoError as e:  # a stuck decoder: say so and keep serving
            yield {p.notices: box([str(e)]), p.status: ""}
            return
        finally:  # Stop, or the page closed: end decoding instead of running on to max_new_tokens
            stream.close()
            self.streams.pop(visitor, None)
        g = stream.result
        trace = self.files.write("logo_trace.json", json.dumps(g.to_dict(), indent=1, ensure_ascii=False).encode())
        status = timing_line(g.timings, first, g.stopped)
        trace = gr.update(value=trace, interactive=True)
        yield {p.answer: g.text, p.status: status, p.trace: trace, p.answered: key(prompt, values)}

    def stop(self, visitor: str) -> None:
        if (stream := self.streams.get(visitor)) is not None:
            stream.close()

    def redraw(self, routing: dict | None, show_all: bool):
        return self.chart(routing, show_all) if routing else gr.skip()

    def explain(self, routing: dict | None) -> tuple:
        """The 'How LoGo chose' view of the current routing: six steps, every adapter, every probed site."""
        if not routing:
            return gr.skip(), gr.skip(), gr.skip()
        x = explain.explain(self.engine.router, Routing(**routing))
        sites = explain.per_site_markdown(x, TOP) if len(x.sites) > 1 else "*One probed site: see the table above.*"
        return explain.summary_markdown(x), explain.table_markdown(x, None if len(x.names) <= 2 * TOP else TOP), sites

    def export(self, routing: dict | None):
        """The current mixture as one PEFT adapter folder, zipped, as a private download."""
        if not routing or not (weights := acting(routing["weights"])):
            return gr.update(visible=False)
        with tempfile.TemporaryDirectory() as tmp:  # 0700 and never served
            folder = self.engine.export_adapter(weights, Path(tmp) / "logo_mixture")
            data = io.BytesIO()
            with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(folder.iterdir()):
                    z.write(f, f"logo_mixture/{f.name}")
        return gr.update(value=self.files.write("logo_mixture_peft.zip", data.getvalue()), visible=True)

    def compare(self, prompt: str, *values):
        """Base model, LoGo, Arrow, retrieval (`compare.PEERS`): answers as they stream, then each one's
        adapters and weights, time to first token and tokens/s."""
        route, gen = self.split(values)
        answers, details, stats = [""] * len(COMPARE), ["*waiting…*"] * len(COMPARE), {}
        yield (*answers, *details, plots.empty_figure("running…", height=200))
        for i, label in enumerate(COMPARE):
            for row in self.peers.rows(label, prompt, route, gen):
                answers[i] = row.text
                yield (*answers, *details, gr.skip())
            if row.timings:
                stats[label] = row.timings
            details[i] = compare_line(row)
            yield (*answers, *details, plots.latency_panels(stats, "Time to first token and decoding speed"))

    def sweep(self, prompt: str, cache: dict | None, normalize: bool, *values):
        """Heatmap of every adapter's signal at every block; the [L, N] matrix stays in the visitor's state."""
        route = self.split(values)[0]
        what = {f: route[f] for f in ("signal", "calibrated", "module", "probe_input")}
        try:
            blocks = list(self.engine.route_options(**route).blocks)
            if not cache or cache["key"] != key(prompt, what.values()):
                every_block = self.engine.router.layer_sweep(prompt, **{**route, "layer": None})
                cache = {"key": key(prompt, what.values()), "z": every_block.tolist(), **what}
        except LoGoError as e:
            return plots.empty_figure(str(e), height=400), cache
        title = (
            f"{'calibrated' if cache['calibrated'] else 'raw'} {cache['signal']} signal of every adapter at "
            "every block · outlined: the probed blocks"
        )
        every = list(range(self.engine.n_layers))
        fig = plots.heatmap(
            cache["z"],
            self.engine.adapters,
            every,
            self.descriptions,
            title=title,
            normalize_rows=bool(normalize),
            mark_row=blocks,
        )
        return fig, cache
