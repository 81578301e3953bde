"""A compiled decode path: static KV cache, compiled forward, the mixture as fixed-shape data.

One private view of the model is built once; each adapted linear layer in it is a `MixedLinear`
whose factor buffers have a fixed shape, A [M, R_max, D_in] and Bw [M, D_out, R_max] with M the
largest batch bucket and R_max = `max_mixture_rank` (K_max x R). A request fills them in place (zeros
beyond its own rank: they add nothing), so changing adapters, k or weights never recompiles. The
buffers belong to one batch at a time (a lock); the probe stays the eager, clean base model.
transformers compiles the decode step itself (`cache_implementation="static"` + `CompileConfig`);
batches are padded up to a bucket (1, 2, 4, 8) so each bucket compiles once, at start-up.

Requests this path cannot take (a bigger batch or mixture rank, a device map spread over several
devices) run on the eager path, which is also the reference the tests compare against.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import torch
from torch import Tensor, nn

from .anatomy import layers_path, linear_shape, module_paths
from .generation import run_generate
from .mixing import Key, MixedLinear, Mixture
from .views import private_view

log = logging.getLogger(__name__)


class CompiledDecoder:
    """Decode with a compiled, static-shape copy of the model whose mixture is buffer data.

    Args:
        model: the shared base model (never modified).
        keys: every (block, module) any adapter of the pool adapts.
        where: (block, module) -> (device, dtype) of that layer.
        max_rank: R_max of the buffers.
        buckets: batch sizes compiled for (requests are padded up to the next one).
        max_cache_len: the static KV cache length (prompt budget + longest answer).
    """

    def __init__(self, model: nn.Module, keys, where, max_rank: int, buckets, max_cache_len: int) -> None:
        self.buckets, self.max_rank, self.max_cache_len = sorted(buckets), max_rank, max_cache_len
        M = self.buckets[-1]
        layers, paths = layers_path(model), module_paths(model)
        self.buffers: dict[Key, tuple[Tensor, Tensor]] = {}
        replace = {}
        for b, m in sorted(keys):
            device, dtype = where((b, m))
            base = model.get_submodule(f"{layers}.{b}.{paths[m]}")
            D_in, D_out = linear_shape(base)
            A = torch.zeros(M, max_rank, D_in, device=device, dtype=dtype)  # [M, R_max, D_in]
            Bw = torch.zeros(M, D_out, max_rank, device=device, dtype=dtype)  # [M, D_out, R_max]
            self.buffers[(b, m)] = (A, Bw)
            replace[f"{layers}.{b}.{paths[m]}"] = lambda base, A=A, Bw=Bw: MixedLinear(base, A, Bw)
        self.view = private_view(model, replace)
        self.lock = threading.Lock()
        self.compiles = 0  # decode graphs compiled so far (the test counts that a new mixture adds none)

    def accepts(self, plan) -> bool:
        """Whether this path can run a plan (else it runs eager)."""
        B = plan.enc.input_ids.shape[0]
        if B > self.buckets[-1] or plan.enc.input_ids.shape[1] + plan.gen.max_new_tokens > self.max_cache_len:
            return False
        factors = plan.mixture.factors if plan.mixture is not None else {}
        return all(A.shape[1] <= self.max_rank and key in self.buffers for key, (A, _) in factors.items())

    def fill(self, mixture: Mixture | None, rows: int) -> None:
        """Write a mixture into the buffers in place: rows 0..rows-1 (a one-row mixture goes to each)."""
        factors = mixture.factors if mixture is not None else {}
        for key, (A_buf, B_buf) in self.buffers.items():
            A_buf.zero_()
            B_buf.zero_()
            if key in factors:
                A, Bw = factors[key]  # [M, R, D_in], [M, D_out, R]
                R = A.shape[1]
                A_buf[:rows, :R] = A.expand(rows, -1, -1) if A.shape[0] == 1 else A
                B_buf[:rows, :, :R] = Bw.expand(rows, -1, -1) if Bw.shape[0] == 1 else Bw

    def generation_config(self, cfg):
        from transformers import CompileConfig

        cfg = copy.deepcopy(cfg)
        cfg.cache_implementation = "static"
        cfg.max_cache_len = self.max_cache_len
        on_gpu = next(iter(self.buffers.values()))[0].device.type == "cuda"
        cfg.compile_config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead" if on_gpu else None)
        cfg.compile_config._compile_all_devices = True  # also on a CPU, where it measures faster
        return cfg

    def generate(self, plan, cfg, processors, criteria, streamer) -> Tensor:
        """`generate` on the compiled view, the batch padded up to its bucket (extra rows dropped)."""
        inputs = plan.enc.inputs()
        B = inputs["input_ids"].shape[0]
        bucket = next(s for s in self.buckets if s >= B)
        if bucket > B:  # repeat the last row: padding rows cost a little compute, not a recompile
            inputs = {k: torch.cat([v, v[-1:].expand(bucket - B, -1)]) for k, v in inputs.items()}
        with self.lock:
            self.fill(plan.mixture, bucket if plan.mixture is None or _one_row(plan.mixture) else B)
            before = _frames()
            out = run_generate(self.view, inputs, self.generation_config(cfg), processors, criteria, streamer)
            self.compiles += _frames() - before
        return out[:B]

    def warm_up(self, encode, tokenizer, log_fn=log.info) -> float:
        """Compile every bucket now (before the server takes requests). Returns seconds."""
        from .generation import generation_config
        from .options import GenerateOptions

        t0 = time.perf_counter()
        for bucket in self.buckets:
            enc = encode(["Hello!"] * bucket, 4, self.view.get_input_embeddings().weight.device)
            cfg = generation_config(GenerateOptions(max_new_tokens=4, min_new_tokens=4), tokenizer)
            with self.lock:
                run_generate(self.view, enc.inputs(), self.generation_config(cfg))
            log_fn(f"compiled decode path: batch {bucket} ready ({time.perf_counter() - t0:.0f} s)")
        return time.perf_counter() - t0


def _one_row(mixture: Mixture) -> bool:
    return all(A.shape[0] == 1 for A, _ in mixture.factors.values())


def _frames() -> int:
    """Frames torch.compile has compiled in this process (a recompilation adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])
