"""Ship the retrained pool: assets/pool_next/ (written by `make pool`) becomes assets/adapters/.

Refuses until every adapter task of the suite has a finished adapter there. Then: each adapter replaces
the shipped one of its task, adapters whose task left the suite are deleted (their adapters.yaml entries
too), adapters.yaml's `unseen_examples:` are rewritten from the tasks and each adapter's examples are
picked among its task's training prompts (`scripts/pick_examples.py`: those it answers right), the loss curves
move to docs/pool_losses.jsonl, and the shipped background calibration is recomputed for the new weights.

    python scripts/swap_pool.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core.registry import load_config  # noqa: E402
from logo_core.tasks import adapter_tasks  # noqa: E402
from logo_core.train import register, round_robin  # noqa: E402


def main() -> int:
    nxt, shipped, config = ROOT / "assets" / "pool_next", ROOT / "assets" / "adapters", ROOT / "adapters.yaml"
    tasks = round_robin(adapter_tasks())
    missing = [t.name for t in tasks if not (nxt / t.name / "adapter_model.safetensors").is_file()]
    if missing:
        print(f"not yet: {len(missing)} of {len(tasks)} adapters are missing from {nxt}: {', '.join(missing)}")
        return 1
    names = {t.name for t in tasks}
    for spec in load_config(config).adapters:
        if spec.name not in names:
            shutil.rmtree(shipped / spec.name, ignore_errors=True)
            print(f"retired {spec.name}")
    for t in tasks:
        shutil.rmtree(shipped / t.name, ignore_errors=True)
        shutil.move(str(nxt / t.name), str(shipped / t.name))
        register(t, shipped / t.name, config, keep=names)
    if (nxt / "losses.jsonl").is_file():
        shutil.move(str(nxt / "losses.jsonl"), str(ROOT / "docs" / "pool_losses.jsonl"))
    shutil.rmtree(nxt)
    print(f"shipped {len(tasks)} adapters; picking their examples, then the background calibration ...")
    return subprocess.call([sys.executable, str(ROOT / "scripts" / "pick_examples.py")]) or subprocess.call(
        [sys.executable, str(ROOT / "scripts" / "ship_calibration.py")]
    )


if __name__ == "__main__":
    sys.exit(main())
