"""What every measurement shares: the prompts, a per-token clock, medians of paired ratios, the machine.

A timed request is `Sample`: its setup (routing, mixing) and a stamp per generated token, read by a
streamer (`Clock`) that transformers' `generate` feeds. Contenders are interleaved and repeated;
a ratio is the median of sample-by-sample ratios (same prompt, same round), which cancels the slow
drifts of a shared, noisy machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

# Varied prompts (arithmetic, translation, code, QA, NLI, writing, ...): the first few are the
# timed requests, all of them are the routing-agreement and batched sets.
PROMPTS = [
    "What is 47 + 38? Answer with the number only.",
    "Translate to French: The weather is nice today and we are going to the beach.",
    "Write a Python function that returns the factorial of n.",
    "Premise: A man is playing a guitar on stage. Hypothesis: A person is making music. Entailment, neutral or contradiction?",
    "Who wrote the novel Pride and Prejudice?",
    "Summarise in one sentence: The city council met on Monday to discuss the new park. Residents asked for more trees and a playground.",
    "Sort these numbers from smallest to largest: 9, 2, 7, 4, 1.",
    "What is the capital of Australia?",
    "Convert this table to a sentence: name=Alice | age=30 | city=Paris",
    "Is the following sentence grammatical? 'She go to school every day.'",
    "Give three synonyms for the word 'happy'.",
    "If a train travels 60 km in 45 minutes, what is its average speed in km/h?",
    "Explain what a hash table is in two sentences.",
    "Translate to German: I would like a cup of coffee, please.",
    "What is the opposite of 'ancient'?",
    "Write a haiku about autumn leaves.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
    "Fix the bug: def add(a, b): return a - b",
    "Name the largest planet in the solar system.",
    "Does the sentence 'The cat sat on the mat' contain a verb? Answer yes or no.",
    "Count the vowels in the word 'benchmark'.",
    "What year did the first person walk on the Moon?",
    "Rewrite in the passive voice: The chef cooked a delicious meal.",
    "What is 12 times 13?",
    "Classify the sentiment of this review: 'The food was cold and the service was slow.'",
    "Write a SQL query that selects all users older than 30.",
    "What does the acronym CPU stand for?",
    "Continue the sequence: 2, 4, 8, 16, ...",
    "Translate to Spanish: Where is the train station?",
    "Give a short definition of photosynthesis.",
    "Is 97 a prime number?",
    "Reverse the string 'routing'.",
    "List two advantages of renewable energy.",
    "What is the boiling point of water at sea level in Celsius?",
    "Turn this into a question: The museum opens at nine.",
    "Which word does not belong: apple, banana, carrot, grape?",
]

# --------------------------------------------------------------------------- statistics


def med(xs: Sequence[float]) -> float:
    """Median of the finite values (nan if none)."""
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def paired_ratio(xs: Sequence[float], base: Sequence[float]) -> float:
    """Median of sample-by-sample ratios x_i / base_i (same prompt, same round)."""
    return med([x / b for x, b in zip(xs, base, strict=True)])


@contextlib.contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads set to `threads` inside the block, restored after (None: unchanged)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def sync(device: torch.device | str | None) -> None:
    """Wait for the device's queued work (a CUDA clock reading is only true after it)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- one timed request


class Clock:
    """A generation streamer that stamps the time of each new token (the first `put` is the prompt).

    transformers hands `put` each step's tokens copied to the CPU, so a stamp is taken after the
    device finished that step.
    """

    def __init__(self) -> None:
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if self._prompt_seen:
            self.times.append(time.perf_counter())
        self._prompt_seen = True

    def end(self) -> None:
        pass


@dataclass
class Sample:
    """One timed request, seconds from its start: setup (encode, route, build the mixture), each
    new token's stamp, and the end (`generate` returned, text decoded, per-request cleanup done)."""

    setup_s: float
    token_s: list[float]
    total_s: float

    @property
    def decode_tps(self) -> float:
        """1 / the median time between two new tokens: robust to a stray pause of a shared CPU."""
        gaps = [b - a for a, b in zip(self.token_s, self.token_s[1:])]
        return 1.0 / statistics.median(gaps) if gaps else float("nan")

    @property
    def first_token_s(self) -> float:
        return self.token_s[0]

    def latency(self, n: int) -> float:
        """End-to-end time of the same request stopped after n tokens: up to the n-th token, plus
        what follows the last token (end of `generate`, decoding the text, cleanup)."""
        return self.token_s[n - 1] + (self.total_s - self.token_s[-1])


def timed(n: int, prepare: Callable[[], Callable[[Clock], object]], device=None) -> Sample:
    """Run prepare() (encode, route, mix; returns a generate function), then generate n tokens."""
    clock = Clock()
    sync(device)
    t0 = time.perf_counter()
    generate = prepare()
    sync(device)
    t1 = time.perf_counter()
    with torch.inference_mode():
        generate(clock)
    sync(device)
    t2 = time.perf_counter()
    assert len(clock.times) == n, f"generated {len(clock.times)} tokens instead of {n}"
    return Sample(t1 - t0, [t - t0 for t in clock.times], t2 - t0)


def seconds(fn: Callable[[], object], device=None) -> float:
    """Wall time of fn(), the device's queued work included."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def interleave(contenders: Sequence, prompts: Sequence[str], n: int, reps: int, log) -> dict[str, list[Sample]]:
    """Every contender on every prompt (n new tokens), interleaved; the order rotates each round.

    A contender is anything with `name` and `request(prompt, n) -> Sample`. Each one first runs a
    2-token request that is not timed (first-use costs: stacks, calibration, allocator, kernels).
    """
    samples: dict[str, list[Sample]] = {c.name: [] for c in contenders}
    for c in contenders:
        c.request(prompts[0], 2)
    rnd = 0
    for rep in range(reps):
        for i, p in enumerate(prompts):
            shift = rnd % len(contenders)
            for c in [*contenders[shift:], *contenders[:shift]]:
                samples[c.name].append(c.request(p, n))
            rnd += 1
            log(f"  round {rep + 1}/{reps}, prompt {i + 1}/{len(prompts)} done")
    return samples


# --------------------------------------------------------------------------- the machine


def machine(device: torch.device | None = None) -> dict:
    """CPU, GPU (when used), library versions: the report's header."""
    import peft
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%d %H:%M"),
    }
    if device is not None and device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
        out["cuda"] = torch.version.cuda
    return out


def training_running() -> bool:
    """Whether this project's trainer (`python -m logo_core.train`) runs on the machine."""
    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info.get("cmdline") or []
        if "logo_core.train" in cmd or any(part.endswith("logo_core/train.py") for part in cmd):
            return True
    return False


def busy_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds busy on the whole machine, CPU seconds of this process and its children)."""
    import psutil

    t = psutil.cpu_times()
    own = psutil.Process().cpu_times()
    return t.user + t.nice + t.system, own.user + own.system + own.children_user + own.children_system


class Load:
    """How busy the machine was during a run: other processes' cores, load average, the trainer."""

    def __init__(self) -> None:
        self.t0, self.busy0 = time.perf_counter(), busy_cpu_seconds()
        self.meta = {"training_at_start": training_running(), "load_start": os.getloadavg()[0]}

    def finish(self) -> dict:
        wall = time.perf_counter() - self.t0
        busy1 = busy_cpu_seconds()
        # Cores other processes kept busy, on average: the noise on our timings.
        others = max(0.0, (busy1[0] - self.busy0[0]) - (busy1[1] - self.busy0[1])) / wall
        meta = {**self.meta, "training_at_end": training_running(), "load_end": os.getloadavg()[0]}
        meta |= {"wall_s": wall, "others_cores": others}
        meta["cpu_free"] = not (meta["training_at_start"] or meta["training_at_end"]) and others < 0.15
        return meta
