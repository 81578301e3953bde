"""LoGo demo: route a prompt over the adapter pool, see how it was chosen, answer with the mixture.

Run:
    python app.py                       # adapters.yaml, http://127.0.0.1:7860
    python app.py --config my_pool.yaml --host 0.0.0.0 --port 8080

UI only: the engine routes and generates, `logo_core.plots` draws, `logo_core.explain` explains,
`logo_core.hosting` deals with the host (ZeroGPU, private downloads), `logo_core.api` serves /route and
/generate, `logo_core.callbacks` handles the page's events. This file lays out the page (`layout` -> `Page`)
and wires each event to its callback.
"""

try:  # ZeroGPU: `spaces` must be imported before anything touches CUDA; elsewhere a no-op, or absent
    import spaces  # noqa: F401
except ImportError:
    pass

import argparse
import functools
import os
import secrets
import threading
from pathlib import Path

import gradio as gr

from logo_core import hosting, plots
from logo_core.api import add_api
from logo_core.callbacks import COMPARE, FIELDS, TOP, Callbacks, Page, plain
from logo_core.engine import LoGoEngine
from logo_core.errors import LoGoError
from logo_core.hosting import ZERO_GPU, PrivateFiles, lenient
from logo_core.options import MAX_NEW_TOKENS, PRESET_FIELDS, ROUTE_FIELDS, GenerateOptions, RouteOptions
from logo_core.registry import load_config, with_overrides

DOCS = Path(__file__).resolve().parent / "docs"
PAPER = "https://arxiv.org/abs/2511.07129"
QUEUE_SIZE = 32  # waiting requests; past it gradio answers "This application is currently busy. Please try again."
CONCURRENCY = 2  # requests of one event at a time (the model is shared and read-only, each mixture private)
# Generations at once over every event, counting those whose API client cancelled (their thread runs on):
# what bounds the server's memory and CPU whatever its visitors do.
HEAVY = threading.BoundedSemaphore(2 * CONCURRENCY)
THEME = gr.themes.Soft(primary_hue="orange", font=["ui-sans-serif", "system-ui", "Segoe UI", "Roboto", "sans-serif"])
ASSETS = Path(__file__).resolve().parent / "assets"
LAUNCH = dict(theme=THEME, css_paths=[ASSETS / "app.css"], head_paths=[ASSETS / "app_head.html"])

# Callbacks that run the model (on ZeroGPU's GPU when there): a bad request becomes the library's message.
gpu = functools.partial(hosting.gpu, known=(LoGoError,), page=True)
heavy = functools.partial(gpu, gate=HEAVY)


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
    texts = {
        "layer": start.layer_text,
        "abstain_module": start.abstain_module_text,
        "token_layer": start.token_layer_text,
    }
    return init | texts | {"module": list(start.module)}


def info(f: str, extra: str = "", step: int | None = None) -> str:
    """A control's help: the option's description (options.py), `extra`, the step of *How LoGo chose* it changes."""
    model = RouteOptions if f in ROUTE_FIELDS else GenerateOptions
    return f"{model.help(f)}{extra}" + (f" (How LoGo chose: step {step})" if step else "")


def choices(f: str) -> list:
    return RouteOptions.model_fields[f].json_schema_extra["choices"]


def layout(engine: LoGoEngine, unseen_examples=()) -> Page:
    """The page's components, inside the current `gr.Blocks`: prompt and answer beside the chart, the
    settings, then the tabs (How LoGo chose, Compare, Layer sweep, About)."""
    n, L, init = len(engine.pool), engine.n_layers, start_values(engine)
    p = Page()
    p.visitor, p.routing, p.answered, p.valid = gr.State(), gr.State(None), gr.State(None), gr.State(init)
    p.sweep_cache, c = gr.State(None), {}
    gr.Markdown(
        f"# LoGo · LoRA on the Go\nOne probe pass of {plain(engine.provenance.get('model_name', ''))} ({L} "
        f"blocks) scores **{n} LoRA adapters** for your prompt; the top-k are merged on the fly. [Paper]({PAPER})"
    )
    notes = startup_notes(engine)
    gr.Markdown("\n\n".join(f"⚠️ {plain(m)}" for m in notes), visible=bool(notes), elem_classes="logo-warning")
    with gr.Row(equal_height=False):
        with gr.Column(scale=5, min_width=320):
            p.prompt = gr.Textbox(
                label="Prompt (Enter: answer · Shift+Enter: new line)",
                lines=1,
                max_lines=12,
                autofocus=True,
                placeholder="Ask something, or pick an example",
                elem_id="prompt",
            )
            with gr.Row():
                p.generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn", min_width=90)
                p.route_btn = gr.Button("Route only", elem_id="route-btn", min_width=90)
                p.stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn", min_width=90)
            p.answer = gr.Textbox(
                label="Answer",
                lines=6,
                max_lines=24,
                interactive=False,
                buttons=["copy"],
                elem_id="answer",
                elem_classes=["answer"],
            )
            p.status = gr.Markdown(elem_classes="logo-timings", elem_id="status")
            p.notices = gr.Markdown(visible=False, elem_classes="logo-notice", elem_id="notices", latex_delimiters=[])
            with gr.Row():
                p.trace = gr.DownloadButton("Download trace (JSON)", interactive=False, size="sm", elem_id="trace")
                p.export_btn = gr.Button("Export mixture (PEFT adapter)", size="sm", elem_id="export-btn")
            p.adapter_file = gr.File(label="This mixture as a PEFT adapter", visible=False, elem_id="adapter-file")
            with gr.Accordion("Examples", open=False), gr.Tabs():
                p.examples = []
                for family, items in example_groups(engine, unseen_examples).items():
                    with gr.Tab(family):
                        rows, labels = [[p] for _, p in items], [label for label, _ in items]
                        p.examples.append(gr.Examples(rows, [p.prompt], example_labels=labels, examples_per_page=20))
        with gr.Column(scale=6, min_width=320):
            placeholder = plots.empty_figure("Type a prompt and press Enter, Generate or Route only.")
            p.chart = gr.Plot(placeholder, show_label=False, elem_id="signal-plot")
            p.show_all = gr.Checkbox(False, label=f"Show all {n} adapters", visible=n > TOP, elem_id="show-all")
    with gr.Accordion("Routing settings", open=True):
        with gr.Row():
            c["k"] = lenient(
                1,
                max(n, 2),
                value=init["k"],
                step=1,
                label="k · adapters merged",
                info=info("k", f" Here 1-{n}.", 4),
                interactive=n > 1,
                elem_id="k-slider",
            )
            c["signal"] = gr.Radio(choices("signal"), value=init["signal"], label="Signal", info=info("signal", step=2))
            c["calibrated"] = gr.Checkbox(init["calibrated"], label="Calibrated", info=info("calibrated", step=3))
            c["probe_input"] = gr.Radio(
                choices("probe_input"), value=init["probe_input"], label="Probe input", info=info("probe_input", step=1)
            )
        with gr.Row():
            radios = (("calibration", "Calibration", 3), ("pooling", "Pooling", 1), ("weighting", "Weighting", 5))
            for f, label, step in radios:
                c[f] = gr.Radio(choices(f), value=init[f], label=label, info=info(f, step=step), elem_id=f)
            c["decorrelate"] = gr.Slider(
                0,
                1,
                value=init["decorrelate"],
                step=0.05,
                label="Decorrelate",
                info=info("decorrelate", step=3),
                elem_id="decorrelate",
            )
            c["token_weight"] = gr.Slider(
                0,
                3,
                value=init["token_weight"],
                step=0.05,
                label="Token evidence",
                info=info("token_weight", step=3),
                elem_id="token-weight",
            )
            c["token_layer"] = gr.Textbox(
                init["token_layer"],
                label="Token evidence block(s)",
                max_lines=1,
                elem_id="token-layer",
                info=info("token_layer", f" Here 0..{L - 1}, e.g. 0:10. Empty: the default.", 3),
            )
            c["token_pooling"] = gr.Radio(
                choices("token_pooling"),
                value=init["token_pooling"],
                label="Token evidence pooling",
                info=info("token_pooling", step=3),
                elem_id="token-pooling",
            )
            c["abstain_below"] = gr.Number(
                init["abstain_below"],
                label="Abstain below",
                info=info("abstain_below", " Empty: adapters.yaml's default; -100: always route.", 4),
                elem_id="abstain",
            )
            c["abstain_min_tokens"] = gr.Number(
                init["abstain_min_tokens"],
                label="Abstain under (tokens)",
                info=info("abstain_min_tokens", " Empty: adapters.yaml's default; 0: never.", 4),
                precision=0,
                elem_id="abstain-tokens",
            )
            c["abstain_signal"] = gr.Radio(
                choices("abstain_signal"),
                value=init["abstain_signal"],
                label="Abstain on",
                info=info("abstain_signal", step=4),
                elem_id="abstain-signal",
            )
            modules = list(engine.pool.modules)
            gate_modules = list(dict.fromkeys(["same", ",".join(modules), *modules, init["abstain_module"]]))
            c["abstain_module"] = gr.Radio(
                gate_modules,
                value=init["abstain_module"],
                label="Abstain on modules",
                info=info("abstain_module", step=4),
                elem_id="abstain-module",
            )
            c["abstain_layer"] = gr.Number(
                init["abstain_layer"],
                label="Abstain block (nearest)",
                info=info("abstain_layer", f" Here 0..{engine.n_layers - 1} or -{engine.n_layers}..-1.", 4),
                precision=0,
                elem_id="abstain-layer",
            )
            p.presets = gr.Dropdown(
                ["paper", "neutral", "adapters.yaml"],
                value=None,
                label="Load a preset into these controls",
                elem_id="preset",
            )
            c["preset"] = gr.State(None)  # the controls always say every setting: a preset only fills them
        with gr.Row():
            c["layer"] = gr.Textbox(
                init["layer"],
                label="Probe block(s)",
                max_lines=1,
                elem_id="layer",
                info=info("layer", f" Here 0..{L - 1} or -{L}..-1, e.g. 15:30 or 3,5.", 1),
            )
            p.block = lenient(0, L - 1, value=L - 1, step=1, label="…or pick one block", elem_id="block-slider")
            c["module"] = gr.Dropdown(
                list(engine.pool.modules) or init["module"],
                value=init["module"],
                multiselect=True,
                label="Probe module(s)",
                info=info("module", step=2),
                elem_id="module",
            )
        gr.Markdown(
            "What each setting changes, in *How LoGo chose*: [probe block and input: step 1](#how-1) · "
            "[module and signal: step 2](#how-2) · [calibrated: step 3](#how-3) · [k: step 4](#how-4) · "
            "[weighting: step 5](#how-5)"
        )
        p.settings_notice = gr.Markdown(visible=False, elem_classes="logo-notice", elem_id="settings-notice")
    with gr.Accordion("Advanced: answer length and sampling", open=False):
        with gr.Row():
            c["max_new_tokens"] = lenient(
                1,
                MAX_NEW_TOKENS,
                value=init["max_new_tokens"],
                step=1,
                label="Max new tokens",
                info=info("max_new_tokens"),
                elem_id="max-new",
            )
            c["min_new_tokens"] = gr.Number(
                init["min_new_tokens"],
                precision=0,
                label="Min new tokens",
                info=info("min_new_tokens"),
                elem_id="min-new",
            )
            c["do_sample"] = gr.Checkbox(init["do_sample"], label="Sample", info=info("do_sample"), elem_id="do-sample")
        with gr.Row():
            c["temperature"] = gr.Number(init["temperature"], label="Temperature", info=info("temperature"))
            c["top_p"] = gr.Number(init["top_p"], label="Top-p", info=info("top_p"))
            c["top_k"] = gr.Number(init["top_k"], precision=0, label="Top-k tokens", info=info("top_k"))
            c["seed"] = gr.Number(init["seed"], precision=0, label="Seed", info=info("seed"), elem_id="seed")
    with gr.Tabs():
        with gr.Tab("How LoGo chose", id="how"):
            p.how = [gr.Markdown("Route a prompt to see how its adapters were chosen.", elem_id="how-summary")]
            with gr.Accordion("Every adapter's numbers", open=True):
                p.how.append(gr.Markdown(elem_id="how-table"))
            with gr.Accordion("At each probed block", open=False):
                p.how.append(gr.Markdown(elem_id="how-sites"))
            with gr.Accordion("Glossary", open=True):
                gr.Markdown((DOCS / "glossary.md").read_text(encoding="utf-8"), elem_id="glossary")
        with gr.Tab("Compare", id="compare"):
            p.compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")
            with gr.Row(equal_height=True):
                p.compared = [gr.Textbox(label=x, lines=5, interactive=False, elem_classes=["answer"]) for x in COMPARE]
            with gr.Row():
                p.compared += [gr.Markdown(elem_classes="logo-timings") for _ in COMPARE]
            p.compared.append(gr.Plot(show_label=False, elem_id="latency-plot"))
        with gr.Tab("Layer sweep", id="sweep") as p.sweep_tab:
            with gr.Row():
                p.sweep_btn = gr.Button("Sweep", variant="primary", scale=0, min_width=120)
                p.normalize = gr.Checkbox(True, label="Scale each block to its best adapter")
            p.sweep_plot = gr.Plot(show_label=False, elem_id="sweep-plot")
        with gr.Tab("About", id="about"):
            math = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
            gr.Markdown((DOCS / "about.md").read_text(encoding="utf-8"), latex_delimiters=math)
    p.controls = {f: c[f] for f in FIELDS}  # in the callbacks' order
    return p


def wire(p: Page, cb: Callbacks) -> None:
    """The page's events: each trigger, its callback, its inputs and outputs. Every new routing refreshes
    *How LoGo chose*. The events are private (`ui_*`): the public API is /route and /generate only."""
    quiet = dict(show_progress="hidden", trigger_mode="always_last")

    def ui(name: str) -> dict:  # gradio numbers repeated names (ui_explain, ui_explain_1, ...)
        return dict(api_name=f"ui_{name}", api_visibility="private")

    def then_explain(event) -> None:
        event.then(gpu(cb.explain), p.routing, p.how, **quiet, **ui("explain"))

    c = p.controls
    typed = (
        "layer",
        "abstain_below",
        "abstain_min_tokens",
        "abstain_layer",
        "token_layer",
        "min_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
    )  # text boxes
    # A text box applies on Enter or on leaving it; every other control as soon as it changes. The preset is no
    # control (a State that the Preset radio fills), so it triggers nothing here.
    triggers = [e for f in typed for e in (c[f].submit, c[f].blur)]
    triggers += [c[f].input for f in FIELDS if f not in typed and f != "preset"]
    on_settings = dict(fn=gpu(cb.settings), inputs=[p.prompt, p.answered, p.valid, *p.settings], outputs=p.checked())
    then_explain(gr.on(triggers, **on_settings, **quiet, **ui("settings")))
    block_set = p.block.input(lambda x: str(int(x)), p.block, c["layer"], **quiet, **ui("block"))
    filled = [c[f] for f in PRESET_FIELDS]  # every setting a preset names (`cb.preset` returns them in this order)
    preset_set = p.presets.input(cb.preset, p.presets, filled, **quiet, **ui("preset"))
    then_explain(preset_set.then(**on_settings, **quiet, **ui("preset_settings")))
    then_explain(block_set.then(**on_settings, **quiet, **ui("block_settings")))
    p.prompt.change(cb.answer_label, [p.prompt, p.answered, *p.settings], p.answer, queue=False, **quiet, **ui("mark"))
    route_only = dict(fn=gpu(cb.route), inputs=[p.prompt, p.answered, *p.settings], outputs=p.routed())
    then_explain(p.route_btn.click(**route_only, trigger_mode="always_last", **ui("route")))
    for ex in p.examples:  # an example routes at once
        then_explain(ex.load_input_event.then(**route_only, trigger_mode="always_last", **ui("example")))
    inputs = [p.visitor, p.prompt, *p.settings]
    generating = gr.on(
        [p.generate_btn.click, p.prompt.submit], heavy(cb.generate), inputs, p.generated(), **ui("generate")
    )
    then_explain(generating)
    # Stop closes this visitor's stream: decoding ends after the current token and the answer says how many
    # it got. On ZeroGPU the stream lives in a GPU worker process, so Stop cancels the event there.
    p.stop_btn.click(cb.stop, p.visitor, None, queue=False, cancels=[generating] if ZERO_GPU else None, **ui("stop"))
    p.show_all.input(cb.redraw, [p.routing, p.show_all], p.chart, **quiet, **ui("show_all"))
    p.export_btn.click(gpu(cb.export), p.routing, p.adapter_file, **ui("export"))
    p.compare_btn.click(heavy(cb.compare), [p.prompt, *p.settings], p.compared, concurrency_limit=1, **ui("compare"))
    sweep_in, sweep_out = [p.prompt, p.sweep_cache, p.normalize, *p.settings], [p.sweep_plot, p.sweep_cache]
    redo = [p.sweep_btn.click, p.sweep_tab.select, p.normalize.input]
    gr.on(redo, heavy(cb.sweep), sweep_in, sweep_out, **ui("sweep"))


def create_demo(engine: LoGoEngine, unseen_examples=()) -> gr.Blocks:
    """Build the LoGo page around a loaded engine; it starts from adapters.yaml's defaults exactly.

    Args:
        engine: a loaded `LoGoEngine` (any pool: the shipped one, or a test's).
        unseen_examples: adapters.yaml's `unseen_examples` (prompts of tasks without an adapter).

    Example:
        >>> create_demo(LoGoEngine.from_config("adapters.yaml")).launch(**LAUNCH)
    """
    with gr.Blocks(title="LoGo · instance-level LoRA routing") as demo:
        page = layout(engine, unseen_examples)
        wire(page, Callbacks(engine, PrivateFiles(), page))
        demo.load(lambda: secrets.token_hex(8), None, page.visitor, api_name="ui_visitor", api_visibility="private")
        add_api(demo, engine, gate=HEAVY)
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
