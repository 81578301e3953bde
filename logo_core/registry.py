"""`adapters.yaml` -> validated pydantic models.

The field descriptions below are the documentation: the CLI `--help` and the app's `info=` texts
reuse them. Every validation error is re-raised as `ConfigError` naming the file, the adapter and
the field, so a typo in a pool of hundreds of adapters is found at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

SignalName = Literal["norm", "entropy"]
ProbeInput = Literal["residual", "module"]
DType = Literal["fp32", "bf16", "int8"]

# Task-free prompts whose mean signal calibrates each adapter's overall loudness (LOGO.md, 2).
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
    model_config = ConfigDict(extra="forbid")


class BaseModelSpec(_Strict):
    id: str = Field("default", description="`default` (embedded SmolLM2-135M-Instruct), a hub id or a local directory.")
    gguf_file: str | None = Field(None, description="GGUF file inside `id`, when the weights are a GGUF.")
    dtype: DType = Field("fp32", description="Base weights: fp32, bf16, or int8 (dynamic quantisation, CPU).")
    device_map: str | None = Field(None, description="accelerate device_map, e.g. `auto` for a GPU.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")


class HubSource(_Strict):
    repo: str = Field(description="Hub repository id holding the adapter.")
    subfolder: str | None = Field(None, description="Folder inside the repository.")
    revision: str | None = None


class AdapterSpec(_Strict):
    name: str = Field(description="Unique adapter name, shown in charts and traces.", min_length=1)
    path: str | None = Field(None, description="Local PEFT adapter directory, relative to adapters.yaml.")
    hub: HubSource | None = Field(None, description="Hub location, used when `path` is not given.")
    description: str = Field("", description="Short task description (hover text, retrieval baseline).")
    family: str = Field("", description="Task family the adapter belongs to (charts group by it).")
    examples: list[str] = Field(default_factory=list, description="Example prompts (UI examples, retrieval).")

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


class RoutingDefaults(_Strict):
    k: int = Field(3, ge=1, description="How many adapters to merge per prompt.")
    signal: SignalName = Field("norm", description="`norm` (||o_i||) or `entropy` (1/H(softmax(o_i))).")
    calibrated: bool = Field(True, description="Divide each signal by its mean over neutral prompts.")
    layer: int | str | list[int] = Field(
        -1, description="Probe block: an index (negative counts from the end), `a:b` range, or a list."
    )
    module: str | list[str] = Field("q_proj", description="Adapted module(s) to probe, e.g. q_proj or `q_proj,v_proj`.")
    probe_input: ProbeInput = Field(
        "residual", description="`residual`: block input before its norm; `module`: the module's real input."
    )
    max_new_tokens: int = Field(64, ge=1, le=4096, description="Default generation length.")
    max_prompt_tokens: int = Field(2048, ge=16, description="Prompts longer than this are truncated with a notice.")


class PoolConfig(_Strict):
    base_model: BaseModelSpec = Field(default_factory=BaseModelSpec)
    defaults: RoutingDefaults = Field(default_factory=RoutingDefaults)
    neutral_prompts: list[str] = Field(default_factory=lambda: list(NEUTRAL_PROMPTS), min_length=1)
    adapters: list[AdapterSpec] = Field(default_factory=list)
    unseen_examples: list[UnseenExample] = Field(
        default_factory=list, description="Prompts of tasks without an adapter, shown as demo examples."
    )
    # Where relative adapter paths are resolved; set by `load_config`, not by the file.
    root: Path = Field(Path("."), exclude=True)

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
    field = ".".join(str(p) for p in loc) or "(entry)"
    return f"{file}: {where + ' ' if where else ''}field '{field}': {err['msg']}"


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
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, str(path), path.resolve().parent)


def save_config(cfg: PoolConfig, path: str | Path) -> None:
    """Write a config back (used by the trainer to add adapters)."""
    data = cfg.model_dump(mode="json", exclude_none=True)
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100), encoding="utf-8")
