"""Speed and memory benchmark: our engine against the base model, a reference-style PEFT
implementation of the authors' approach and PEFT's merge per request, side by side in one run.

    python -m logo_core.bench                  # the CPU run: docs/bench/bench.md, bench.json, amortisation.png
    python -m logo_core.bench --quick          # a smoke run (the test's), well under two minutes
    python -m logo_core.bench --device cuda --shape llama-8b   # the device run: docs/bench/gpu.md, gpu.json

| module | job |
|---|---|
| `common.py` | prompts, the per-token clock, medians of paired ratios, interleaving, the machine and its load |
| `synthetic.py` | random PEFT adapters, random-weight model shapes, engines over a loaded model |
| `contenders.py` | base, our engine, the reference-style implementation, PEFT merge |
| `measure.py` | device-agnostic measurements: end to end, routing, batching, micro-batching, compiled path |
| `speed.py` | CPU speed (#13): the dtype table, candidates for the app's 30 tokens/s |
| `memory.py` | resident memory per configuration, one subprocess each |
| `cpu.py`, `device.py` | the two runs |
| `report.py` | the markdown reports and the targets |
"""
