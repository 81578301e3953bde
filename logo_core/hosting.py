"""Gradio plumbing the app needs on every host (a CPU, a GPU, a ZeroGPU Space); nothing LoGo-specific.

- `gpu`: run a callback on ZeroGPU's GPU when there, and turn ZeroGPU's refusals into a sentence; an optional
  gate bounds how many heavy callbacks run at once, counting those whose client has left.
- `bound_malloc`, `release_memory`: keep a many-threaded server's memory near its working set (glibc).
- `PrivateFiles`: downloads under random names, private to the server, deleted after a while.
- `lenient`: a slider whose out-of-range typed value reaches the callback (which validates it).
- `typed_endpoint`: a `gr.api` function with a typed signature and one documented line per parameter.

`import spaces` must come before anything touches CUDA, so app.py imports this module first.
"""

try:  # ZeroGPU's package; off ZeroGPU its decorator does nothing, and without it there is nothing to do
    import spaces
except ImportError:
    spaces = None

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import html
import inspect
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import gradio as gr

from .loading import on_zero_gpu  # after `import spaces`: loading imports torch

ZERO_GPU = spaces is not None and on_zero_gpu()  # as `spaces` reads it


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _glibc()
M_ARENA_MAX = -8  # glibc's malloc.h


def bound_malloc(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas (by default up to 8 per core, one taken by each thread that allocates
    at the same moment as another): gradio's worker threads otherwise each keep the freed memory of the
    largest request they ran. Call before the server starts its threads. False where not glibc."""
    return _LIBC is not None and _LIBC.mallopt(M_ARENA_MAX, arenas) == 1


def release_memory() -> None:
    """Give the memory a finished request freed back to the system (glibc keeps it in its arenas)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def gpu(
    fn: Callable,
    duration: int = 120,
    known: tuple[type[Exception], ...] = (),
    page: bool = False,
    gate: threading.Semaphore | None = None,
) -> Callable:
    """`fn` (a function or a generator) under `spaces.GPU` when `spaces` is installed; `known` errors
    (the app's bad-request errors) and ZeroGPU's quota and time-limit errors reach the visitor as a sentence.
    Memory the call freed is released when it ends.

    Args:
        page: the message is shown in the page's error modal, which renders HTML: escape it (an API
            client gets the text as it is).
        gate: held for the whole call (a stream: until it ends or is closed), before any GPU is taken.
            Gradio frees a request's concurrency slot when its client cancels, but a plain function's
            thread runs on to the end: only a gate shared by every heavy callback bounds the work in flight.
    """
    run = spaces.GPU(duration=duration)(fn) if spaces is not None else fn
    held = gate if gate is not None else contextlib.nullcontext()

    def plain(e: Exception) -> Exception:
        if isinstance(e, known):
            return gr.Error(html.escape(str(e), quote=False) if page else str(e))
        return zero_gpu_error(e) or e

    @contextlib.contextmanager
    def guarded():
        """The gate held, a known or ZeroGPU error turned into a sentence, the freed memory released."""
        with held:
            try:
                yield
            except Exception as e:
                raise plain(e) from None
            finally:
                release_memory()

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with guarded():
                yield from run(*args, **kwargs)

    else:

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with guarded():
                return run(*args, **kwargs)

    wrapper.gate = gate  # which gate, for a reader (and a test) to see
    return wrapper


def zero_gpu_error(e: Exception) -> gr.Error | None:
    """ZeroGPU's refusal (a gr.Error titled "ZeroGPU ...", its message HTML with links) as one plain
    sentence; None for any other error."""
    text = re.sub(r"<[^>]+>", "", f"{getattr(e, 'title', '')} {getattr(e, 'message', '') or e}")
    low = text.lower()
    if "zerogpu" not in low and not type(e).__module__.startswith("spaces"):
        return None
    if "quota" in low or "limit" in low:
        wait = re.search(r"try again in ([^.]+)", text, re.IGNORECASE)
        when = f"in {wait[1]}" if wait else "later"
        return gr.Error(f"The free GPU time of this Space is used up for now: try again {when}, or log in for more.")
    if "duration" in low or "abort" in low:
        return gr.Error("The answer needed more GPU time than one request may use: ask for fewer tokens.")
    return gr.Error("No GPU is free right now: try again in a minute.")


class PrivateFiles:
    """Files for one visitor to download.

    Each file gets a folder with a random name (not a content hash, so nobody can derive another
    visitor's URL), 0700 folders and 0600 files inside gradio's cache (served as they are, never
    copied under another name), deleted `ttl_s` seconds after they were made.
    """

    def __init__(self, ttl_s: float = 3600) -> None:
        cache = Path(gr.utils.get_upload_folder())
        cache.mkdir(parents=True, exist_ok=True)
        self.root, self.ttl_s = Path(tempfile.mkdtemp(prefix="private-", dir=cache)), ttl_s  # 0700
        atexit.register(shutil.rmtree, self.root, True)

    def prune(self) -> None:
        now = time.time()
        for folder in self.root.iterdir():
            if now - folder.stat().st_mtime > self.ttl_s:
                shutil.rmtree(folder, ignore_errors=True)

    def write(self, name: str, data: bytes) -> str:
        """Store `data` as `name` in a fresh random folder; returns its path (what gradio serves)."""
        self.prune()
        folder = self.root / secrets.token_urlsafe(18)
        folder.mkdir(mode=0o700)
        path = folder / name
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
            f.write(data)
        return str(path)


LENIENT = "logo-lenient"  # the class that marks a lenient slider (it survives gradio's rebuilds of the slider)
_strict_preprocess = gr.Slider.preprocess


def _preprocess(self: gr.Slider, payload):
    """gradio's check, except for a lenient slider: its number goes to the callback as typed."""
    return payload if LENIENT in (self.elem_classes or []) else _strict_preprocess(self, payload)


gr.Slider.preprocess = _preprocess


def lenient(*args, elem_classes: list[str] | None = None, **kwargs) -> gr.Slider:
    """A gr.Slider whose typed out-of-range number reaches the callback, which can say the valid range and
    put the last valid value back (gradio itself only refuses it).

    Marked by a class, not patched on the instance: any update of an output (even `gr.skip()`) makes gradio
    rebuild the slider for the session from its constructor arguments, and the class is one of them, so a
    callback need not write a slider back (a write-back of a slow event would undo what was typed since)."""
    return gr.Slider(*args, elem_classes=[*(elem_classes or []), LENIENT], **kwargs)


def typed_endpoint(
    call: Callable, name: str, summary: str, params: dict[str, tuple[object, str]], returns: object
) -> Callable:
    """A function for `gr.api` whose signature and docstring gradio turns into the API page.

    Args:
        call: called with every parameter by keyword.
        name: the function's (and endpoint's) name.
        summary: what the endpoint does (first line of the docstring).
        params: name -> (type hint, description), in order; the first is required, the others default to None.
        returns: the return type hint (a tuple type for several outputs).
    """

    def endpoint(*args, **kwargs):
        bound = endpoint.__signature__.bind(*args, **kwargs)
        bound.apply_defaults()
        return call(**bound.arguments)

    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = [
        inspect.Parameter(p, kind, annotation=t, **({"default": None} if i else {}))
        for i, (p, (t, _)) in enumerate(params.items())
    ]
    endpoint.__signature__ = inspect.Signature(signature, return_annotation=returns)
    endpoint.__annotations__ = {**{p: t for p, (t, _) in params.items()}, "return": returns}
    endpoint.__name__ = endpoint.__qualname__ = name
    endpoint.__doc__ = "\n".join([summary, "", "Args:", *(f"    {p}: {d}" for p, (_, d) in params.items())])
    return endpoint


def field_params(models: list, fields, notes: dict | None = None, hints: dict | None = None) -> dict:
    """Endpoint parameters (for `typed_endpoint`) from pydantic models' fields, all optional (None = the
    server's default): the field's type, or a Literal of its `json_schema_extra["choices"]`, and its
    description followed by `notes[field]`. `hints` replaces a field's type (what a JSON client sends)."""
    notes, hints, out = notes or {}, hints or {}, {}
    for f in fields:
        info = next(m.model_fields[f] for m in models if f in m.model_fields)
        extra = info.json_schema_extra  # may be a lazy mapping that looks empty until read: not `or {}`
        choices = extra.get("choices") if isinstance(extra, dict) else None
        hint = Literal[tuple(choices)] if choices else hints.get(f, info.annotation)
        out[f] = (hint | None, f"{info.description or ''}{notes.get(f, '')}")
    return out


def document_inputs(demo: gr.Blocks, dependency: dict, descriptions: list[str]) -> None:
    """Show one description per parameter of a `gr.api` endpoint on the API page (and in `view_api`)."""
    for comp, text in zip(demo.fns[dependency["id"]].inputs, descriptions):
        comp._api_info = {**comp._api_info, "description": text, "additional_description": text}
