"""Load test of the running app through its public API (gradio_client), as many visitors at once.

    python -m logo_core.loadtest --users 16 --seconds 300            # starts `python app.py` itself
    python -m logo_core.loadtest --url http://127.0.0.1:7860 --users 4 --seconds 60

Each simulated user loops until the time is up, mixing /route, /generate, generations abandoned
half-way (the job cancelled, as a closed tab does) and bad inputs (which must come back as the
app's clear message, never as a crash). At the end every distinct request is made again alone and
its answer compared with what the users got under load. Reports requests served, errors, p50/p95
latency per kind, and the server's resident memory at start and end (when it started the server).
Not a unit test: a measurement, written to `--out` (JSON and markdown).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


def pool_prompts(config: Path = Path("adapters.yaml")) -> list[str]:
    """The prompts visitors send: the pool's own examples (one per adapter) and the unseen tasks'."""
    from .registry import load_config

    cfg = load_config(config)
    return [a.examples[0] for a in cfg.adapters if a.examples] + [u.prompt for u in cfg.unseen_examples]


SETTINGS = [{}, {"k": 2}, {"k": 3, "signal": "entropy"}, {"layer": "-1", "module": "q_proj"}]
BAD = [  # (arguments, a word the app's message must contain)
    ({"prompt": "", "api_name": "/route"}, "prompt"),
    ({"prompt": "hi", "k": 0, "api_name": "/route"}, "`k`"),
    ({"prompt": "hi", "layer": "zz", "api_name": "/route"}, "`layer`"),
    ({"prompt": "hi", "temperature": -1.0, "do_sample": True, "api_name": "/generate"}, "`temperature`"),
    ({"prompt": "\u200b\u200b", "api_name": "/generate"}, "prompt"),
]
WEIGHTS = {"route": 4, "generate": 3, "cancelled": 2, "bad": 1}
NEW_TOKENS = 12


@dataclass
class Tally:
    """What all users saw: latencies per kind, unexpected errors, the answer of each distinct request."""

    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[str] = field(default_factory=list)
    answers: dict[tuple, set[str]] = field(default_factory=lambda: defaultdict(set))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latency[kind].append(seconds)


def request_key(prompt: str, settings: dict) -> tuple:
    return prompt, tuple(sorted(settings.items()))


def user(url: str, seed: int, deadline: float, tally: Tally, prompts: list[str]) -> None:
    """One visitor: weighted random actions until the deadline."""
    from gradio_client import Client

    rng = random.Random(seed)
    client = Client(url, verbose=False)
    kinds = [k for k, w in WEIGHTS.items() for _ in range(w)]
    while time.monotonic() < deadline:
        kind = rng.choice(kinds)
        prompt, settings = rng.choice(prompts), dict(rng.choice(SETTINGS))
        t0 = time.perf_counter()
        try:
            if kind == "route":
                r = client.predict(prompt=prompt, **settings, api_name="/route")
                with tally.lock:
                    tally.answers[("route", *request_key(prompt, settings))].add(json.dumps(r["selected"]))
            elif kind == "generate":
                text, _ = client.predict(prompt=prompt, **settings, max_new_tokens=NEW_TOKENS, api_name="/generate")
                with tally.lock:
                    tally.answers[("generate", *request_key(prompt, settings))].add(text)
            elif kind == "cancelled":
                job = client.submit(prompt=prompt, **settings, max_new_tokens=64, api_name="/generate")
                time.sleep(rng.uniform(0.2, 2.0))
                job.cancel()
            else:
                args, word = rng.choice(BAD)
                try:
                    client.predict(**args)
                    tally.unexpected.append(f"bad input accepted: {args}")
                except Exception as e:  # the app's clear message, relayed by gradio_client
                    if word not in str(e):
                        tally.unexpected.append(f"unclear error for {args}: {e}")
            tally.add(kind, time.perf_counter() - t0)
        except Exception as e:
            with tally.lock:
                tally.unexpected.append(f"{kind} {prompt!r} {settings}: {type(e).__name__}: {e}")


def alone(url: str, tally: Tally) -> list[str]:
    """Every distinct request once more, alone: answers that differ from the ones under load."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    differ = []
    for (kind, prompt, settings), seen in sorted(tally.answers.items()):
        settings = dict(settings)
        if kind == "route":
            got = json.dumps(client.predict(prompt=prompt, **settings, api_name="/route")["selected"])
        else:
            got = client.predict(prompt=prompt, **settings, max_new_tokens=NEW_TOKENS, api_name="/generate")[0]
        if seen != {got}:
            differ.append(f"{kind} {prompt!r} {settings}: under load {sorted(seen)}, alone {got!r}")
    return differ


def rss_mb(pid: int) -> float:
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def start_app(port: int) -> subprocess.Popen:
    """`python app.py` on a port; returns once it answers HTTP."""
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    for _ in range(600):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.5)
            if proc.poll() is not None:
                raise SystemExit("app.py exited before it served") from None
    raise SystemExit("app.py did not serve within 5 minutes")


def percentile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] if len(xs) > 1 else (xs[0] if xs else float("nan"))


def warm_up(url: str, prompt: str) -> None:
    """Each setting routed and answered once, alone: what one visitor of each kind makes the server load
    (calibrations, probe stacks, caches), so the load's own growth can be told from it."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    for settings in SETTINGS:
        client.predict(prompt=prompt, **settings, api_name="/route")
        client.predict(prompt=prompt, **settings, max_new_tokens=NEW_TOKENS, api_name="/generate")


def run(url: str, users: int, seconds: float, pid: int | None, settle_s: float = 10.0) -> dict:
    tally = Tally()
    prompts = pool_prompts()
    rss0 = rss_mb(pid) if pid else None
    warm_up(url, prompts[0])
    rss_warm = rss_mb(pid) if pid else None
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=user, args=(url, i, deadline, tally, prompts)) for i in range(users)]
    samples: list[tuple[float, float]] = []  # (s since start, MB): a plateau or a climb
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if pid:
            samples.append((time.perf_counter() - t0, rss_mb(pid)))
        time.sleep(1.0)
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    time.sleep(settle_s)  # generations whose client cancelled run on to their end
    rss1 = rss_mb(pid) if pid else None
    half = [mb for s, mb in samples if s <= wall / 2]
    differ = alone(url, tally)
    return {
        "users": users,
        "seconds": seconds,
        "wall_s": wall,
        "served": {k: len(v) for k, v in tally.latency.items()},
        "p50_s": {k: statistics.median(v) for k, v in tally.latency.items()},
        "p95_s": {k: percentile(v, 95) for k, v in tally.latency.items()},
        "unexpected_errors": tally.unexpected,
        "distinct_requests": len(tally.answers),
        "differ_from_alone": differ,
        "rss_start_mb": rss0,
        "rss_warm_mb": rss_warm,
        "settle_s": settle_s,
        "rss_half_mb": half[-1] if half else None,
        "rss_peak_mb": max([mb for _, mb in samples], default=None),
        "rss_end_mb": rss1,
        "rss_samples": samples,
    }


def markdown(res: dict) -> str:
    kinds = sorted(res["served"])
    lines = [
        f"{res['users']} simulated users through gradio_client for {res['seconds']:.0f} s "
        f"(wall {res['wall_s']:.0f} s): {sum(res['served'].values())} requests served.",
        "",
        "| kind | served | p50 s | p95 s |",
        "|---|---:|---:|---:|",
        *(f"| {k} | {res['served'][k]} | {res['p50_s'][k]:.2f} | {res['p95_s'][k]:.2f} |" for k in kinds),
        "",
        f"Unexpected errors: {len(res['unexpected_errors'])}. Distinct requests: {res['distinct_requests']}, "
        f"answers that differ from the same request made alone: {len(res['differ_from_alone'])}.",
    ]
    if res["rss_start_mb"] is not None:
        start, warm, end = res["rss_start_mb"], res["rss_warm_mb"], res["rss_end_mb"]
        lines.append(
            f"Server resident memory: {start:.0f} MB at start, {warm:.0f} MB after one request of each setting "
            f"alone, {end:.0f} MB {res['settle_s']:.0f} s after the load ended: {end - start:+.0f} MB from the start, "
            f"{end - warm:+.0f} MB from the warm server. Under load: {res['rss_half_mb']:.0f} MB half-way, "
            f"peak {res['rss_peak_mb']:.0f} MB."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m logo_core.loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running app (default: start `python app.py` on a free port)")
    p.add_argument("--users", type=int, default=16)
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--out", type=Path, default=Path("docs/loadtest"), help="folder for loadtest.json and .md")
    args = p.parse_args(argv)
    proc = None
    url = args.url
    if url is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = start_app(port)
        url = f"http://127.0.0.1:{port}/"
        time.sleep(2)  # the first page build
    try:
        res = run(url, args.users, args.seconds, proc.pid if proc else None)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "loadtest.json").write_text(json.dumps(res, indent=1))
    (args.out / "loadtest.md").write_text(markdown(res))
    print(markdown(res))
    return 0 if not res["unexpected_errors"] and not res["differ_from_alone"] else 1


if __name__ == "__main__":
    sys.exit(main())
