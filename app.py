"""LoGo demo: route a prompt over the adapter pool, see how it was chosen, answer with the mixture.

Run:
    python app.py                       # adapters.yaml, http://127.0.0.1:7860
    python app.py --config my_pool.yaml --host 0.0.0.0 --port 8080

UI only: the engine routes and generates, `logo_core.plots` draws, `logo_core.explain` explains,
`logo_core.hosting` deals with the host (ZeroGPU, private downloads); this file lays out the page and wires it.
"""

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA; elsewhere a no-op, or absent
    import spaces  # noqa: F401
except ImportError:
    pass

import argparse
import functools
import io
import json
import os
import re
import secrets
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import gradio as gr

from logo_core import explain, hosting, plots
from logo_core.engine import LoGoEngine
from logo_core.errors import LoGoError
from logo_core.hosting import ZERO_GPU, PrivateFiles, document_inputs, field_params, lenient, typed_endpoint
from logo_core.mixing import uniform
from logo_core.options import GENERATE_FIELDS, MAX_NEW_TOKENS, ROUTE_FIELDS, GenerateOptions, RouteOptions
from logo_core.registry import load_config, with_overrides
from logo_core.results import Routing

DOCS = Path(__file__).resolve().parent / "docs"
PAPER = "https://arxiv.org/abs/2511.07129"
TOP = 15  # bars drawn before "Show all"
QUEUE_SIZE = 32  # waiting requests; past it gradio answers "This application is currently busy. Please try again."
CONCURRENCY = 2  # requests of one event at a time (the model is shared and read-only, each mixture private)
# Generations at once over every event, counting those whose API client cancelled (their thread runs on):
# what bounds the server's memory and CPU whatever its visitors do.
HEAVY = threading.BoundedSemaphore(2 * CONCURRENCY)
FIELDS = ROUTE_FIELDS + GENERATE_FIELDS  # the settings controls, in this order in every callback
NUMERIC = ("k", "layer", "max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k", "seed")
ROUTE_OUT = ("chart", "status", "notices", "answer", "routing")
# The numbers always get a plain value back (theirs, or the last valid one): an update dict would make gradio
# rebuild the component for the session and drop `lenient`'s patch.
SETTINGS_OUT = (*ROUTE_OUT, "valid", "settings_notice", *NUMERIC)
GEN_OUT = ("answer", "chart", "status", "notices", "trace", "routing", "answered")
COMPARE = ("Base model", "LoGo", "Top-1 adapter", "Uniform mixture")
BLOCK0 = (
    "Block 0 routes every prompt alike: the last token's input there is the embedding of the chat template's "
    "last token, the same for every prompt, so no adapter's score depends on the prompt (calibrated, they all tie)."
)
STALE = "Answer (to an earlier prompt or settings: press Generate for this one)"
THEME = gr.themes.Soft(primary_hue="orange", font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"])
ASSETS = Path(__file__).resolve().parent / "assets"
LAUNCH = dict(theme=THEME, css_paths=[ASSETS / "app.css"], head_paths=[ASSETS / "app_head.html"])


# Callbacks that run the model (on ZeroGPU's GPU when there): a bad request becomes the library's message.
gpu = functools.partial(hosting.gpu, known=(LoGoError,), page=True)
api_gpu = functools.partial(hosting.gpu, known=(LoGoError,))
heavy = functools.partial(gpu, gate=HEAVY)


def plain(text: str) -> str:
    """Text shown in Markdown but never read as Markdown or HTML (ASCII punctuation escaped, one line)."""
    return re.sub(r"([!-/:-@\[-`{-~])", r"\\\1", " ".join(str(text).split()))


def box(notes: list[str]) -> dict:
    return gr.update(value="\n\n".join(f"⚠️ {plain(n)}" for n in notes), visible=bool(notes))


def out(names: tuple[str, ...], **given) -> tuple:
    """A callback's outputs in `names` order; what it does not give stays as it is."""
    return tuple(given.get(n, gr.skip()) for n in names)


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


class Callbacks:
    """The page's event handlers: call the engine, `plots` or `explain`, return. Testable without a browser.

    Args:
        engine: a loaded `LoGoEngine` (shared and read-only; every request's mixture is private).
        files: where downloads go.
    """

    def __init__(self, engine: LoGoEngine, files: PrivateFiles) -> None:
        self.engine, self.files = engine, files
        self.descriptions = {n: engine.pool.description(n) for n in engine.pool.names}
        self.families = {n: engine.pool.family(n) for n in engine.pool.names}
        self.streams = {}  # visitor id -> the GenerationStream that Stop closes

    def split(self, values) -> tuple[dict, dict]:
        """The controls' values as (routing, generation) settings; unticked *Sample* leaves the sampling
        controls out of the request (a greedy answer does not use them)."""
        s = dict(zip(FIELDS, values))
        if not s["do_sample"]:
            s |= dict.fromkeys(("temperature", "top_p", "top_k", "seed"))
        return {f: s[f] for f in ROUTE_FIELDS}, {f: s[f] for f in GENERATE_FIELDS}

    def chart(self, r: dict, show_all: bool = False):
        o = r["options"]
        return plots.signal_bars(
            r["scores"], r["selected"], r["weights"], self.descriptions, plots.signal_title(o),
            subtitle=plots.probe_subtitle(o), families=self.families, ties=r["ties"], top=None if show_all else TOP,
        )  # fmt: skip

    def notes(self, r: dict, max_new_tokens: int) -> list[str]:
        """The library's notices (a cut prompt, a tie), why block 0 cannot route, which part of a long prompt was cut."""
        notes = list(r["notices"]) + ([BLOCK0] if r["options"]["blocks"] == [0] else [])
        parts = explain.cut_parts(self.engine.router, r["prompt"], max_new_tokens) if r["notices"] else None
        return notes + ([explain.cut_note(parts)] if parts else [])

    def answer_label(self, prompt: str, answered: str | None, *values):
        """An answer made from another prompt or other settings says so (and says nothing more once they match)."""
        if answered is None:
            return gr.skip()
        stale = key(prompt, values) != answered
        return gr.update(label=STALE if stale else "Answer", elem_classes=["answer", "stale"] if stale else ["answer"])

    def settings(self, prompt: str, answered: str | None, valid: dict, *values) -> tuple:
        """A setting changed: check them all (a bad number goes back to its last valid value, beside the
        library's message with the range), then re-route the prompt, if there is one."""
        try:
            self.engine.route_options(**self.split(values)[0])
            sampling = dict(zip(FIELDS, values)) | {"do_sample": True}  # every number shown is checked
            self.engine.generate_options(**{f: sampling[f] for f in GENERATE_FIELDS})
        except LoGoError as e:
            return out(SETTINGS_OUT, settings_notice=box([f"{e} (back to the last valid value)"]), **valid)
        valid = dict(zip(FIELDS, values))
        routed = dict(zip(ROUTE_OUT, self.route(prompt, answered, *values))) if prompt.strip() else {}
        answer = routed.pop("answer", None) or self.answer_label(prompt, answered, *values)
        return out(SETTINGS_OUT, **routed, answer=answer, valid=valid, settings_notice=box([]), **valid)

    def route(self, prompt: str, answered: str | None, *values) -> tuple:
        """Route only: redraw the chart and the notes; an answer made with other settings says so."""
        try:
            r = self.engine.route(prompt, **self.split(values)[0]).to_dict()
        except LoGoError as e:
            return out(ROUTE_OUT, chart=plots.empty_figure(str(e)), status="", notices=box([str(e)]))
        status = (
            f"routing only · probe {r['timings']['probe_s'] * 1e3:.0f} ms · press Generate to answer with this mixture"
        )
        return out(
            ROUTE_OUT, chart=self.chart(r), status=status, notices=box(self.notes(r, 0)), routing=r,
            answer=self.answer_label(prompt, answered, *values),
        )  # fmt: skip

    def generate(self, visitor: str, prompt: str, *values):
        """Route, draw the chart at once, stream the answer; Stop ends it after the current token."""
        route, gen = self.split(values)
        t0, first, text = time.perf_counter(), None, ""
        try:
            stream = self.engine.stream(prompt, **route, **gen)
        except LoGoError as e:
            yield out(GEN_OUT, notices=box([str(e)]), status="")
            return
        r, self.streams[visitor] = stream.routing.to_dict(), stream
        yield out(
            GEN_OUT, answer=gr.update(value="", label="Answer", elem_classes=["answer"]), chart=self.chart(r),
            status="generating…", notices=box(self.notes(r, gen["max_new_tokens"])), routing=r, answered=None,
            trace=gr.update(value=None, interactive=False),
        )  # fmt: skip
        try:
            for piece in stream:
                first, text = first or time.perf_counter() - t0, text + piece
                yield out(GEN_OUT, answer=text)
        except LoGoError as e:  # a stuck decoder: say so and keep serving
            yield out(GEN_OUT, notices=box([str(e)]), status="")
            return
        finally:  # Stop, or the page closed: end decoding instead of running on to max_new_tokens
            stream.close()
            self.streams.pop(visitor, None)
        g = stream.result
        trace = self.files.write("logo_trace.json", json.dumps(g.to_dict(), indent=1, ensure_ascii=False).encode())
        yield out(
            GEN_OUT, answer=g.text, status=timing_line(g.timings, first, g.stopped),
            trace=gr.update(value=trace, interactive=True), answered=key(prompt, values),
        )  # fmt: skip

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
        if not routing or not routing["weights"]:
            return gr.update(visible=False)
        with tempfile.TemporaryDirectory() as tmp:  # 0700 and never served
            folder = self.engine.export_adapter(routing["weights"], Path(tmp) / "logo_mixture")
            data = io.BytesIO()
            with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(folder.iterdir()):
                    z.write(f, f"logo_mixture/{f.name}")
        return gr.update(value=self.files.write("logo_mixture_peft.zip", data.getvalue()), visible=True)

    def compare(self, prompt: str, *values):
        """Base model, LoGo, its top-1 adapter alone, the uniform mixture: answers, time to first token, tokens/s."""
        route, gen = self.split(values)
        answers, details, stats = [""] * 4, ["*waiting…*"] * 4, {}
        yield (*answers, *details, plots.empty_figure("running…", height=200))
        mixtures = [{}, None, None, uniform(self.engine.adapters)]
        for i, label in enumerate(COMPARE):
            t0, first = time.perf_counter(), None
            stream = self.engine.stream(prompt, adapters=mixtures[i], **(route if i == 1 else {}), **gen)
            for piece in stream:
                first, answers[i] = first or time.perf_counter() - t0, answers[i] + piece
            g = stream.result
            if label == "LoGo":  # the next row answers with its best adapter alone
                mixtures[2] = {g.routing.selected[0]: 1.0}
            stats[label] = {"first_token_s": first or g.timings["total_s"], "tokens_per_s": g.timings["tokens_per_s"]}
            details[i] = (
                f"first token **{stats[label]['first_token_s']:.2f} s** · {g.timings['tokens_per_s']:.1f} tokens/s · "
                f"{plain(mixture_text(g.routing.weights))}"
            )
            yield (*answers, *details, plots.latency_panels(stats, "Time to first token and decoding speed"))

    def sweep(self, prompt: str, cache: dict | None, normalize: bool, *values):
        """Heatmap of every adapter's signal at every block; the [L, N] matrix stays in the visitor's state."""
        route = self.split(values)[0]
        what = {f: route[f] for f in ("signal", "calibrated", "module", "probe_input")}
        try:
            blocks = list(self.engine.route_options(**route).blocks)
            if not cache or cache["key"] != key(prompt, what.values()):
                cache = {
                    "key": key(prompt, what.values()),
                    "z": self.engine.router.layer_sweep(prompt, **{**route, "layer": None}).tolist(),  # every block
                    **what,
                }
        except LoGoError as e:
            return plots.empty_figure(str(e), height=400), cache
        return plots.heatmap(
            cache["z"], self.engine.adapters, list(range(self.engine.n_layers)), self.descriptions,
            title=f"{'calibrated' if cache['calibrated'] else 'raw'} {cache['signal']} signal of every adapter at "
            "every block · outlined: the probed blocks", normalize_rows=bool(normalize), mark_row=blocks,
        ), cache  # fmt: skip


def add_api(demo: gr.Blocks, engine: LoGoEngine) -> None:
    """/route and /generate: typed parameters from the options models, each with its meaning, range and default
    (adapters.yaml's, the same the page starts from); a bad request is an error with the library's message."""
    n, L = len(engine.pool), engine.n_layers
    notes = {f: f" Omitted: adapters.yaml's {json.dumps(getattr(engine.defaults, f), default=list)}." for f in FIELDS}
    notes["k"] = f" Here 1-{n}." + notes["k"]
    notes["layer"] = f" Here 0..{L - 1} or -{L}..-1, e.g. 15:30 or 3,5." + notes["layer"]
    hints = {"layer": int | str | list[int], "module": str | list[str]}  # what a JSON client sends
    params = {"prompt": (str, "The user's message (the chat template is applied on the server).")}
    params |= field_params([RouteOptions, GenerateOptions], FIELDS, notes, hints)

    def route(prompt, **settings):
        return engine.route(prompt, **settings).to_dict()

    def generate(prompt, **settings):
        g = engine.generate(prompt, **settings)
        return g.text, g.to_dict()

    for call, fields, summary, returns, gate in (
        (route, ROUTE_FIELDS, "Route a prompt: every adapter's score, the chosen top-k and their weights.", dict, None),
        (
            generate,
            FIELDS,
            "Route a prompt and answer it with its mixture: the answer and its trace.",
            tuple[str, dict],
            HEAVY,
        ),
    ):
        chosen = {p: params[p] for p in ("prompt", *fields)}
        endpoint = api_gpu(typed_endpoint(call, call.__name__, summary, chosen, returns), gate=gate)
        dep = gr.api(endpoint, api_name=call.__name__)
        document_inputs(demo, dep, [d for _, d in chosen.values()])


def startup_notes(engine: LoGoEngine) -> list[str]:
    """Problems found at start-up that the visitor must see (adapters left out, an empty pool, unfit defaults)."""
    notes = list(engine.load_report.messages)
    try:
        engine.route_options()
    except LoGoError as e:
        notes.append(f"The routing defaults of adapters.yaml do not fit this pool: {e}")
    return notes


def example_groups(engine: LoGoEngine, unseen=()) -> dict[str, list[tuple[str, str]]]:
    """Example prompts by family: each adapter's first example, then prompts of tasks without an adapter."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for spec in engine.pool.specs:
        if spec.examples:
            groups.setdefault(spec.family or "pool", []).append((spec.name, spec.examples[0]))
    for ex in unseen:
        groups.setdefault(ex.family or "held-out families", []).append((f"unseen · {ex.task}", ex.prompt))
    return groups


def start_values(engine: LoGoEngine) -> dict:
    """The settings the page starts from: adapters.yaml's defaults as the engine resolves them (what /route
    uses for an omitted setting), in the controls' form; unfit defaults as they are (a start-up note says why)."""
    try:
        start = engine.route_options()
    except LoGoError:
        start = engine.defaults
    init = {f: getattr(start if f in ROUTE_FIELDS else engine.defaults, f) for f in FIELDS}
    return init | {"layer": start.layer_text, "module": list(start.module)}


def create_demo(engine: LoGoEngine, unseen_examples=()) -> gr.Blocks:
    """Build the LoGo page around a loaded engine; it starts from adapters.yaml's defaults exactly.

    Args:
        engine: a loaded `LoGoEngine` (any pool: the shipped one, or a test's).
        unseen_examples: adapters.yaml's `unseen_examples` (prompts of tasks without an adapter).

    Example:
        >>> create_demo(LoGoEngine.from_config("adapters.yaml")).launch(**LAUNCH)
    """
    cb, n, L = Callbacks(engine, PrivateFiles()), len(engine.pool), engine.n_layers
    init = start_values(engine)

    def info(f: str, extra: str = "", step: int | None = None) -> str:
        model = RouteOptions if f in ROUTE_FIELDS else GenerateOptions
        return f"{model.help(f)}{extra}" + (f" (How LoGo chose: step {step})" if step else "")

    def choices(f: str) -> list:
        return RouteOptions.model_fields[f].json_schema_extra["choices"]

    with gr.Blocks(title="LoGo · instance-level LoRA routing") as demo:
        gr.Markdown(
            f"# LoGo · LoRA on the Go\nOne probe pass of {plain(engine.provenance.get('model_name', ''))} ({L} "
            f"blocks) scores **{n} LoRA adapters** for your prompt; the top-k are merged on the fly. [Paper]({PAPER})"
        )
        notes = startup_notes(engine)
        gr.Markdown("\n\n".join(f"⚠️ {plain(m)}" for m in notes), visible=bool(notes), elem_classes="logo-warning")
        visitor = gr.State()  # this page's id: Stop closes this visitor's answer only
        routing, answered, valid, sweep_cache = gr.State(None), gr.State(None), gr.State(init), gr.State(None)
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                prompt = gr.Textbox(
                    label="Prompt (Enter: answer · Shift+Enter: new line)", lines=1, max_lines=12, autofocus=True,
                    placeholder="Ask something, or pick an example", elem_id="prompt",
                )  # fmt: skip
                with gr.Row():
                    gen_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", min_width=90)
                    route_btn = gr.Button("Route only", elem_id="route-btn", min_width=90)
                    stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn", min_width=90)
                answer = gr.Textbox(
                    label="Answer", lines=6, max_lines=24, interactive=False, buttons=["copy"], elem_id="answer",
                    elem_classes=["answer"],
                )  # fmt: skip
                status = gr.Markdown(elem_classes="logo-timings", elem_id="status")
                notices = gr.Markdown(visible=False, elem_classes="logo-notice", elem_id="notices", latex_delimiters=[])
                with gr.Row():
                    trace = gr.DownloadButton("Download trace (JSON)", interactive=False, size="sm", elem_id="trace")
                    export_btn = gr.Button("Export mixture (PEFT adapter)", size="sm", elem_id="export-btn")
                adapter_file = gr.File(label="This mixture as a PEFT adapter", visible=False, elem_id="adapter-file")
                with gr.Accordion("Examples", open=False), gr.Tabs():
                    examples = []
                    for family, items in example_groups(engine, unseen_examples).items():
                        with gr.Tab(family):
                            rows, labels = [[p] for _, p in items], [label for label, _ in items]
                            examples.append(gr.Examples(rows, [prompt], example_labels=labels, examples_per_page=20))
            with gr.Column(scale=6, min_width=320):
                placeholder = plots.empty_figure("Type a prompt and press Enter, Generate or Route only.")
                chart = gr.Plot(placeholder, show_label=False, elem_id="signal-plot")
                show_all = gr.Checkbox(False, label=f"Show all {n} adapters", visible=n > TOP, elem_id="show-all")
        with gr.Accordion("Routing settings", open=True):
            with gr.Row():
                k = lenient(gr.Slider(
                    1, max(n, 2), value=init["k"], step=1, label="k · adapters merged", info=info("k", f" Here 1-{n}.", 4),
                    interactive=n > 1, elem_id="k-slider",
                ))  # fmt: skip
                signal = gr.Radio(choices("signal"), value=init["signal"], label="Signal", info=info("signal", step=2))
                calibrated = gr.Checkbox(init["calibrated"], label="Calibrated", info=info("calibrated", step=3))
                probe_input = gr.Radio(
                    choices("probe_input"),
                    value=init["probe_input"],
                    label="Probe input",
                    info=info("probe_input", step=1),
                )
            with gr.Row():
                layer = gr.Textbox(
                    init["layer"], label="Probe block(s)", max_lines=1, elem_id="layer",
                    info=info("layer", f" Here 0..{L - 1} or -{L}..-1, e.g. 15:30 or 3,5.", 1),
                )  # fmt: skip
                block = lenient(
                    gr.Slider(0, L - 1, value=L - 1, step=1, label="…or pick one block", elem_id="block-slider")
                )
                module = gr.Dropdown(
                    list(engine.pool.modules) or init["module"], value=init["module"], multiselect=True,
                    label="Probe module(s)", info=info("module", step=2), elem_id="module",
                )  # fmt: skip
            gr.Markdown(
                "What each setting changes, in *How LoGo chose*: [probe block and input: step 1](#how-1) · "
                "[module and signal: step 2](#how-2) · [calibrated: step 3](#how-3) · [k: step 4](#how-4)"
            )
            settings_notice = gr.Markdown(visible=False, elem_classes="logo-notice", elem_id="settings-notice")
        with gr.Accordion("Advanced: answer length and sampling", open=False):
            with gr.Row():
                max_new = lenient(gr.Slider(1, MAX_NEW_TOKENS, value=init["max_new_tokens"], step=1, label="Max new tokens",
                                            info=info("max_new_tokens"), elem_id="max-new"))  # fmt: skip
                min_new = gr.Number(
                    init["min_new_tokens"], precision=0, label="Min new tokens", info=info("min_new_tokens"),
                    elem_id="min-new",
                )  # fmt: skip
                do_sample = gr.Checkbox(init["do_sample"], label="Sample", info=info("do_sample"), elem_id="do-sample")
            with gr.Row():
                temperature = gr.Number(init["temperature"], label="Temperature", info=info("temperature"))
                top_p = gr.Number(init["top_p"], label="Top-p", info=info("top_p"))
                top_k = gr.Number(init["top_k"], precision=0, label="Top-k tokens", info=info("top_k"))
                seed = gr.Number(init["seed"], precision=0, label="Seed", info=info("seed"), elem_id="seed")
        with gr.Tabs():
            with gr.Tab("How LoGo chose", id="how"):
                how = [gr.Markdown("Route a prompt to see how its adapters were chosen.", elem_id="how-summary")]
                with gr.Accordion("Every adapter's numbers", open=True):
                    how.append(gr.Markdown(elem_id="how-table"))
                with gr.Accordion("At each probed block", open=False):
                    how.append(gr.Markdown(elem_id="how-sites"))
                with gr.Accordion("Glossary", open=True):
                    gr.Markdown((DOCS / "glossary.md").read_text(encoding="utf-8"), elem_id="glossary")
            with gr.Tab("Compare", id="compare"):
                compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
                with gr.Row(equal_height=True):
                    compared = [
                        gr.Textbox(label=c, lines=5, interactive=False, elem_classes=["answer"]) for c in COMPARE
                    ]
                with gr.Row():
                    compare_notes = [gr.Markdown(elem_classes="logo-timings") for _ in COMPARE]
                latency = gr.Plot(show_label=False, elem_id="latency-plot")
            with gr.Tab("Layer sweep", id="sweep") as sweep_tab:
                with gr.Row():
                    sweep_btn = gr.Button("Sweep", variant="primary", scale=0, min_width=120)
                    normalize = gr.Checkbox(True, label="Scale each block to its best adapter")
                sweep_plot = gr.Plot(show_label=False, elem_id="sweep-plot")
            with gr.Tab("About", id="about"):
                math = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
                gr.Markdown((DOCS / "about.md").read_text(encoding="utf-8"), latex_delimiters=math)

        # ------------------------------------------------------------------ wiring
        controls = [k, signal, calibrated, layer, module, probe_input, max_new, min_new, do_sample, temperature, top_p,
                    top_k, seed]  # fmt: skip
        parts = dict(zip(FIELDS, controls)) | dict(
            chart=chart, status=status, notices=notices, answer=answer, routing=routing, valid=valid, trace=trace,
            settings_notice=settings_notice, answered=answered,
        )  # fmt: skip
        route_out, gen_out = [parts[p] for p in ROUTE_OUT], [parts[p] for p in GEN_OUT]
        settings_out = [parts[p] for p in SETTINGS_OUT]
        quiet = dict(show_progress="hidden", trigger_mode="always_last")

        def ui(name: str) -> dict:  # the page's own events: private, not in the way of the /route, /generate API
            return dict(api_name=f"ui_{name}", api_visibility="private")

        def then_explain(event) -> None:  # every new routing refreshes "How LoGo chose"
            event.then(gpu(cb.explain), routing, how, **quiet, **ui(f"explain_{len(demo.fns)}"))

        typed = [e for c in (layer, min_new, temperature, top_p, top_k, seed) for e in (c.submit, c.blur)]
        picked = [c.input for c in (k, signal, calibrated, module, probe_input, max_new, do_sample)]
        on_settings = dict(fn=gpu(cb.settings), inputs=[prompt, answered, valid, *controls], outputs=settings_out)
        then_explain(gr.on(picked + typed, **on_settings, **quiet, **ui("settings")))
        block_set = block.input(lambda b: str(int(b)), block, layer, **quiet, **ui("block"))
        then_explain(block_set.then(**on_settings, **quiet, **ui("block_settings")))
        prompt.change(cb.answer_label, [prompt, answered, *controls], answer, queue=False, **quiet, **ui("mark"))
        route_only = dict(fn=gpu(cb.route), inputs=[prompt, answered, *controls], outputs=route_out)
        then_explain(route_btn.click(**route_only, trigger_mode="always_last", **ui("route")))
        for i, ex in enumerate(examples):  # an example routes at once
            then_explain(ex.load_input_event.then(**route_only, trigger_mode="always_last", **ui(f"example_{i}")))
        generating = gr.on(
            [gen_btn.click, prompt.submit], heavy(cb.generate), [visitor, prompt, *controls], gen_out, **ui("generate")
        )
        then_explain(generating)
        # Stop closes this visitor's stream: decoding ends after the current token and the answer says how many
        # it got. On ZeroGPU the stream lives in a GPU worker process, so Stop cancels the event there.
        stop_btn.click(cb.stop, visitor, None, queue=False, cancels=[generating] if ZERO_GPU else None, **ui("stop"))
        show_all.input(cb.redraw, [routing, show_all], chart, **quiet, **ui("show_all"))
        export_btn.click(gpu(cb.export), routing, adapter_file, **ui("export"))
        compare_out = [*compared, *compare_notes, latency]
        compare_btn.click(heavy(cb.compare), [prompt, *controls], compare_out, concurrency_limit=1, **ui("compare"))
        sweep_in, sweep_out = [prompt, sweep_cache, normalize, *controls], [sweep_plot, sweep_cache]
        gr.on([sweep_btn.click, sweep_tab.select, normalize.input], heavy(cb.sweep), sweep_in, sweep_out, **ui("sweep"))
        demo.load(lambda: secrets.token_hex(8), None, visitor, **ui("visitor"))
        add_api(demo, engine)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=CONCURRENCY)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_port = os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT")  # PORT: Space micros
    p = argparse.ArgumentParser(description="LoGo demo app (gradio).")
    p.add_argument("--config", default="adapters.yaml", help="adapter pool file (default: adapters.yaml)")
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    p.add_argument("--host", default=host, help="interface to serve on (env GRADIO_SERVER_NAME; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(env_port or 7860), help="port (env GRADIO_SERVER_PORT or PORT)")
    p.add_argument("--dtype", default=None, help="override base_model.dtype (auto, fp32, bf16, fp16, int8, ...)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    hosting.bound_malloc()  # before gradio starts its worker threads
    try:  # the model loads once, here, placed by the library (device auto); the probe cache makes re-routing cheap
        cfg = load_config(args.config)
        probe_cache = {"probe_cache_mb": cfg.engine.probe_cache_mb or 32}
        cfg = with_overrides(cfg, base_model={"dtype": args.dtype}, engine=probe_cache)
        engine = LoGoEngine.from_pool_config(cfg)
    except LoGoError as e:  # no model or no readable pool file: nothing to serve
        raise SystemExit(f"app.py: {e}") from None
    demo = create_demo(engine, cfg.unseen_examples)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True, **LAUNCH)


if __name__ == "__main__":
    main()
