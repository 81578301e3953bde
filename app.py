"""LoGo demo: route a prompt over the adapter pool, see every adapter's signal, answer with the mixture.

Run:
    python app.py                       # adapters.yaml, http://127.0.0.1:7860
    python app.py --config my_pool.yaml --host 0.0.0.0 --port 8080

UI only: the engine routes and generates, `logo_core.plots` draws, this file wires them together.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import gradio as gr

from logo_core import plots
from logo_core.engine import Generation, LoGoEngine, Routing, parse_layers
from logo_core.errors import LoGoError
from logo_core.registry import RoutingDefaults
from logo_core.tasks import TASKS

PAPER = "https://arxiv.org/abs/2511.07129"
MAX_NEW_TOKENS_UI = 256  # slider range; the engine itself caps at 1024
TRACE_DIR = Path(tempfile.gettempdir()) / "logo-app-traces"
TRACE_TTL_S = 3600  # exported trace files older than this are removed on the next export

THEME = gr.themes.Soft(
    primary_hue="orange",
    font=["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
    font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
)
CSS = """
.logo-warning { border-left: 4px solid #e4572e; background: #fff4ef; padding: 8px 14px; border-radius: 6px; }
.logo-notice { border-left: 4px solid #f2a541; background: #fff9ec; padding: 6px 14px; border-radius: 6px; }
.logo-timings { font-family: ui-monospace, Menlo, monospace; font-size: 0.9em; color: #4a5568; }
"""

ABOUT = r"""
### What LoGo does
**LoGo** (*LoRA on the Go*; Lee, Das, Gupta, Gummadi; ACL 2026; [arXiv
2511.07129](https://arxiv.org/abs/2511.07129)) picks and merges LoRA adapters **for each prompt**, with no training
and no labelled data. One forward pass of the clean base model (the *probe*) reads the hidden state $h$ of the last
prompt token at one block; every adapter's LoRA output on $h$ says how strongly that adapter "responds" to the
prompt. The $k$ strongest are merged, weighted by their signal, and the answer is generated with that mixture.

**Probe** (block $l$, module $m$, adapter $i$ with $A_i$, $B_i$, scale $s_i = \alpha_i / r_i$):
$$o_i = s_i\, B_i A_i\, h$$

**Signal**: `norm` $\sigma_i = \lVert o_i \rVert_2$, or `entropy`
$\sigma_i = 1 / \big(H(\mathrm{softmax}(o_i)) + 10^{-6}\big)$. *Calibrated* divides $\sigma_i$ by $c_i$, the mean
of the same signal over neutral, task-free prompts, so that loudly trained adapters do not win every prompt.

**Select and weigh**: $S$ = the $k$ largest $\sigma_i$, and
$$w_i = \frac{\sigma_i}{\sum_{j \in S} \sigma_j}, \qquad i \in S$$

**Generate**: every adapted linear layer computes
$$y = W x + \sum_{i \in S} w_i\, s_i\, B_i A_i\, x$$

### The views
- **Answer & routing**: the streamed answer; every adapter's signal (sorted, the chosen $k$ highlighted, the
  cut-off dashed) and the merge weights. Changing a control re-routes at once without regenerating.
- **Compare**: the same prompt answered by the base model, LoGo, the top-1 adapter alone and the uniform mixture
  of the whole pool, each with its latency.
- **Layer sweep**: every adapter's signal at every block, to see where in the network the routing decision forms.
"""


# ---------------------------------------------------------------------------------------------- helpers


def _field_help(name: str) -> str:
    """The adapters.yaml field description, reused as the control's info text (STYLE: config is the docs)."""
    return RoutingDefaults.model_fields[name].description or ""


def route_kwargs(k, signal, calibrated, layer, module, probe_input) -> dict:
    """UI control values -> `engine.route` keyword arguments (validation is the engine's job)."""
    modules = [module] if isinstance(module, str) else list(module or [])
    return dict(
        k=int(k),
        signal=signal,
        calibrated=bool(calibrated),
        layer=int(layer),
        module=modules or None,
        probe_input=probe_input,
    )


def timing_line(t: dict) -> str:
    """'probe 21 ms · generation 2.10 s · 64 tokens · 30.5 tokens/s · total 2.13 s'."""
    parts = [f"probe {t.get('probe_s', 0.0) * 1000:.0f} ms"]
    if "generate_s" in t:
        parts += [
            f"generation {t['generate_s']:.2f} s",
            f"{t.get('new_tokens', 0)} tokens",
            f"{t.get('tokens_per_s', 0.0):.1f} tokens/s",
            f"total {t.get('total_s', 0.0):.2f} s",
        ]
    return " · ".join(parts)


def mixture_text(g: Generation) -> str:
    """'capitals 54%, arithmetic 46%'; the base model and the uniform mixture in words."""
    w = g.routing.weights
    if not w:
        return "base model alone"
    if len(w) > 3 and max(w.values()) - min(w.values()) < 1e-9:
        return f"all {len(w)} adapters, {next(iter(w.values())):.0%} each"
    return ", ".join(f"{n} {x:.0%}" for n, x in w.items())


def notices_box(notices: list[str]) -> dict:
    """The notices (truncation, clamping, errors) as a visible box, hidden when there are none."""
    return gr.update(value="\n".join(f"⚠️ {n}" for n in notices), visible=bool(notices))


def write_trace(trace: dict) -> str:
    """Write a routing/generation trace to a JSON file for download; returns its path.

    Named by content, so re-routing the same prompt and settings reuses one file; old files are pruned.
    """
    text = json.dumps(trace, indent=2, ensure_ascii=False)
    TRACE_DIR.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in TRACE_DIR.glob("*/logo_trace.json"):
        if now - old.stat().st_mtime > TRACE_TTL_S:
            old.unlink(missing_ok=True)
    folder = TRACE_DIR / hashlib.sha1(text.encode()).hexdigest()[:16]
    folder.mkdir(exist_ok=True)
    path = folder / "logo_trace.json"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _short(text: str, n: int) -> str:
    """`text` on one line, cut to at most n characters at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1].rsplit(" ", 1)[0] + "…"


def example_prompts(engine: LoGoEngine) -> tuple[list[list[str]], list[str]]:
    """One example per pool adapter (its first example prompt) plus one per unseen task of the suite."""
    rows, labels = [], []
    for spec in engine.pool.specs:
        if spec.examples:
            rows.append([spec.examples[0]])
            labels.append(f"{spec.name}: {_short(spec.examples[0], 50)}")
    for task in TASKS.values():
        if task.unseen and task.name not in engine.adapters:
            prompt = task.example_prompts(1)[0]
            rows.append([prompt])
            labels.append(f"unseen · {task.name}: {_short(prompt, 44)}")
    return rows, labels


def startup_notes(engine: LoGoEngine) -> list[str]:
    """Problems found at start-up that the user must see (adapters left out, an empty pool)."""
    notes = list(engine.load_report.messages)
    if not engine.adapters:
        notes.append("The adapter pool is empty: add adapters to adapters.yaml (routing and generation are disabled).")
    else:
        try:
            engine.options()  # the defaults of adapters.yaml, checked against the pool that loaded
        except LoGoError as e:
            notes.append(f"The routing defaults of adapters.yaml do not fit this pool: {e}")
    return notes


# ---------------------------------------------------------------------------------------------- callbacks


class Callbacks:
    """The app's event handlers: call the engine, call `plots`, return. Testable without a browser.

    Args:
        engine: a loaded `LoGoEngine` (shared, read-only; every request's mixture is private).
    """

    def __init__(self, engine: LoGoEngine) -> None:
        self.engine = engine
        self.descriptions = {n: engine.pool.description(n) for n in engine.adapters}

    # -------------------------------------------------------------- answer & routing tab

    def _routing_outputs(self, r: Routing, notices: list[str], timings: str, trace: dict) -> tuple:
        """(signal chart, weights chart, notices box, timings line, download of `trace`) of one routing."""
        calibrated = " (calibrated)" if r.options["calibrated"] else ""
        return (
            plots.signal_bars(
                r.scores,
                r.selected,
                r.weights,
                self.descriptions,
                title=f"{r.options['signal']} signal at {plots.blocks_label(r.options['layers'])}{calibrated}",
            ),
            plots.weight_bars(r.weights, self.descriptions, title=f"Merge weights of the top-{len(r.selected)}"),
            notices_box(notices),
            timings,
            gr.update(value=write_trace(trace), interactive=True),
        )

    def _failed(self, message: str) -> tuple:
        return (
            plots.empty_figure(message),
            plots.empty_figure("", height=120),
            notices_box([message]),
            "",
            gr.update(value=None, interactive=False),
        )

    def route(self, prompt: str, *controls) -> tuple:
        """Re-route the current prompt (a control changed): redraw the charts, leave the answer alone."""
        try:
            r = self.engine.route(prompt, **route_kwargs(*controls))
        except LoGoError as e:
            return self._failed(str(e))
        line = timing_line(r.timings) + " · routing only: press Generate to answer with this mixture"
        return self._routing_outputs(r, r.notices, line, r.to_dict())

    def generate(self, prompt: str, *controls_and_length):
        """Route, draw the charts at once, then stream the answer token by token."""
        *controls, max_new_tokens = controls_and_length
        try:
            stream = self.engine.stream(prompt, max_new_tokens=int(max_new_tokens), **route_kwargs(*controls))
        except LoGoError as e:
            raise gr.Error(str(e)) from None
        r = stream.routing
        head = self._routing_outputs(r, r.notices, timing_line(r.timings) + " · generating…", r.to_dict())
        yield ("", *head)  # the charts (and the routing trace to download) before the first token
        text = ""
        try:
            for piece in stream:
                text += piece
                yield (text, *[gr.skip()] * 5)
        finally:  # Stop pressed or the page closed: end decoding instead of running to max_new_tokens
            stream.close()
        g: Generation = stream.result
        yield (
            g.text,
            gr.skip(),
            gr.skip(),
            notices_box(g.notices),
            timing_line(g.timings),
            gr.update(value=write_trace(g.to_dict()), interactive=True),
        )

    def generate_if(self, enabled: bool, prompt: str, *controls_and_length):
        """`generate`, only when 'regenerate on change' is ticked (otherwise nothing changes)."""
        if not enabled:
            yield (gr.skip(),) * 6
            return
        yield from self.generate(prompt, *controls_and_length)

    # -------------------------------------------------------------- compare tab

    def compare(self, prompt: str, *controls_and_length):
        """Answer with the base model, LoGo, the top-1 adapter alone and the uniform mixture, one after another."""
        *controls, max_new_tokens = controls_and_length
        n_tok = int(max_new_tokens)
        answers, details, seconds = [""] * 4, ["*waiting…*"] * 4, {}
        labels = ["Base model", "LoGo", "Top-1 adapter", "Uniform mixture"]

        def run(i: int, **kwargs) -> Generation:
            g = self.engine.generate(prompt, max_new_tokens=n_tok, **kwargs)
            answers[i], seconds[labels[i]] = g.text, g.timings["total_s"]
            t = g.timings
            probe = f" · probe {t['probe_s'] * 1000:.0f} ms" if t["probe_s"] else ""
            details[i] = f"**{t['total_s']:.2f} s** · {t['tokens_per_s']:.1f} tokens/s{probe}<br>{mixture_text(g)}"
            return g

        try:
            title = "Latency (probe + generation)"
            yield (*answers, *details, plots.empty_figure("running…", height=200))
            run(0, adapters={})
            yield (*answers, *details, plots.latency_bars(seconds, title))
            top1 = run(1, **route_kwargs(*controls)).routing.selected[0]
            yield (*answers, *details, plots.latency_bars(seconds, title))
            run(2, adapters={top1: 1.0})
            yield (*answers, *details, plots.latency_bars(seconds, title))
            pool = self.engine.adapters
            run(3, adapters={n: 1.0 / len(pool) for n in pool})
            yield (*answers, *details, plots.latency_bars(seconds, title))
        except LoGoError as e:
            raise gr.Error(str(e)) from None

    # -------------------------------------------------------------- layer sweep tab

    def sweep(
        self, prompt: str, k, signal, calibrated, layer, module, probe_input, normalize: bool, cache: dict | None
    ):
        """Heatmap of every adapter's signal at every block; the [L, N] matrix is kept in the session state."""
        kw = route_kwargs(k, signal, calibrated, layer, module, probe_input)
        del kw["k"], kw["layer"]  # the sweep covers every block, and k plays no part
        key = json.dumps([prompt, kw], sort_keys=True)
        if not cache or cache.get("key") != key:
            try:
                z = self.engine.layer_sweep(prompt, **kw)
            except LoGoError as e:
                return plots.empty_figure(str(e), height=400), None
            cache = {"key": key, "z": z.tolist(), "signal": signal, "calibrated": bool(calibrated)}
        return self.sweep_figure(cache, normalize, layer), cache

    def sweep_figure(self, cache: dict | None, normalize: bool, layer):
        """Redraw the sweep from the session state (the 'scale' checkbox needs no new probe)."""
        if not cache:
            return plots.empty_figure("Type a prompt, then open this tab or press Sweep.", height=400)
        what = f"{cache['signal']} signal{' (calibrated)' if cache['calibrated'] else ''}"
        return plots.heatmap(
            cache["z"],
            self.engine.adapters,
            list(range(self.engine.n_layers)),
            self.descriptions,
            title=f"{what} of every adapter at every block · outlined: probe block {int(layer)}",
            normalize_rows=bool(normalize),
            mark_row=int(layer),
        )

    # -------------------------------------------------------------- API endpoints (plain values, JSON out)

    def api_route(
        self,
        prompt: str,
        k: int | None = None,
        signal: str | None = None,
        calibrated: bool | None = None,
        layer: int | str | None = None,
        module: str | None = None,
        probe_input: str | None = None,
    ) -> dict:
        """Route a prompt: every adapter's score, the selected top-k (best first) and their merge weights.

        Omitted settings take the defaults of adapters.yaml.
        """
        try:
            return self.engine.route(
                prompt, k=k, signal=signal, calibrated=calibrated, layer=layer, module=module, probe_input=probe_input
            ).to_dict()
        except LoGoError as e:
            raise gr.Error(str(e)) from None

    def api_generate(
        self,
        prompt: str,
        k: int | None = None,
        signal: str | None = None,
        calibrated: bool | None = None,
        layer: int | str | None = None,
        module: str | None = None,
        probe_input: str | None = None,
        max_new_tokens: int | None = None,
    ) -> tuple[str, dict]:
        """Route a prompt and answer it with the weighted mixture of its top-k adapters.

        Returns the answer and the trace (routing, timings, notices).
        """
        try:
            g = self.engine.generate(
                prompt,
                max_new_tokens=max_new_tokens,
                k=k,
                signal=signal,
                calibrated=calibrated,
                layer=layer,
                module=module,
                probe_input=probe_input,
            )
        except LoGoError as e:
            raise gr.Error(str(e)) from None
        return g.text, g.to_dict()


# ---------------------------------------------------------------------------------------------- layout


def create_demo(engine: LoGoEngine) -> gr.Blocks:
    """Build the LoGo app around a loaded engine (any pool: the real one, or a test fixture's).

    Example:
        >>> demo = create_demo(LoGoEngine.from_config("adapters.yaml"))
        >>> demo.launch(theme=THEME, css=CSS)
    """
    cb = Callbacks(engine)
    d, n = engine.defaults, len(engine.adapters)
    default_modules = [m.strip() for m in d.module.split(",")] if isinstance(d.module, str) else list(d.module)
    modules = engine.pool.modules or default_modules
    default_blocks = parse_layers(d.layer, engine.n_layers)
    layer_help = f"Block whose input is probed (0..{engine.n_layers - 1}; last = reference)."
    if len(default_blocks) > 1:
        layer_help += f" adapters.yaml averages blocks {d.layer}; the /route API takes such ranges too."
    notes = startup_notes(engine)
    model_name = engine.model_name

    with gr.Blocks(title="LoGo · instance-level LoRA routing") as demo:
        gr.Markdown(
            f"# LoGo · LoRA on the Go\nRoute a prompt over **{n} LoRA adapters** with one probe pass of the base "
            f"model, merge the top-k on the fly, generate. Base model `{model_name}` ({engine.n_layers} blocks). "
            f"[Paper]({PAPER})"
        )
        gr.Markdown("\n".join(f"⚠️ {m}  " for m in notes), visible=bool(notes), elem_classes="logo-warning")
        sweep_cache = gr.State(None)  # this session's latest layer sweep matrix

        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                prompt = gr.Textbox(
                    label="Prompt",
                    lines=3,
                    max_lines=12,
                    placeholder="Ask something, or pick an example below",
                    autofocus=True,
                    elem_id="prompt",
                )
                with gr.Row():
                    generate_btn = gr.Button("Generate", variant="primary", elem_id="generate-btn")
                    route_btn = gr.Button("Route only", variant="secondary", elem_id="route-btn")
                    stop_btn = gr.Button("Stop", variant="stop", scale=0, min_width=80)
                rows, labels = example_prompts(engine)
                examples = gr.Examples(
                    rows, inputs=[prompt], example_labels=labels, label="Examples (one per task)", examples_per_page=24
                )
            with gr.Column(scale=2):
                with gr.Accordion("Routing controls", open=True):
                    k = gr.Slider(
                        1,
                        max(n, 2),  # gradio needs minimum < maximum; a pool of 0 or 1 leaves it disabled
                        value=min(d.k, max(n, 1)),
                        step=1,
                        label="k (adapters merged)",
                        info=_field_help("k"),
                        interactive=n > 1,
                        elem_id="k-slider",
                    )
                    with gr.Row():
                        signal = gr.Radio(
                            ["norm", "entropy"], value=d.signal, label="Signal", info=_field_help("signal")
                        )
                        probe_input = gr.Radio(
                            ["residual", "module"],
                            value=d.probe_input,
                            label="Probe input",
                            info=_field_help("probe_input"),
                        )
                    layer = gr.Slider(
                        0,
                        engine.n_layers - 1,
                        value=default_blocks[-1],
                        step=1,
                        label="Probe block",
                        info=layer_help,
                    )
                    with gr.Row():
                        calibrated = gr.Checkbox(value=d.calibrated, label="Calibrated", info=_field_help("calibrated"))
                        module = gr.Dropdown(
                            modules,
                            value=default_modules,
                            multiselect=True,
                            label="Probe module(s)",
                            info="Averaged when several.",
                        )
                with gr.Accordion("Generation", open=False):
                    max_new = gr.Slider(
                        1,
                        MAX_NEW_TOKENS_UI,
                        value=min(d.max_new_tokens, MAX_NEW_TOKENS_UI),
                        step=1,
                        label="Max new tokens",
                        info=_field_help("max_new_tokens"),
                    )
                    regen = gr.Checkbox(False, label="Regenerate the answer when a control changes")
        controls = [k, signal, calibrated, layer, module, probe_input]

        with gr.Tabs():
            with gr.Tab("Answer & routing", id="answer"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3):
                        answer = gr.Textbox(
                            label="Answer",
                            lines=10,
                            max_lines=30,
                            interactive=False,
                            buttons=["copy"],
                            elem_id="answer",
                        )
                        timings = gr.Markdown(elem_classes="logo-timings", elem_id="timings")
                        notices = gr.Markdown(visible=False, elem_classes="logo-notice", elem_id="notices")
                        export = gr.DownloadButton(
                            "Export routing as JSON", interactive=False, size="sm", elem_id="export-btn"
                        )
                    with gr.Column(scale=4):
                        signal_plot = gr.Plot(
                            plots.empty_figure("Type a prompt and press Generate or Route only."),
                            show_label=False,
                            elem_id="signal-plot",
                        )
                        weight_plot = gr.Plot(show_label=False, elem_id="weight-plot")
            with gr.Tab("Compare", id="compare"):
                gr.Markdown("The same prompt, four ways, one after another (greedy decoding, same length).")
                compare_btn = gr.Button("Compare", variant="primary")
                with gr.Row(equal_height=True):
                    compare_answers, compare_details = [], []
                    for label in ["Base model", "LoGo (top-k mixture)", "Top-1 adapter alone", "Uniform mixture"]:
                        with gr.Column(min_width=200):
                            compare_answers.append(gr.Textbox(label=label, lines=6, interactive=False))
                            compare_details.append(gr.Markdown(elem_classes="logo-timings"))
                latency_plot = gr.Plot(show_label=False)
            with gr.Tab("Layer sweep", id="sweep") as sweep_tab:
                with gr.Row():
                    sweep_btn = gr.Button("Sweep", variant="primary", scale=0, min_width=120)
                    normalize = gr.Checkbox(True, label="Scale each block to its best adapter")
                sweep_plot = gr.Plot(show_label=False, elem_id="sweep-plot")
            with gr.Tab("About", id="about"):
                gr.Markdown(
                    ABOUT,
                    latex_delimiters=[
                        {"left": "$$", "right": "$$", "display": True},
                        {"left": "$", "right": "$", "display": False},
                    ],
                )

        # ------------------------------------------------------------------ wiring
        routing_outputs = [signal_plot, weight_plot, notices, timings, export]
        generate_outputs = [answer, *routing_outputs]

        def ui(name: str) -> dict:  # the UI's own events: unlisted, and not in the way of the /route, /generate API
            return dict(api_name=f"ui_{name}", api_visibility="private")

        route_event = gr.on(
            [c.change for c in controls] + [route_btn.click],
            cb.route,
            inputs=[prompt, *controls],
            outputs=routing_outputs,
            trigger_mode="always_last",
            show_progress="minimal",
            **ui("route"),
        )
        route_event.then(
            cb.generate_if, inputs=[regen, prompt, *controls, max_new], outputs=generate_outputs, **ui("generate_if")
        )
        examples.load_input_event.then(cb.route, inputs=[prompt, *controls], outputs=routing_outputs, **ui("example"))
        generate_event = gr.on(
            [generate_btn.click, prompt.submit],
            cb.generate,
            inputs=[prompt, *controls, max_new],
            outputs=generate_outputs,
            **ui("generate"),
        )
        stop_btn.click(None, cancels=[generate_event], **ui("stop"))
        compare_btn.click(
            cb.compare,
            inputs=[prompt, *controls, max_new],
            outputs=[*compare_answers, *compare_details, latency_plot],
            concurrency_limit=1,
            **ui("compare"),
        )
        gr.on(
            [sweep_btn.click, sweep_tab.select],
            cb.sweep,
            inputs=[prompt, *controls, normalize, sweep_cache],
            outputs=[sweep_plot, sweep_cache],
            **ui("sweep"),
        )
        normalize.change(
            cb.sweep_figure, inputs=[sweep_cache, normalize, layer], outputs=sweep_plot, **ui("sweep_redraw")
        )

        gr.api(cb.api_route, api_name="route")
        gr.api(cb.api_generate, api_name="generate")

    # Shared model, per-request mixtures: two requests of each event at a time keep 2 CPU cores busy.
    demo.queue(default_concurrency_limit=2)
    return demo


# ---------------------------------------------------------------------------------------------- entry point


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env_port = os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT")  # PORT: Space micros
    p = argparse.ArgumentParser(description="LoGo demo app (gradio).")
    p.add_argument("--config", default="adapters.yaml", help="adapter pool file (default: adapters.yaml)")
    p.add_argument(
        "--host",
        default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        help="interface to serve on (env GRADIO_SERVER_NAME; default 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=int, default=int(env_port or 7860), help="port (env GRADIO_SERVER_PORT or PORT; default 7860)"
    )
    p.add_argument("--dtype", choices=["fp32", "bf16", "int8"], default=None, help="override the base model dtype")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        # The model loads once, here, and calibrates; the probe cache makes re-routing on a control change free.
        engine = LoGoEngine.from_config(args.config, dtype=args.dtype, probe_cache_size=64)
    except LoGoError as e:  # no model or no readable pool file: nothing to serve
        raise SystemExit(f"app.py: {e}") from None
    create_demo(engine).launch(server_name=args.host, server_port=args.port, theme=THEME, css=CSS, show_error=True)


if __name__ == "__main__":
    main()
