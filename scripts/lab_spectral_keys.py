"""A routing idea measured on dev only (issue 19): route by the leading singular directions of each adapter.

The 300-step adapters route worse than the 150-step ones (docs/pool.md). If longer training adds minor
directions to what each adapter reads, while the task lives in its leading ones, then reading only the top-k
right singular directions of A (or of the update s B A), or weighting them by sigma^p (p = 0 is the shipped
`subspace` signal, p = 1 the `norm` one), should route better, on both pools. Label-free; scored with the
shipped default's other axes on dev and people_dev prompts of the tasks both pools have, paired against the
default (test prompts never read). The result is kept in docs/lab/spectral_keys.md.

    python scripts/lab_spectral_keys.py [--pool assets/pool_next] [--cache runs/lab] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from compare_pools import dev_prompts, shared_pools  # noqa: E402

from logo_core import lab as L  # noqa: E402
from logo_core.ideas import hit_rows  # noqa: E402
from logo_core.intervals import bootstrap, fmt, paired  # noqa: E402


def spectral(pf: L.PoolFactors, k: int | None = None, p: float = 0.0, of: str = "update") -> L.PoolFactors:
    """Factors whose `norm` signal is ||diag(w) V^T h||: V the right singular vectors of s B A (`update`) or of A,
    w = sigma^p, zero past the k-th. With p = 0 and every direction kept it is the `subspace` signal."""
    A2, B2 = {}, {}
    for m in L.MODULES:
        A, B = pf.A[m], pf.B[m]  # [L, N, R, D], [L, N, O, R]
        R = A.shape[2]
        _, S, Vh = torch.linalg.svd(B @ A if of == "update" else A, full_matrices=False)
        S, Vh = S[..., :R], Vh[..., :R, :]
        w = S.clamp_min(1e-12) ** p
        if k is not None:
            w = w * (torch.arange(R) < k)
        w = torch.where(S > 1e-6 * S[..., :1], w, torch.zeros_like(w))  # unadapted blocks read nothing
        A2[m] = w[..., None] * Vh
        B2[m] = torch.zeros_like(B)
        B2[m][..., :R, :R] = torch.eye(R)
    return L.PoolFactors(pf.names, pf.families, A2, B2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"), help="the shipped pool")
    p.add_argument("--pool", default=str(ROOT / "assets" / "pool_next"), help="the retrained pool's folder")
    p.add_argument("--cache", default=str(ROOT / "runs" / "lab"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "lab" / "spectral_keys.md"))
    args = p.parse_args()
    from logo_core.loading import load

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    shipped, pools, both = shared_pools(args.config, args.pool)
    prompts = dev_prompts(shipped, 10)  # compare_pools.py's prompts: its cached probe vectors serve here
    loaded = load(shipped.base_model)
    vectors = L.cached_vectors(shipped, loaded, prompts, Path(args.cache))
    st = L.library_setting(shipped.defaults)
    as_norm = replace(st, variant="norm")
    lines = []
    for name, cfg in pools.items():
        pf = L.pool_factors(cfg, loaded.model)
        variants = {
            "default (`subspace`)": (pf, st),
            "sigma^0, every direction (= `subspace`)": (spectral(pf), as_norm),
        }
        for k in (2, 4):
            variants[f"top-{k} of s B A"] = (spectral(pf, k=k), as_norm)
            variants[f"top-{k} of A"] = (spectral(pf, k=k, of="A"), as_norm)
        for pw in (0.25, 0.5):
            variants[f"sigma^{pw} of s B A"] = (spectral(pf, p=pw), as_norm)
            variants[f"sigma^{pw} of A"] = (spectral(pf, p=pw, of="A"), as_norm)
        base: dict[str, torch.Tensor] = {}
        for vname, (factors, setting) in variants.items():
            lab = L.Lab(prompts, vectors, factors)
            row = [name, vname]
            for split in ("dev", "people_dev"):
                lab.index["shared"] = torch.tensor([i for i in lab.index[split].tolist() if prompts[i].task in both])
                h = hit_rows(lab, lab.scores(setting, lab.index["shared"]), "shared")["own_top1"]
                base.setdefault(split, h)
                row += [fmt(bootstrap(h)), fmt(paired(h, base[split]))]
            lines.append("| " + " | ".join(row) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(
        [
            "# Routing by each adapter's leading singular directions (a routing idea, dev only)",
            "",
            f"{len(both)} tasks that both pools have, 10 dev prompts a task of each kind; default `{st.name}`; the "
            "other rows read ||diag(w) V^T h|| with the default's other axes, V the right singular vectors of s B A "
            "or of A, w = sigma^p, zero past the k-th; own top-1, paired against each pool's default; 95% bootstrap "
            f"intervals. `python scripts/lab_spectral_keys.py --pool {args.pool}` ({time.perf_counter() - t0:.0f} s).",
            "",
            "| pool | routing key | dev own top-1 | vs default (paired) | people_dev own top-1 | vs default (paired) |",
            "|---|---|---:|---:|---:|---:|",
            *lines,
        ]
    )
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
