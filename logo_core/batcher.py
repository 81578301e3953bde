"""Micro-batching, a `Decoder` backend: concurrent one-row plans that arrive within a short window
share one decode (a GPU's forward pass costs about the same for 1 row as for 8).

Each request is validated, routed and given its mixture alone, in its caller's thread (so a batched
row has exactly the selection it would have alone); the worker then decodes up to `max_rows` plans
with the same generation settings as one batch whose rows carry their own mixtures, seeds, Stop
and streamer. Meant for a dedicated GPU: on a CPU there is little to gain (and left padding changes
the numbers slightly), and on ZeroGPU each call runs in a worker of its own.

Example:
    >>> engine.decoder.enable_batching(window_s=0.02, max_rows=8)
    >>> engine.generate("What is 47 + 38?").text       # concurrent calls now share decodes
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from torch import Tensor

from .decoder import Decoded, Plan


@dataclass
class _Job:
    plan: Plan  # of one prompt
    streamer: object | None
    stop: threading.Event
    future: Future = field(default_factory=Future)


class RowStreamer:
    """transformers' streamer interface over a batch: row i's tokens go to streamers[i] (or nowhere)."""

    def __init__(self, streamers: list) -> None:
        self.streamers = streamers

    def put(self, value: Tensor) -> None:
        for i, s in enumerate(self.streamers):
            if s is not None:  # the prompt comes as [B, T] (row: [T]), each step as [B] (row: [1])
                s.put(value[i] if value.dim() > 1 else value[i : i + 1])

    def end(self) -> None:
        for s in self.streamers:
            if s is not None:
                s.end()


class MicroBatcher:
    """Groups concurrent one-row plans into batched decodes.

    Args:
        decoder: the `Decoder` whose `merge` and `decode` run each batch.
        window_s: how long the first request of a batch waits for company.
        max_rows: the most requests in one decode.
    """

    def __init__(self, decoder, window_s: float = 0.02, max_rows: int = 8) -> None:
        self.decoder, self.window_s, self.max_rows = decoder, window_s, max_rows
        self._queue: queue.Queue[_Job] = queue.Queue()
        self.batches: list[int] = []  # rows of each decode run so far (the tests and the load test read it)
        threading.Thread(target=self._work, daemon=True, name="logo-batcher").start()

    def submit(self, plan: Plan, streamer=None, stop: threading.Event | None = None) -> Decoded:
        """Queue a one-row plan and wait for its row of a batched decode."""
        job = _Job(plan, streamer, stop or threading.Event())
        self._queue.put(job)
        return job.future.result()

    def _work(self) -> None:
        while True:
            jobs = [self._queue.get()]
            deadline = time.monotonic() + self.window_s
            while len(jobs) < self.max_rows:
                try:
                    jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:  # rows of one decode share the generation settings (seeds aside)
                key = tuple(sorted(job.plan.gen.model_dump(exclude={"seed"}).items()))
                groups.setdefault(key, []).append(job)
            for group in groups.values():
                self._run(group)

    def _run(self, jobs: list[_Job]) -> None:
        try:
            plan = self.decoder.merge([j.plan for j in jobs])
            t0 = time.perf_counter()
            new = self.decoder.decode(plan, RowStreamer([j.streamer for j in jobs]), [j.stop for j in jobs])
            seconds = time.perf_counter() - t0
            self.batches.append(len(jobs))
            for i, job in enumerate(jobs):
                job.future.set_result(Decoded(plan, i, new[i], seconds))
        except BaseException as e:  # every waiting caller hears of it; the worker keeps serving
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(e)
                if job.streamer is not None:
                    job.streamer.end()
