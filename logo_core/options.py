"""Every setting a request or `adapters.yaml` can carry, defined once: type, range, choices, description.

`RouteOptions` (where and how to listen, k) and `GenerateOptions` (length, sampling) are the one
validation boundary of the library, the CLI (its flags are generated from the fields), the app
(its controls' ranges and help texts) and the evaluation. Validation is exact: `"false"` is not a
bool and `1.5` is not a block, but an integral float such as `3.0` (what JSON and Gradio send) is
an integer. Limits that depend on the loaded engine (pool size, blocks, adapted modules) come in
through the validation context (`Context`); without it only the engine-free checks run (YAML).

Example:
    >>> opts = RouteOptions.resolve({"k": 3, "layer": "15:30"}, Context(pool_size=10, n_layers=30, modules=("v_proj",)))
    >>> opts.blocks
    (15, 16, ..., 29)
"""

from __future__ import annotations

import math
import numbers
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import RequestError

MAX_NEW_TOKENS = 1024  # a hard cap for one request
MAX_TEMPERATURE = 10.0
MIN_TEMPERATURE = 0.01  # below this, fp32 logits / T overflow (1e-300 is 0 in fp32) and sampling is greedy anyway
MAX_ADAPTER_WEIGHT = 10.0  # an explicit weight above this scales an adapter far beyond its training


def signal_names() -> list[str]:
    """The scores `signal` can name (signals.SIGNALS, the extension point)."""
    from .signals import SIGNALS  # imported here: checking a CLI flag must not wait for torch (seconds)

    return list(SIGNALS)


SAME = "same"  # `abstain_signal`: the routing signal itself
NEAREST = "nearest"  # `abstain_signal`: the prompt's similarity to its nearest background prompt


def abstain_signal_names() -> list[str]:
    """What `abstain_signal` can name: `same` (the routing signal), `nearest` (how close the prompt is to the
    background prompts) or any signal."""
    return [SAME, NEAREST, *signal_names()]


CALIBRATIONS = ("background", "neutral")  # docs/method.md: calibration
POOLINGS = {"last": ("last",), "mean": ("mean",), "both": ("last", "mean")}  # `pooling` -> the probe's poolings


def pooling_names() -> list[str]:
    return list(POOLINGS)


TOKEN_POOLINGS = ("mean", "recency")  # how the token evidence averages the user's tokens (`router.user_weights`)


def token_pooling_names() -> list[str]:
    return list(TOKEN_POOLINGS)


def weighting_names() -> list[str]:
    from .mixing import WEIGHTINGS

    return list(WEIGHTINGS)


def calibration_names() -> list[str]:
    return list(CALIBRATIONS)


# Routing settings selectable by name (`preset`); a request's own settings still override them.
NEVER_ABSTAIN = -100.0  # below any best calibrated score (the UI says so too): the presets always route

# Each preset names every routing field the default may set, so a preset is the same setting whatever
# adapters.yaml's defaults are (the paper and the earlier default read the last token and never abstained).
PRESETS: dict[str, dict[str, Any]] = {
    # The paper's reference (LoGo, ACL 2026): raw norm at the last block's q_proj, k = 20.
    "paper": {
        "k": 20,
        "weighting": "proportional",
        "signal": "norm",
        "calibrated": False,
        "layer": -1,
        "module": "q_proj",
        "probe_input": "residual",
        "pooling": "last",
        "abstain_below": NEVER_ABSTAIN,
        "abstain_min_tokens": 0,
        "abstain_signal": SAME,
        "abstain_module": SAME,
        "decorrelate": 0.0,
        "abstain_layer": None,
        "token_weight": 0.0,
        "token_layer": None,
        "token_pooling": "mean",
    },
    # This project's default until the routing lab: norm / neutral-prompt constants, blocks 15:30 of v_proj, k = 1.
    "neutral": {
        "k": 1,
        "weighting": "proportional",
        "signal": "norm",
        "calibrated": True,
        "calibration": "neutral",
        "layer": "15:30",
        "module": "v_proj",
        "probe_input": "residual",
        "pooling": "last",
        "abstain_below": NEVER_ABSTAIN,
        "abstain_min_tokens": 0,
        "abstain_signal": SAME,
        "abstain_module": SAME,
        "decorrelate": 0.0,
        "abstain_layer": None,
        "token_weight": 0.0,
        "token_layer": None,
        "token_pooling": "mean",
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_values(name: Any, pool_size: int) -> dict[str, Any]:
    """The settings of a named preset (none for None; an unknown name is left to `preset`'s own check),
    with k cut to the pool size as a default is."""
    values = dict(PRESETS.get(name, {})) if isinstance(name, str) else {}
    if "k" in values:
        values["k"] = min(values["k"], pool_size)
    return values


def probe_input_names() -> list[str]:
    from .probe import PROBE_INPUTS

    return list(PROBE_INPUTS)


class _Choices(dict):
    """A field's `json_schema_extra` whose "choices" are looked up when read (`extra["choices"]`,
    `extra.get("choices")`): the names live in modules that import torch."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        super().__init__()
        self._names = names

    def __getitem__(self, key: str) -> Any:
        return self._names() if key == "choices" else super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self._names() if key == "choices" else super().get(key, default)


@dataclass(frozen=True)
class Context:
    """What the loaded engine allows: pool size, number of blocks, the modules its adapters adapt."""

    pool_size: int
    n_layers: int
    modules: tuple[str, ...]
    residual_modules: tuple[str, ...] | None = None  # those `probe_input` residual can probe (None: all of them)

    def not_residual(self, modules: Sequence[str]) -> list[str]:
        """Those of `modules` that `probe_input` residual cannot probe (their input is not the residual stream)."""
        return [] if self.residual_modules is None else [m for m in modules if m not in self.residual_modules]


# ------------------------------------------------------------------------------- exact type checks


def _show(value: Any) -> str:
    """The value as an error message shows it, short; never raises (an error message must not fail)."""
    try:
        text = repr(value)
    except Exception:  # an int too long to print (sys.get_int_max_str_digits), a broken __repr__
        size = f" of {value.bit_length():,} bits" if isinstance(value, int) else ""
        text = f"<{type(value).__name__}{size}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _finite(value: numbers.Real) -> float | None:
    try:
        f = float(value)
    except OverflowError:  # an int beyond float range: 10**400
        return None
    return f if math.isfinite(f) else None


def as_int(name: str, value: Any) -> int:
    """An integer (int, numpy int) or an integral finite float (JSON and Gradio send 3.0); never a bool
    or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be an integer, got {_show(value)}")
    if isinstance(value, numbers.Integral):
        return int(value)
    f = _finite(value)
    if f is None or not f.is_integer():
        raise ValueError(f"`{name}` must be an integer, got {_show(value)}")
    return int(f)


def as_float(name: str, value: Any) -> float:
    """A finite real number (int, float, numpy number; not a bool, a string or a complex)."""
    f = None if isinstance(value, bool) or not isinstance(value, numbers.Real) else _finite(value)
    if f is None:
        raise ValueError(f"`{name}` must be a finite number, got {_show(value)}")
    return f


def as_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be true or false, got {_show(value)}")
    return value


def in_range(name: str, value: int | float, lo: float | None, hi: float | None, why: str = "") -> int | float:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = (
            f"between {lo} and {hi}" if lo is not None and hi is not None else f">= {lo}" if hi is None else f"<= {hi}"
        )
        raise ValueError(f"`{name}` must be {bounds}{why}, got {_show(value)}")
    return value


# ------------------------------------------------------------------------------- typed constraints
# Each is a pydantic `BeforeValidator` that names the field in its message (`info.field_name`).


def Int(lo: int, hi: int | None = None) -> BeforeValidator:
    """An exact integer (`as_int`) in [lo, hi] (no upper bound if hi is None); None stays None."""
    return BeforeValidator(
        lambda v, info: None if v is None else in_range(info.field_name, as_int(info.field_name, v), lo, hi)
    )


def Float(lo: float, hi: float, fix: str = "", open_below: bool = False) -> BeforeValidator:
    """A finite number (`as_float`) in [lo, hi], or (lo, hi] when `open_below`; `fix` says how to avoid the error."""

    def check(v: Any, info: ValidationInfo) -> float:
        f = as_float(info.field_name, v)
        if (f <= lo if open_below else f < lo) or f > hi:
            bounds = f"> {lo} and at most {hi}" if open_below else f"between {lo} and {hi}{fix}"
            raise ValueError(f"`{info.field_name}` must be {bounds}, got {_show(v)}")
        return f

    return BeforeValidator(check)


Bool = Annotated[bool, BeforeValidator(lambda v, info: as_bool(info.field_name, v))]


def Choice(names: Callable[[], list[str]], optional: bool = False) -> Any:
    """A string among `names()` (looked up when checked: the names live in modules that import torch);
    None too when `optional`."""

    def check(v: Any, info: ValidationInfo) -> str | None:
        if v is None and optional:
            return None
        if not isinstance(v, str) or v not in names():
            raise ValueError(f"`{info.field_name}` must be one of {names()}, got {_show(v)}")
        return v

    kind = str | None if optional else str
    return Annotated[kind, BeforeValidator(check), Field(json_schema_extra=_Choices(names))]


def parse_layer(value: Any) -> int | str | tuple[int, ...]:
    """Canonical form of `layer`, without knowing the model: an int, an `a:b` slice or a tuple of ints.

    `"20"` becomes 20 and `"3,5"` becomes (3, 5); negative indices count from the end.
    """
    if isinstance(value, str):
        text = value.strip()
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 2 or not all(_is_int_text(p) or not p.strip() for p in parts):
                raise ValueError(f"`layer` must be an int, 'a:b' or a list of ints, got {_show(value)}")
            return ":".join(p.strip() for p in parts)
        items = [p.strip() for p in text.split(",")]
        if not text or not all(_is_int_text(p) for p in items):
            raise ValueError(f"`layer` must be an int, 'a:b' or a list of ints, got {_show(value)}")
        return int(items[0]) if len(items) == 1 else tuple(int(p) for p in items)
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError(f"`layer` is an empty list, got {_show(value)}: give at least one block")
        try:
            return tuple(as_int("layer", v) for v in value)
        except ValueError:
            raise ValueError(f"`layer` must be an int, 'a:b' or a list of ints, got {_show(value)}") from None
    try:
        return as_int("layer", value)
    except ValueError:
        raise ValueError(f"`layer` must be an int, 'a:b' or a list of ints, got {_show(value)}") from None


_INT_TEXT = re.compile(r"-?[0-9]{1,9}")  # ASCII digits only; more than 9 digits is no block index


def _is_int_text(text: str) -> bool:
    return _INT_TEXT.fullmatch(text.strip()) is not None


def resolve_blocks(layer: int | str | tuple[int, ...], n_layers: int) -> tuple[int, ...]:
    """`parse_layer`'s output -> sorted non-negative block indices of a model with n_layers blocks."""
    where = f"(the model has {n_layers} blocks: 0..{n_layers - 1}, or -{n_layers}..-1 from the end)"

    def check(i: int) -> int:
        if not -n_layers <= i < n_layers:
            raise ValueError(f"`layer` must be between {-n_layers} and {n_layers - 1} {where}, got {_show(i)}")
        return i % n_layers

    if isinstance(layer, int):
        return (check(layer),)
    if isinstance(layer, tuple):
        return tuple(sorted({check(i) for i in layer}))
    a, b = (int(p) if p else None for p in layer.split(":"))
    for end in (a, b):  # a slice end may be n_layers itself (one past the last block)
        if end is not None and not -n_layers <= end <= n_layers:
            raise ValueError(f"`layer` range {layer!r} reaches outside the model {where}")
    blocks = tuple(range(n_layers)[slice(a, b)])
    if not blocks:
        raise ValueError(f"`layer` range {layer!r} selects no block {where}")
    return blocks


def parse_modules(value: Any) -> tuple[str, ...]:
    """`"q_proj,v_proj"` or `["q_proj", "v_proj"]` -> ("q_proj", "v_proj"); never empty."""
    if isinstance(value, str):
        items = [m.strip() for m in value.split(",")]
        items = [m for m in items if m] if value.strip() else []
    elif isinstance(value, list | tuple) and all(isinstance(m, str) for m in value):
        items = [m.strip() for m in value if m.strip()]
    else:
        raise ValueError(f"`module` must be a module name or a list of names, got {_show(value)}")
    if not items:
        raise ValueError(f"`module` is empty, got {_show(value)}: choose at least one adapted module, e.g. q_proj")
    return tuple(dict.fromkeys(items))


def _context(info: ValidationInfo) -> Context | None:
    ctx = info.context
    return ctx.get("engine") if isinstance(ctx, dict) else None


def _as_request_error(e: ValidationError) -> RequestError:
    """pydantic's errors as one message per argument, without pydantic's prefixes."""
    msgs = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"`{err['loc'][0]}` is not a setting here, got {_show(err.get('input'))}"
        elif not msg.startswith("`"):
            msg = f"`{'.'.join(map(str, err['loc']))}` {msg}, got {_show(err.get('input'))}"
        msgs.append(msg)
    return RequestError("; ".join(msgs))


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @classmethod
    def resolve(cls, values: dict, engine: Context | None = None):
        """Validate `values` ({name: value}, None = the field's default) against the engine's limits.

        Raises:
            RequestError: one sentence per bad argument, naming it, showing the value, saying the fix.
        """
        # None = the default, but an unknown name is a typo whatever its value
        values = {k: v for k, v in values.items() if v is not None or k not in cls.model_fields}
        try:
            return cls.model_validate(values, context={"engine": engine})
        except ValidationError as e:
            raise _as_request_error(e) from None

    @classmethod
    def help(cls, name: str) -> str:
        return cls.model_fields[name].description or ""


class RouteOptions(_Options):
    """Where the probe listens, how each adapter is scored, how many adapters are merged."""

    k: int = Field(3, description="How many adapters to merge per prompt (1..the pool size).")
    signal: Choice(signal_names) = Field(
        "norm",
        description="How an adapter is scored on the probe vector h: `norm` = ||o_i|| of its output o_i, "
        "`entropy` = 1/H(softmax(o_i)), `subspace` = ||V_i^T h|| (h inside the row space of its A_i, every "
        "direction alike), `subspace_cos` = that over ||h||.",
        validate_default=False,  # a known choice; validating it would import torch
    )
    calibrated: Bool = Field(True, description="Calibrate each adapter's signal (see `calibration`).")
    layer: int | str | tuple[int, ...] = Field(
        -1,
        description="Probe block(s): an index (negative from the end), a range `a:b` or a list; several are averaged.",
    )
    module: tuple[str, ...] = Field(
        ("q_proj",),
        description="Adapted module(s) to probe, e.g. `q_proj` or `q_proj,v_proj` (averaged); those that do not read "
        "the residual stream (down_proj, o_proj) need probe input `module`.",
    )
    probe_input: Choice(probe_input_names) = Field(
        "residual",
        description="`residual`: the hidden state entering the block (the paper); `module`: the module's own input.",
        validate_default=False,
    )
    calibration: Choice(calibration_names) = Field(
        "neutral",
        description="`background`: the z-score (sigma_i - mu_i) / s_i of the signal against its mean mu_i and "
        "spread s_i over unlabelled task-like prompts; `neutral`: sigma_i divided by its mean on neutral chat prompts.",
        validate_default=False,
    )
    abstain_below: Annotated[
        float | None, BeforeValidator(lambda v, info: None if v is None else as_float(info.field_name, v))
    ] = Field(
        None,
        description="Answer with the base model when the best calibrated score is below this (no adapter stands "
        "out); none = the default of adapters.yaml (a very low number, e.g. -100, never abstains).",
    )
    pooling: Choice(pooling_names) = Field(
        "last",
        description="Which prompt tokens the probe reads: `last` (the paper), `mean` over the user's tokens, or "
        "`both` (their calibrated scores averaged).",
        validate_default=False,
    )
    preset: Choice(preset_names, optional=True) = Field(
        None,
        description="A named setting (`paper`: the paper's reference; `neutral`: this project's earlier default); "
        "the request's own settings override it.",
        validate_default=False,
    )
    # Last, so that positional /route and /generate calls written before it still line up.
    weighting: Choice(weighting_names) = Field(
        "proportional",
        description="How the k chosen adapters are weighed: `proportional` w_i = score_i / sum of the chosen "
        "(the paper); `lead`: the best at full strength, the others at a quarter of their proportional weight.",
        validate_default=False,
    )
    abstain_min_tokens: int | None = Field(
        None,
        description="Answer with the base model when the prompt has fewer tokens than this (a greeting, a lone "
        "word: shorter than any prompt the pool is for, so its scores say nothing); 0 = never; none = the "
        "default of adapters.yaml.",
    )
    abstain_signal: Choice(abstain_signal_names) = Field(
        SAME,
        description="Which signal `abstain_below` reads: `same` (the routing signal) or another signal, calibrated "
        "as the routing one is; its best score decides whether any adapter stands out, the routing signal still "
        "decides which.",
        validate_default=False,
    )
    abstain_module: str | tuple[str, ...] = Field(
        SAME,
        description="Which modules `abstain_below` reads: `same` (the routing modules) or others, e.g. "
        "`q_proj,v_proj`; with `abstain_signal`, the score that says whether any adapter stands out (the routing "
        "modules still decide which).",
        validate_default=False,
    )
    decorrelate: Annotated[float, Float(0, 1)] = Field(
        0.0,
        description="With `background` calibration: how much of the adapters' correlation over the background "
        "prompts is taken out of the z-scores before ranking (0 = none, 1 = full whitening). Siblings' scores rise "
        "together on their family's prompts; what is left after taking that out tells them apart.",
    )
    abstain_layer: int | None = Field(
        None,
        description="With `abstain_signal` `nearest`: the block whose residual input, averaged over the user's "
        "tokens, is compared (cosine) with the background prompts'; `abstain_below` then reads the similarity to the "
        "nearest one. An index, negative from the end; none = adapters.yaml's default (else the middle block).",
    )
    token_weight: Annotated[float, Float(0, 10)] = Field(
        0.0,
        description="With `background` calibration: the weight of the token evidence added to each adapter's score: "
        "its signal at every user token of the `token_layer` blocks, averaged over the tokens, z-scored against the "
        "background prompts (a word that names the task, e.g. `Serbian` or `kilograms`, counts wherever it stands; "
        "the last token and the mean vector blur it). 0 = none.",
    )
    token_layer: int | str | tuple[int, ...] | None = Field(
        None,
        description="The blocks the token evidence reads (`token_weight`): an index, a range `a:b` or a list; none = "
        "adapters.yaml's default (else the first third of the blocks, where a token still stands for its word).",
    )
    token_pooling: Choice(token_pooling_names) = Field(
        "mean",
        description="How the token evidence averages the user's tokens: `mean` (alike) or `recency` (token t of T "
        "weighs t: the request's last words, where a prompt usually names what it wants, e.g. `to kilograms`, count "
        "most).",
        validate_default=False,
    )
    _blocks: tuple[int, ...] | None = PrivateAttr(None)
    _token_blocks: tuple[int, ...] | None = PrivateAttr(None)
    _n_layers: int | None = PrivateAttr(None)

    @property
    def abstain_module_text(self) -> str:
        """`abstain_module` as one string (`same` or `q_proj,v_proj`): the form the app's control and the CLI take."""
        return self.abstain_module if isinstance(self.abstain_module, str) else ",".join(self.abstain_module)

    @field_validator("abstain_module", mode="before")
    @classmethod
    def _abstain_module(cls, v: Any, info: ValidationInfo) -> str | tuple[str, ...]:
        if isinstance(v, str) and v.strip() == SAME:
            return SAME
        try:
            modules = parse_modules(v)
        except ValueError as e:
            raise ValueError(
                f"{str(e).replace('`module`', '`abstain_module`')} (or `same`: the routing modules)"
            ) from None
        ctx = _context(info)
        if ctx is not None:
            for m in modules:
                if m not in ctx.modules:
                    raise ValueError(
                        f"`abstain_module` {m!r} is not adapted by any adapter; choose from {list(ctx.modules)} or `same`"
                    )
        return modules

    @field_validator("abstain_layer", mode="before")
    @classmethod
    def _abstain_layer(cls, v: Any, info: ValidationInfo) -> int | None:
        if v is None:
            return None
        i = as_int("abstain_layer", v)
        ctx = _context(info)
        if ctx is not None and not -ctx.n_layers <= i < ctx.n_layers:
            raise ValueError(
                f"`abstain_layer` must be a block between {-ctx.n_layers} and {ctx.n_layers - 1} (the model has "
                f"{ctx.n_layers} blocks), got {_show(i)}"
            )
        return i

    @field_validator("k", mode="before")
    @classmethod
    def _k(cls, v: Any, info: ValidationInfo) -> int:
        ctx = _context(info)
        n = ctx.pool_size if ctx else None
        why = f" (the pool size is {n})" if n is not None else ""
        return in_range("k", as_int("k", v), 1, n, why)

    @field_validator("abstain_min_tokens", mode="before")
    @classmethod
    def _min_tokens(cls, v: Any) -> int | None:
        return None if v is None else in_range("abstain_min_tokens", as_int("abstain_min_tokens", v), 0, None)

    @field_validator("layer", mode="before")
    @classmethod
    def _layer(cls, v: Any, info: ValidationInfo) -> int | str | tuple[int, ...]:
        layer = parse_layer(v)
        ctx = _context(info)
        if ctx is not None:
            resolve_blocks(layer, ctx.n_layers)  # range errors now, with the field's name
        return layer

    @field_validator("token_layer", mode="before")
    @classmethod
    def _token_layer(cls, v: Any, info: ValidationInfo) -> int | str | tuple[int, ...] | None:
        if v is None or (isinstance(v, str) and not v.strip()):  # blank (an emptied text box) = the default
            return None
        try:
            layer = parse_layer(v)
            ctx = _context(info)
            if ctx is not None:
                resolve_blocks(layer, ctx.n_layers)
        except ValueError as e:
            raise ValueError(str(e).replace("`layer`", "`token_layer`")) from None
        return layer

    @field_validator("module", mode="before")
    @classmethod
    def _module(cls, v: Any, info: ValidationInfo) -> tuple[str, ...]:
        modules = parse_modules(v)
        ctx = _context(info)
        if ctx is not None:
            for m in modules:
                if m not in ctx.modules:
                    raise ValueError(f"`module` {m!r} is not adapted by any adapter; choose from {list(ctx.modules)}")
        return modules

    @model_validator(mode="after")
    def _resolve_blocks(self, info: ValidationInfo) -> RouteOptions:
        ctx = _context(info)
        if ctx is not None:
            if self.probe_input == "residual":
                for what, mods in (("module", self.module), ("abstain_module", self.abstain_module)):
                    wrong = ctx.not_residual(mods) if mods != SAME else []
                    if wrong:
                        raise ValueError(
                            f"`{what}` {wrong[0]!r} reads the block's inner activations, not the residual stream that "
                            f"`probe_input` 'residual' probes; choose from {list(ctx.residual_modules)}, or set "
                            "`probe_input` to 'module'"
                        )
            self._blocks = resolve_blocks(self.layer, ctx.n_layers)
            tokens = f"0:{max(1, ctx.n_layers // 3)}" if self.token_layer is None else self.token_layer
            self._token_blocks = resolve_blocks(tokens, ctx.n_layers)
            self._n_layers = ctx.n_layers
        return self

    @property
    def blocks(self) -> tuple[int, ...]:
        """The probed blocks, non-negative and sorted (known once validated against an engine)."""
        if self._blocks is None:
            raise RuntimeError("RouteOptions.blocks needs options resolved against an engine (RouteOptions.resolve)")
        return self._blocks

    @property
    def poolings(self) -> tuple[str, ...]:
        """The probe's poolings: ("last",), ("mean",) or both."""
        return POOLINGS[self.pooling]

    @property
    def layer_text(self) -> str:
        """`layer` as one string (`-1`, `15:30`, `3,5`): the form the app's text box and the CLI take."""
        return ",".join(map(str, self.layer)) if isinstance(self.layer, tuple) else str(self.layer)

    @property
    def token_layer_text(self) -> str:
        """`token_layer` as one string, "" for the default: the form the app's text box takes."""
        if self.token_layer is None:
            return ""
        return ",".join(map(str, self.token_layer)) if isinstance(self.token_layer, tuple) else str(self.token_layer)

    @property
    def gate(self) -> RouteOptions | None:
        """The settings whose best score `abstain_below` reads when that is another signal (`abstain_signal`) or
        other modules (`abstain_module`) than the routing ones (every other setting alike); None when the routing
        scores themselves decide."""
        if self.abstain_signal == NEAREST:  # not a signal of the adapters: the router compares with the background
            return None
        signal = self.signal if self.abstain_signal == SAME else self.abstain_signal
        module = self.module if self.abstain_module == SAME else self.abstain_module
        if self.abstain_below is None or (signal, module) == (self.signal, self.module):
            return None
        return self.model_copy(
            update={"abstain_signal": SAME, "abstain_module": SAME, "signal": signal, "module": module}
        )

    @property
    def nearest(self) -> bool:
        """Whether `abstain_below` reads the similarity to the nearest background prompt (`abstain_signal` nearest)."""
        return self.abstain_signal == NEAREST and self.abstain_below is not None

    @property
    def nearest_block(self) -> int:
        """The block `nearest` reads (`abstain_layer`, or the middle block), non-negative."""
        n = self._n_layers
        if n is None:
            raise RuntimeError(
                "RouteOptions.nearest_block needs options resolved against an engine (RouteOptions.resolve)"
            )
        return (n // 2 if self.abstain_layer is None else self.abstain_layer) % n

    @property
    def token_evidence(self) -> float:
        """`token_weight` where it acts (background calibration, which gives its z-score a background), else 0."""
        return self.token_weight if self.calibrated and self.calibration == "background" else 0.0

    @property
    def token_blocks(self) -> tuple[int, ...]:
        """The blocks of `token_layer`, non-negative and sorted (known once validated against an engine)."""
        if self._token_blocks is None:
            raise RuntimeError(
                "RouteOptions.token_blocks needs options resolved against an engine (RouteOptions.resolve)"
            )
        return self._token_blocks

    @property
    def decorrelation(self) -> float:
        """`decorrelate` where it acts (background calibration), else 0."""
        return self.decorrelate if self.calibrated and self.calibration == "background" else 0.0

    def trace(self) -> dict:
        """The settings as a trace records them, blocks resolved."""
        return {
            **self.model_dump(mode="json"),
            "blocks": list(self.blocks),
            "decorrelate": self.decorrelation,
            "abstain_layer": self.nearest_block if self.nearest else self.abstain_layer,
            "token_weight": self.token_evidence,
            "token_blocks": list(self.token_blocks) if self.token_evidence else [],
            "token_pooling": self.token_pooling,
        }


class GenerateOptions(_Options):
    """Length and sampling of an answer (greedy unless `do_sample`)."""

    max_new_tokens: Annotated[int, Int(1, MAX_NEW_TOKENS)] = Field(
        64, description=f"Longest answer, in tokens (1..{MAX_NEW_TOKENS})."
    )
    min_new_tokens: Annotated[int, Int(0, MAX_NEW_TOKENS)] = Field(
        0, description="Do not stop before this many tokens (benchmarks); 0 = stop at EOS."
    )
    do_sample: Bool = Field(False, description="Sample the answer (temperature, top_p, top_k, seed); greedy if false.")
    temperature: Annotated[
        float, Float(MIN_TEMPERATURE, MAX_TEMPERATURE, " (for greedy decoding set do_sample=false)")
    ] = Field(1.0, description=f"Sampling temperature ({MIN_TEMPERATURE} to {MAX_TEMPERATURE:g}).")
    top_p: Annotated[float, Float(0, 1, open_below=True)] = Field(
        1.0, description="Nucleus sampling: keep the most likely tokens up to this mass (0 < p <= 1)."
    )
    top_k: Annotated[int, Int(0)] = Field(0, description="Sample among the k most likely tokens only (0 = no limit).")
    seed: Annotated[int | None, Int(0, 2**63 - 1)] = Field(
        None, description="Random seed of a sampled answer (same seed, same answer)."
    )

    @model_validator(mode="after")
    def _lengths(self) -> GenerateOptions:
        if self.min_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"`min_new_tokens` ({self.min_new_tokens}) must be at most `max_new_tokens` ({self.max_new_tokens})"
            )
        return self


ROUTE_FIELDS = tuple(RouteOptions.model_fields)
PRESET_FIELDS = tuple(f for f in ROUTE_FIELDS if f != "preset")  # the settings a named preset fills in
GENERATE_FIELDS = tuple(GenerateOptions.model_fields)

# ------------------------------------------------------------------------------- prompts and mixtures

_INVISIBLE = {"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Cn", "Co", "Mn"}  # control, format (zero-width, BOM),
# surrogates, spaces, unassigned, private use, and non-spacing marks (accents with no letter, variation selectors)
_BLANK = set("\u034f\u115f\u1160\u17b4\u17b5\u2800\u3164\uffa0")  # letters that render as nothing (Unicode
# Default_Ignorable_Code_Point outside Cf: Hangul fillers, Khmer inherent vowels, CGJ) and the braille blank


def _visible(c: str) -> bool:
    return unicodedata.category(c) not in _INVISIBLE and c not in _BLANK and not c.isspace()


def check_prompt(prompt: Any, max_chars: int) -> str:
    """A prompt as a valid, visible, not absurdly long string (checked before any tokenizing)."""
    if not isinstance(prompt, str):
        raise RequestError(f"`prompt` must be a string, got {type(prompt).__name__}")
    if len(prompt) > max_chars:
        raise RequestError(f"`prompt` has {len(prompt):,} characters; the limit is {max_chars:,}: shorten it")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(
            f"`prompt` is not valid text: a lone surrogate {prompt[e.start]!r} at position {e.start}; send UTF-8 text"
        ) from None
    if not any(map(_visible, prompt)):
        raise RequestError(
            f"`prompt` is empty (or only invisible characters), got {_show(prompt)}: type a question or instruction"
        )
    return prompt


def check_prompts(prompts: Any, max_chars: int) -> list[str]:
    """A non-empty list or tuple of prompts (not a bare string, not a one-shot iterator)."""
    if isinstance(prompts, str) or not isinstance(prompts, list | tuple):
        raise RequestError(f"`prompts` must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise RequestError("`prompts` is empty: give at least one prompt")
    return [check_prompt(p, max_chars) for p in prompts]


def check_mixture(adapters: Any, names: list[str]) -> dict[str, float]:
    """An explicit mixture {adapter: weight}: known names, finite weights in (0, MAX_ADAPTER_WEIGHT]."""
    if not isinstance(adapters, Mapping):
        raise RequestError(f"`adapters` must be a mapping {{adapter name: weight}}, got {type(adapters).__name__}")
    out = {}
    for name, w in adapters.items():
        if name not in names:
            shown = names if len(names) <= 12 else names[:12] + ["..."]
            raise RequestError(f"`adapters`: unknown adapter {_show(name)}; the pool has {shown}")
        try:
            w = as_float(f"adapters[{name!r}]", w)
        except ValueError as e:
            raise RequestError(str(e)) from None
        if not 0 < w <= MAX_ADAPTER_WEIGHT:
            raise RequestError(f"`adapters[{name!r}]` must be > 0 and at most {MAX_ADAPTER_WEIGHT}, got {_show(w)}")
        out[name] = w
    return out


def check_mixtures(adapters: Any, names: list[str], rows: int) -> list[dict[str, float]]:
    """One explicit mixture per prompt of a batch (`check_mixture` each)."""
    if not isinstance(adapters, list | tuple) or len(adapters) != rows:
        raise RequestError(f"`adapters` must be a list of {rows} mixtures, one per prompt")
    return [check_mixture(a, names) for a in adapters]


def given(values: dict) -> dict:
    """The settings a request names: None means adapters.yaml's default, not the built-in one (an
    unknown name stays, to be refused: `tempreature=None` is a typo)."""
    return {k: v for k, v in values.items() if v is not None or k not in (*ROUTE_FIELDS, *GENERATE_FIELDS)}


def merged(defaults: BaseModel, model: type[_Options], overrides: dict) -> dict:
    """`model`'s fields from adapters.yaml's `defaults`, overridden by the settings a request names."""
    return {**{f: getattr(defaults, f) for f in model.model_fields}, **given(overrides)}


def warn_ignored(opts: GenerateOptions, named: dict) -> GenerateOptions:
    """Warn when a greedy request names sampling settings (they would be ignored in silence)."""
    ignored = [f"`{k}`" for k in ("temperature", "top_p", "top_k", "seed") if named.get(k) is not None]
    if ignored and not opts.do_sample:
        warnings.warn(f"{', '.join(ignored)} ignored: `do_sample` is false (greedy); pass do_sample=True", stacklevel=3)
    return opts


def split_kwargs(kwargs: dict, explicit: bool) -> tuple[dict, dict]:
    """A request's keywords -> (routing, generation) settings; unknown names and routing settings
    beside an explicit mixture (which would silently do nothing) are errors."""
    route = {k: v for k, v in kwargs.items() if k in ROUTE_FIELDS}
    gen = {k: v for k, v in kwargs.items() if k in GENERATE_FIELDS}
    unknown = set(kwargs) - set(route) - set(gen)
    if unknown:
        shown = ", ".join(f"`{k}`={_show(kwargs[k])}" for k in sorted(unknown, key=str))
        raise RequestError(
            f"unknown argument(s) {shown}; routing takes {list(ROUTE_FIELDS)}, generation {list(GENERATE_FIELDS)}"
        )
    given = [f"`{k}`={_show(v)}" for k, v in route.items() if v is not None]
    if explicit and given:
        raise RequestError(
            f"routing settings {', '.join(given)} have no effect with an explicit `adapters` mixture: "
            "pass either the mixture or routing settings"
        )
    return route, gen


def check_timeout(timeout: Any) -> float:
    """A stream's patience for the next token: seconds in (0, 3600]."""
    try:
        seconds = as_float("timeout", timeout)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds <= 3600:
        raise RequestError(f"`timeout` must be a number of seconds in (0, 3600], got {_show(timeout)}")
    return seconds


def check_folder(directory: Any) -> Path:
    """A folder to write into: a path (str or Path), not an existing file."""
    if not isinstance(directory, str | Path) or not str(directory).strip():
        raise RequestError(f"`directory` must be a folder path, got {_show(directory)}")
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise RequestError(f"`directory` {str(path)!r} is a file: give a folder to write the adapter to")
    return path
