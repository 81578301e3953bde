"""A routing idea measured on dev only (issue 19): probe the first tokens of the base model's own answer too.

People-style prompts wrap the request in other words ("A bag of flour weighs 1.5 kg. How many grams is that?"),
and the prompt's hidden states carry all of them. The base model's first answer tokens ("1.5 kg is ...") are
about what is asked, so their hidden states may tell the adapters apart where the prompt's do not. Label-free
and cheap in the engine: M greedy decode steps of the base before routing. Each prompt is answered greedily for
M tokens by the base, the whole (prompt + answer) is read once more, and the residual stream is pooled over the
answer's tokens (up to its end-of-turn); scored with the shipped default's other axes, paired against it on the
lab's dev and people_dev prompts (test prompts never read). The result is kept in docs/lab/answer_probe.md.

    python scripts/lab_answer_probe.py [--config adapters.yaml] [--cache runs/lab] [--tokens 8]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from logo_core import lab as L  # noqa: E402
from logo_core.ideas import RULE_HEADER, pooling_labs, rule_lines  # noqa: E402

POOLS = ("last", "mean", "answer_mean_4", "answer_mean", "answer_last", "prompt_and_answer_mean")


def collect(model, tok, encoder, texts: list[str], tokens: int, batch: int = 16) -> torch.Tensor:
    """[P, L, len(POOLS), D] residual inputs of every block, pooled over the prompt and over the base's answer."""
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    out = []
    for s in range(0, len(texts), batch):
        enc = encoder(texts[s : s + batch], tokens, torch.device("cpu"))
        B, T = enc.attention_mask.shape
        with torch.inference_mode():
            ids = model.generate(
                **enc.inputs(), max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                eos_token_id=stop,
            )  # fmt: skip
        gen = ids[:, T:]
        gen = torch.cat([gen, torch.full((B, tokens - gen.shape[1]), stop)], 1)  # every row stopped early
        answer = (gen == stop).long().cumsum(-1) == 0  # [B, M] the answer's tokens before its end-of-turn
        seq = torch.cat([enc.input_ids, gen], 1)
        mask = torch.cat([enc.attention_mask, answer.long()], 1)
        with torch.inference_mode():
            hs = model(input_ids=seq, attention_mask=mask, output_hidden_states=True).hidden_states
        X = torch.stack([h.float() for h in hs[:-1]], 1)  # [B, L, T+M, D]
        user = enc.user.float()  # [B, T] the user's own tokens
        last_prompt = torch.zeros(B, T + tokens)
        last_prompt[:, T - 1] = 1
        ans = torch.cat([torch.zeros(B, T), answer.float()], 1)
        none = ans.sum(-1, keepdim=True) == 0  # the base ended its turn at once: the prompt's last token stands in
        ans = torch.where(none, last_prompt, ans)
        ans4 = ans.clone()
        ans4[:, T + 4 :] = 0
        ans4 = torch.where(ans4.sum(-1, keepdim=True) == 0, last_prompt, ans4)
        idx = torch.arange(T + tokens).expand(B, -1)
        last_answer = torch.nn.functional.one_hot((idx * (ans > 0)).argmax(-1), T + tokens).float()
        both = torch.cat([user, torch.zeros(B, tokens)], 1) + ans * ~none
        weights = [
            last_prompt,
            torch.cat([user, torch.zeros(B, tokens)], 1),
            ans4,
            ans,
            last_answer,
            both,
        ]
        pooled = [torch.einsum("bt,bltd->bld", w / w.sum(-1, keepdim=True), X) for w in weights]
        out.append(torch.stack(pooled, 2).half())
        print(f"probe vectors: {min(s + batch, len(texts))} / {len(texts)}", flush=True)
    return torch.cat(out)


def cost(model, tok, encoder, text: str, tokens: int, reps: int = 12) -> tuple[float, float]:
    """Median seconds of the probe pass alone and of the answer probe (M greedy tokens, then the read), side by
    side in one run: what routing would cost with it."""
    import statistics

    enc = encoder([text], tokens, torch.device("cpu"))
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    a, b = [], []
    for _ in range(reps):
        t = time.perf_counter()
        with torch.inference_mode():
            model(**enc.inputs(), output_hidden_states=True)
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        with torch.inference_mode():
            ids = model.generate(
                **enc.inputs(), max_new_tokens=tokens, do_sample=False, pad_token_id=tok.pad_token_id,
                eos_token_id=stop, min_new_tokens=tokens,
            )  # fmt: skip
            model(input_ids=ids, output_hidden_states=True)
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "adapters.yaml"))
    p.add_argument("--cache", default=str(ROOT / "runs" / "lab"))
    p.add_argument("--tokens", type=int, default=8, help="answer tokens the base writes before routing (>= 4)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "docs" / "lab" / "answer_probe.md"))
    args = p.parse_args()
    from logo_core.loading import load
    from logo_core.prompts import PromptEncoder
    from logo_core.registry import load_config

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    cfg = load_config(args.config)
    loaded = load(cfg.base_model)
    prompts = [q for q in L.prompt_sets(cfg, 10, 20) if q.split in ("dev", "background", "neutral")]
    prompts += L.people_dev_prompts(10)
    texts = [q.text for q in prompts]
    key = [cfg.base_model.model_dump(mode="json"), texts, args.tokens]
    key = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    path = Path(args.cache) / f"answer-vectors-{key}.pt"
    encoder = PromptEncoder(loaded.tokenizer, cfg.engine.max_prompt_tokens, 8192)
    cached = path.is_file()
    if cached:
        V = torch.load(path, weights_only=True)
    else:
        V = collect(loaded.model, loaded.tokenizer, encoder, texts, args.tokens)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(V, path)
    t_probe, t_answer = cost(loaded.model, loaded.tokenizer, encoder, texts[0], args.tokens)
    pool = L.pool_factors(cfg, loaded.model)
    st = L.library_setting(cfg.defaults)
    one = replace(st, pooling="last")  # each pooling's vectors scored alone, then averaged as `both` does
    labs = pooling_labs(prompts, V, pool, list(POOLS))
    M = args.tokens
    lines = []
    for split in ("dev", "people_dev"):
        idx = labs["last"].index[split]
        S = {n: labs[n].scores(one, idx) for n in POOLS}
        rules = {
            "default: last + mean": (S["last"] + S["mean"]) / 2,
            "last + mean + answer mean (4 tokens)": (S["last"] + S["mean"] + S["answer_mean_4"]) / 3,
            f"last + mean + answer mean ({M} tokens)": (S["last"] + S["mean"] + S["answer_mean"]) / 3,
            f"last + mean + 0.5 x answer mean ({M} tokens)": (S["last"] + S["mean"] + 0.5 * S["answer_mean"]) / 2.5,
            f"last + mean + 0.25 x answer mean ({M} tokens)": (S["last"] + S["mean"] + 0.25 * S["answer_mean"]) / 2.25,
            f"last + mean + answer's last token ({M})": (S["last"] + S["mean"] + S["answer_last"]) / 3,
            f"last + mean over prompt and answer ({M})": (S["last"] + S["prompt_and_answer_mean"]) / 2,
            "answer mean (4 tokens) alone": S["answer_mean_4"],
            f"answer mean ({M} tokens) alone": S["answer_mean"],
            f"answer's last token ({M}) alone": S["answer_last"],
        }
        lines += rule_lines(labs["last"], rules, split, "default: last + mean")
    text = "\n".join(
        [
            "# The base model's first answer tokens as a probe (a routing idea, dev only)",
            "",
            f"Pool sha256 {L.pool_hash(cfg)}; default `{st.name}`; the base answers each prompt greedily for "
            f"{M} tokens (stopping at its end of turn), and the residual stream of the whole is pooled over the "
            "answer's tokens; each pooling scored alone with the default's other axes, rules average them; paired "
            "against the default; 95% bootstrap intervals. "
            f"`python scripts/lab_answer_probe.py --tokens {M}` ({time.perf_counter() - t0:.0f} s"
            f"{', probe vectors from its cache' if cached else ''}).",
            "",
            f"Cost: the probe pass alone {1000 * t_probe:.0f} ms, with the {M} answer tokens and their read "
            f"{1000 * t_answer:.0f} ms (**{t_answer / t_probe:.1f}x**; median of 12, side by side, "
            f"{torch.get_num_threads()} thread(s)); the issue allows routing 1.1x.",
            "",
            RULE_HEADER,
            *lines,
        ]
    )
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
