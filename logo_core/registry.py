"""`adapters.yaml` -> validated pydantic models.

The field descriptions below are the documentation: the CLI `--help` and the app's `info=` texts
reuse them. Every validation error is re-raised as `ConfigError` naming the file, the adapter and
the field, so a typo in a pool of hundreds of adapters is found at once.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError, RequestError
from .options import GenerateOptions, RouteOptions, _show, check_prompt

# Task-free prompts whose mean signal calibrates each adapter's overall loudness (docs/method.md §3).
NEUTRAL_PROMPTS = [
    "Hello!",
    "Tell me something.",
    "What do you think?",
    "Can you help me?",
    "Please answer.",
    "Good morning.",
    "Say anything you like.",
    "I have a question.",
]


class _Strict(BaseModel):
    # Exact types, as in options.py: "false" is no bool, "16" no int, nan and inf no number.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _integral(value: Any) -> Any:
    """3.0 (what JSON sends) is the integer 3; anything else goes to pydantic's strict int check."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


def _no_control(value: str | None) -> str | None:
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"may not contain control characters, got {_show(value)}")
    return value


def _usable_prompts(values: list[str], item: bool = True) -> list[str]:
    """Prompts the engine will probe or show: the request's own check (options.check_prompt)."""
    for i, text in enumerate(values):
        try:
            check_prompt(text, 100_000)
        except RequestError as e:
            raise ValueError(f"{f'item {i} ' if item else ''}is not a usable prompt ({e})") from None
    return values


DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's named strategies


class BaseModelSpec(_Strict):
    id: str = Field(
        "default",
        min_length=1,
        description="`default` (embedded SmolLM2-135M-Instruct), a hub id or a local directory.",
    )
    gguf_file: str | None = Field(None, description="GGUF file inside `id`, when the weights are a GGUF.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    device: str = Field("auto", description="`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.")
    dtype: Literal["auto", "fp32", "bf16", "fp16", "int8", "8bit", "4bit"] = Field(
        "auto",
        description="Weights: `auto` (fp32 on a CPU, bf16 on GPUs that have it, else fp16), fp32, bf16, fp16, "
        "int8 (dynamic quantisation, CPU), 8bit or 4bit (bitsandbytes, CUDA).",
    )
    probe_dtype: Literal["same", "fp32", "bf16", "fp16"] = Field(
        "same", description="Probe with a second copy of the model in this dtype (`same`: probe the generating model)."
    )
    device_map: str | dict[str, int | str] | None = Field(
        None, description="accelerate device_map (`auto` spreads a large model over several GPUs)."
    )

    @field_validator("id", "gguf_file", "revision")
    @classmethod
    def _plain(cls, value: str | None) -> str | None:
        return _no_control(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]{1,3})?", value):
            raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {_show(value)}")
        return value

    @field_validator("device_map", mode="before")
    @classmethod
    def _device_map(cls, value: Any) -> Any:
        def place(v: Any) -> bool:  # a GPU index or a device name
            return isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)

        if value is None or value in DEVICE_MAPS:
            return value
        if isinstance(value, dict) and all(isinstance(k, str) and place(v) for k, v in value.items()):
            return value
        raise ValueError(f"must be one of {list(DEVICE_MAPS)} or {{module: GPU index or device}}, got {_show(value)}")


class EngineSpec(_Strict):
    """Runtime settings of the engine (not of a request)."""

    mixture: Literal["auto", "fold", "lowrank"] = Field(
        "auto",
        description="How a one-mixture request computes: `fold` the mixture into private weight copies (decode at "
        "base speed), `lowrank` pairs beside the base layers; `auto`: fold on a CPU, low-rank on a GPU.",
    )
    max_prompt_tokens: Int = Field(2048, ge=16, description="Longer prompts keep their head and tail, with a notice.")
    max_prompt_chars: Int = Field(100_000, ge=100, description="Longer prompts are refused before tokenizing.")
    probe_cache_mb: float = Field(
        0, ge=0, le=4096, description="Probe vectors of recent prompts kept for instant re-routing (the app: 32)."
    )
    factor_cache_mb: float = Field(512, ge=0, description="Chosen adapters' factors kept on their device (LRU), in MB.")
    compile: bool = Field(False, description="Compiled decode path (static KV cache, fixed-shape mixture buffers).")
    max_mixture_rank: Int = Field(
        160,
        ge=1,
        le=4096,
        description="Rank of the compiled path's mixture buffers (K_max x R); larger mixtures run eager.",
    )
    batch_buckets: list[Annotated[Int, Field(ge=1, le=256)]] = Field(
        [1, 2, 4, 8], min_length=1, description="Batch sizes the compiled path holds."
    )
    batching: Literal["auto", "on", "off"] = Field(
        "auto", description="Micro-batch concurrent requests (auto: on a dedicated GPU only)."
    )
    batch_window_ms: float = Field(20, ge=0, le=1000, description="How long the batcher waits for more requests.")
    batch_max_rows: Int = Field(8, ge=1, le=256, description="Most requests in one micro-batch.")


class HubSource(_Strict):
    repo: str = Field(
        pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", description="Hub repository id holding the adapter (`owner/name`)."
    )
    subfolder: str | None = Field(None, pattern=r"^[\w.-]+(/[\w.-]+)*$", description="Folder inside the repository.")
    revision: str | None = Field(None, pattern=r"^[\w./-]+$", description="Branch, tag or commit.")

    @field_validator("repo", "subfolder", "revision")
    @classmethod
    def _no_parent(cls, value: str | None) -> str | None:
        if value is not None and ".." in value:
            raise ValueError(f"may not contain '..', got {_show(value)}")
        return value


class AdapterSpec(_Strict):
    name: str = Field(description="Unique adapter name, shown in charts and traces.", min_length=1)
    path: str | None = Field(None, min_length=1, description="Local PEFT adapter directory, relative to adapters.yaml.")
    hub: HubSource | None = Field(None, description="Hub location, used when `path` is not given.")
    description: str = Field("", description="Short task description (hover text, retrieval baseline).")
    family: str = Field("", description="Task family the adapter belongs to (charts group by it).")
    examples: list[str] = Field(default_factory=list, description="Example prompts (UI examples, retrieval).")

    @field_validator("name")
    @classmethod
    def _shown_name(cls, value: str) -> str:
        _no_control(value)
        if not value.strip() or value != value.strip():
            raise ValueError(f"must be visible text without surrounding spaces, got {_show(value)}")
        return value

    @field_validator("path")
    @classmethod
    def _plain_path(cls, value: str | None) -> str | None:
        return _no_control(value)

    @field_validator("examples")
    @classmethod
    def _usable_examples(cls, value: list[str]) -> list[str]:
        return _usable_prompts(value)

    @model_validator(mode="after")
    def _one_source(self) -> AdapterSpec:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of `path` or `hub`")
        return self


class UnseenExample(_Strict):
    """A prompt of a task that has no adapter in the pool (the demo shows what routing does with it)."""

    task: str = Field(min_length=1, description="Task name (it has no adapter of its own).")
    family: str = Field("", description="Family of the task; empty when the whole family is held out.")
    prompt: str = Field(min_length=1, description="The example prompt.")

    @field_validator("prompt")
    @classmethod
    def _usable(cls, value: str) -> str:
        return _usable_prompts([value], item=False)[0]


class Defaults(RouteOptions, GenerateOptions):
    """Request defaults: every routing and generation setting (`options.py` defines and checks them)."""


class PoolConfig(_Strict):
    base_model: BaseModelSpec = Field(default_factory=BaseModelSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    defaults: Defaults = Field(default_factory=Defaults)
    neutral_prompts: list[str] = Field(default_factory=lambda: list(NEUTRAL_PROMPTS), min_length=1)
    background_prompts: list[str] = Field(
        default_factory=list,
        description="Unlabelled task-like prompts of the `background` calibration; empty = every adapter's "
        "`examples`, pooled (which adapter a prompt came from is never used).",
    )
    adapters: list[AdapterSpec] = Field(default_factory=list)
    unseen_examples: list[UnseenExample] = Field(
        default_factory=list, description="Prompts of tasks without an adapter, shown as demo examples."
    )
    # Where relative adapter paths are resolved; set by `load_config`, not by the file.
    root: Path = Field(Path("."), exclude=True)

    @field_validator("neutral_prompts")
    @classmethod
    def _usable_neutral(cls, value: list[str]) -> list[str]:
        return _usable_prompts(value)

    @field_validator("background_prompts")
    @classmethod
    def _usable_background(cls, value: list[str]) -> list[str]:
        return _usable_prompts(value) if value else value

    def background(self) -> list[str]:
        """The background prompt set: `background_prompts`, or the adapters' examples pooled and de-duplicated
        (their order kept; the adapter each came from dropped), or the neutral prompts for a pool without any."""
        pooled = self.background_prompts or list(dict.fromkeys(p for a in self.adapters for p in a.examples))
        return pooled or list(self.neutral_prompts)

    @field_validator("adapters")
    @classmethod
    def _unique_names(cls, adapters: list[AdapterSpec]) -> list[AdapterSpec]:
        seen: set[str] = set()
        for a in adapters:
            if a.name in seen:
                raise ValueError(f"adapter name {a.name!r} appears twice")
            seen.add(a.name)
        return adapters

    def adapter_dir(self, spec: AdapterSpec) -> Path | None:
        """Absolute local directory of an adapter (None for hub adapters)."""
        return None if spec.path is None else (self.root / spec.path).resolve()


def _describe(file: str, raw: dict, err: dict) -> str:
    """One validation error as `file: adapter 'x' field 'y': message`."""
    loc = list(err["loc"])
    where = ""
    if len(loc) >= 2 and loc[0] == "adapters" and isinstance(loc[1], int):
        entries = raw.get("adapters") or []
        entry = entries[loc[1]] if loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        where = f"adapter {name!r} (entry {loc[1]})" if name else f"adapter entry {loc[1]}"
        loc = loc[2:]
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if err["type"] != "missing" and "got " not in msg and not isinstance(value, dict):
        msg += f", got {_show(value)}"
    if not loc:  # the entry as a whole (`path` and `hub` both given)
        return f"{file}: {where or '(top level)'}: {msg}"
    field = ".".join(str(p) for p in loc)
    return f"{file}: {where + ' ' if where else ''}field `{field}`: {msg}"


def parse_config(raw: object, file: str = "<config>", root: Path | None = None) -> PoolConfig:
    """Validate an already-parsed YAML document."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{file}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        cfg = PoolConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError("\n".join(_describe(file, raw, err) for err in e.errors())) from None
    cfg.root = root if root is not None else Path(file).resolve().parent
    return cfg


def with_overrides(cfg: PoolConfig, **sections: dict) -> PoolConfig:
    """A copy of `cfg` with some fields of its sections replaced (`base_model={"dtype": "bf16"}`), validated.

    Raises:
        ConfigError: an unknown section or field, or a bad value (named).
    """
    raw = cfg.model_dump(mode="python")
    for section, fields in sections.items():
        if section not in raw or not isinstance(raw[section], dict):
            raise ConfigError(f"no configuration section {section!r}")
        raw[section] = {**raw[section], **{k: v for k, v in fields.items() if v is not None}}
    return parse_config(raw, "<overrides>", cfg.root)


class _Loader(yaml.SafeLoader):
    """`yaml.safe_load` without YAML 1.1's base-60 numbers: `layer: 15:30` is the range "15:30", not 930."""

    yaml_implicit_resolvers = {
        first: [
            (tag, re.compile(r"(?!.*:)" + rx.pattern, rx.flags) if tag.endswith((":int", ":float")) else rx)
            for tag, rx in resolvers
        ]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


def load_config(path: str | Path) -> PoolConfig:
    """Read and validate `adapters.yaml` (with `yaml.safe_load`).

    Raises:
        ConfigError: the file is missing, is not YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the adapter pool file ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {e.object[e.start]:#x} at {e.start}); save it as UTF-8"
        ) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # safe_load's loader, without base-60 numbers
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, str(path), path.resolve().parent)


def save_config(cfg: PoolConfig, path: str | Path) -> None:
    """Write a config back (used by the trainer to add adapters)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
