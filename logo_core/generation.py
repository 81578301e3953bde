"""Running transformers' `generate` for a request: one `GenerationConfig`, private seeds, Stop, streaming.

Everything here is transformers' own machinery (GenerationConfig, LogitsProcessor, StoppingCriteria,
TextIteratorStreamer); the only addition is a seeded sampler that owns its random generator, so a
seeded answer is the same whatever other requests sample at the same time.
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from .errors import RequestError
from .options import GenerateOptions


def generation_config(opts: GenerateOptions, tokenizer) -> GenerationConfig:
    """The one place request options become transformers' generation settings."""
    cfg = dict(
        max_new_tokens=opts.max_new_tokens,
        min_new_tokens=opts.min_new_tokens or None,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if opts.do_sample:
        return GenerationConfig(
            **cfg, do_sample=True, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k or None
        )
    return GenerationConfig(**cfg, do_sample=False, temperature=None, top_p=None, top_k=None)


class SeededSampler(LogitsProcessor):
    """Draws each row's next token with a random generator of its own (seeded per request) and
    leaves only that token possible, so transformers' sampler can but pick it.

    Runs last, after temperature, top-k and top-p have shaped the scores.
    """

    def __init__(self, seeds: list[int], device: torch.device) -> None:
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        probs = torch.softmax(scores.float(), dim=-1)  # [B, V]
        picks = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        out = torch.full_like(scores, -torch.inf)
        return out.scatter(1, picks, 0.0)


class StopOnEvent(StoppingCriteria):
    """Ends a row when its event is set (a Stop button, a closed stream); one event may serve every row."""

    def __init__(self, events: list[threading.Event]) -> None:
        self.events = events

    def __call__(self, input_ids: Tensor, scores: Tensor, **kwargs) -> Tensor:
        B = input_ids.shape[0]
        flags = [e.is_set() for e in self.events] if len(self.events) == B else [self.events[0].is_set()] * B
        if not any(flags):  # the usual step: no host-to-device copy
            return torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)


def new_seed() -> int:
    """A fresh seed for a sampled request that named none (recorded, so the answer can be replayed)."""
    return secrets.randbelow(2**63)


def run_generate(model, inputs: dict, cfg: GenerationConfig, processors=(), criteria=(), streamer=None) -> Tensor:
    """transformers' `generate`, inference mode, our processors and stopping criteria."""
    with torch.inference_mode():
        return model.generate(
            **inputs,
            generation_config=cfg,
            logits_processor=LogitsProcessorList(processors) if processors else None,
            stopping_criteria=StoppingCriteriaList(criteria) if criteria else None,
            streamer=streamer,
        )


def count_tokens(new_ids: Tensor, eos_token_id: int | None, pad_token_id: int | None = None) -> int:
    """Tokens a row generated: up to and including its first EOS, or up to the padding transformers
    writes after a row has finished (a stopped row in a batch)."""
    ends = (new_ids == eos_token_id).nonzero().flatten().tolist()
    pads = (new_ids == pad_token_id).nonzero().flatten().tolist() if pad_token_id not in (None, eos_token_id) else []
    return min([e + 1 for e in ends[:1]] + pads[:1] + [int(new_ids.shape[0])])


class GenerationStream:
    """Text pieces as they are decoded: `routing` is ready before the first piece, `result` (a
    `Generation`) after the last, and `close()` (or leaving the loop early) stops decoding.

    Example:
        >>> stream = engine.stream("Translate to French: the cat")
        >>> for piece in stream:
        ...     print(piece, end="")
        >>> stream.result.timings["tokens_per_s"], stream.result.stopped
    """

    def __init__(self, routing, pieces: Iterator[str], finish: Callable, stop: threading.Event) -> None:
        self.routing, self._pieces, self._finish, self._stop = routing, pieces, finish, stop
        self.result = None

    def __iter__(self) -> Iterator[str]:
        text, done = [], False
        try:
            for piece in self._pieces:
                text.append(piece)
                yield piece
            done = True
        finally:  # also when the consumer stops early (a UI Stop button closes the generator)
            stopped = not done or self._stop.is_set()
            self._stop.set()
            self.result = self._finish("".join(text), stopped)

    def close(self) -> None:
        """Stop decoding at the next token; the background generation thread then ends."""
        self._stop.set()


def stream_in_thread(decode: Callable, finish: Callable, tokenizer, routing, timeout: float) -> GenerationStream:
    """Run `decode(streamer, stop)` in a background thread and stream its text.

    Args:
        decode: (streamer, stop event) -> new token ids [1, T_new].
        finish: (what decode returned, text, stopped) -> the `Generation`.
        timeout: seconds to wait for the next piece before the stream fails (a stuck decoder).
    """
    from transformers import TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=timeout)
    box: dict = {}
    stop = threading.Event()

    def work() -> None:
        try:
            box["ids"] = decode(streamer, stop)
        except BaseException as e:  # surfaced to the consumer in done()
            box["error"] = e
            streamer.end()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()

    def done(text: str, stopped: bool):
        thread.join()
        if "error" in box:
            raise box["error"]
        return finish(box["ids"], text, stopped)

    return GenerationStream(routing, _pieces(streamer, timeout), done, stop)


def _pieces(streamer, timeout: float) -> Iterator[str]:
    """The streamer's pieces; a decoder silent for `timeout` seconds is an error, not a hang."""
    try:
        yield from streamer
    except queue.Empty:
        raise RequestError(f"no token came for {timeout} s: generation is stuck or the machine is overloaded") from None
