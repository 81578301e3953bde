"""`python -m logo_core.bench`: the CPU run, its `--quick` smoke run, or the device run (`--shape`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from . import __doc__ as DOC


def parser() -> argparse.ArgumentParser:
    from .device import SECTIONS
    from .synthetic import SHAPES

    ap = argparse.ArgumentParser(
        prog="python -m logo_core.bench",
        description=DOC.split("\n\n")[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    ap.add_argument("--quick", action="store_true", help="CPU run: small pools, few tokens, one repetition (smoke run)")
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default docs/bench; docs/bench/quick with --quick, docs/bench/tiny with --shape tiny)",
    )
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's; with --quick, 1 on a busy machine)"
    )
    ap.add_argument("--shape", choices=list(SHAPES), help="device run on random weights of this model's shape")
    ap.add_argument("--device", default="auto", help="device run: base_model.device (auto, cpu, cuda, cuda:N)")
    ap.add_argument(
        "--only", default=",".join(SECTIONS), help=f"device run: sections to measure ({','.join(SECTIONS)})"
    )
    ap.add_argument(
        "--tokenizer",
        default=None,
        help="device run: a folder with SmolLM2's tokenizer files (default: the embedded model's)",
    )
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.memory_child:
        from .memory import memory_child

        memory_child(json.loads(args.memory_child))
        return
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    from .common import training_running

    if training_running():
        log("warning: a training job (logo_core.train) is running: timings will be noisy")
    if args.shape:
        from . import device

        sections = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(sections) - set(device.SECTIONS)
        if unknown:
            raise SystemExit(f"--only: unknown section(s) {sorted(unknown)}; choose from {','.join(device.SECTIONS)}")
        out = args.out or Path("docs/bench/tiny" if args.shape == "tiny" else "docs/bench")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        device.run(args.shape, args.device, out, sections, args.tokenizer, log)
        log(f"wrote {out}/gpu.json, gpu.md")
        return
    from . import cpu

    out = args.out or Path("docs/bench/quick" if args.quick else "docs/bench")
    # A smoke run on a busy machine: one thread degrades gently, several threads spin on each other.
    threads = args.threads or (1 if args.quick and os.getloadavg()[0] > 1.0 else None)
    settings = cpu.QUICK if args.quick else cpu.FULL
    res = cpu.run(settings, out, "quick" if args.quick else "full", log, threads)
    print((out / "bench.md").read_text())
    log(f"wrote {out}/bench.json, bench.md, amortisation.png/.html ({res['meta']['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
