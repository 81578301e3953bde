"""User text -> model input ids: the chat template, user text kept as text, long prompts cut in the middle.

The probe and the generation see exactly these ids. Two rules a public demo needs:

- Special tokens typed by a user (`<|im_end|>` ...) stay plain text: the user part is tokenized
  with special tokens split, so no one can close their turn and write the assistant's.
- A prompt over the token budget keeps its head and its tail (the question usually comes last)
  and drops the middle, with a notice that says what was cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

_SLOT = "\u2063LOGO-PROMPT\u2063"  # a placeholder no template alters, to find where the user text goes
HEAD_SHARE = 0.25  # of a cut prompt's budget, the share kept from its start (the rest from its end)
GAP = "\n[...]\n"  # marks the cut inside the prompt the model sees


@dataclass
class Encoded:
    """A left-padded batch: input_ids and attention_mask [B, T] on the model's device, one list of
    notices per prompt (truncation), and `user` [B, T] marking the user's own tokens (not the chat
    template's head and tail: what the probe's `mean` pooling averages over)."""

    input_ids: Tensor
    attention_mask: Tensor
    notices: list[list[str]]
    user: Tensor | None = None

    def inputs(self) -> dict[str, Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}

    @classmethod
    def stack(cls, batches: Sequence[Encoded], pad_token_id: int) -> Encoded:
        """One batch of several, left-padded to the longest (each row keeps its ids: what encoding the
        prompts together gives)."""
        T = max(e.input_ids.shape[1] for e in batches)
        ids = torch.cat([F.pad(e.input_ids, (T - e.input_ids.shape[1], 0), value=pad_token_id) for e in batches])
        mask = torch.cat([F.pad(e.attention_mask, (T - e.attention_mask.shape[1], 0), value=0) for e in batches])
        user = None
        if all(e.user is not None for e in batches):
            user = torch.cat([F.pad(e.user, (T - e.user.shape[1], 0), value=False) for e in batches])
        return cls(ids, mask, [n for e in batches for n in e.notices], user)


class PromptEncoder:
    """Chat-templates and tokenizes prompts for one tokenizer.

    Args:
        tokenizer: a transformers tokenizer (left padding is applied here, whatever its setting).
        max_prompt_tokens: the longest prompt, template included.
        context_length: the model's context; a prompt leaves room for the answer in it.
    """

    def __init__(self, tokenizer, max_prompt_tokens: int, context_length: int) -> None:
        self.tok, self.max_prompt_tokens, self.context_length = tokenizer, max_prompt_tokens, context_length
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": _SLOT}], add_generation_prompt=True, tokenize=False
            )
            head, tail = text.split(_SLOT)
            self.head = tokenizer(head, add_special_tokens=False)["input_ids"]
            self.tail = tokenizer(tail, add_special_tokens=False)["input_ids"]
        else:
            self.head = tokenizer("", add_special_tokens=True)["input_ids"]  # BOS, if the model uses one
            self.tail = []
        self.specials = [t for t in tokenizer.all_special_tokens if t]

    def budget(self, max_new_tokens: int) -> int:
        """Tokens left for the user's text."""
        room = min(self.max_prompt_tokens, self.context_length - max_new_tokens)
        return max(8, room - len(self.head) - len(self.tail))

    def ids(self, prompt: str, budget: int) -> tuple[list[int], list[str]]:
        """Token ids of one templated prompt, and its notices."""
        tok = self.tok
        if not any(s in prompt for s in self.specials) and self.tok.chat_template:
            # The common case: tokenize the templated text whole, exactly as the trainer does.
            whole = tok.apply_chat_template(
                [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
            )
            ids = tok(whole, add_special_tokens=False)["input_ids"]
            if len(ids) - len(self.head) - len(self.tail) <= budget:
                return ids, []
        user = tok(prompt, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        notices = []
        if len(user) > budget:
            gap = tok(GAP, add_special_tokens=False)["input_ids"]
            keep = budget - len(gap)
            head, tail = int(keep * HEAD_SHARE), keep - int(keep * HEAD_SHARE)
            notices.append(
                f"Prompt cut from {len(user):,} to {budget:,} tokens (the limit for this model and answer length): "
                f"kept the first {head:,} and the last {tail:,} tokens, left out the {len(user) - keep:,} between."
            )
            user = user[:head] + gap + user[-tail:]
        return self.head + user + self.tail, notices

    def __call__(self, prompts: list[str], max_new_tokens: int, device: torch.device) -> Encoded:
        budget = self.budget(max_new_tokens)
        rows, notices = zip(*(self.ids(p, budget) for p in prompts))
        T = max(len(r) for r in rows)
        pad = self.tok.pad_token_id
        host = torch.device("cpu")  # assembled on the host, then moved to the model's device in one copy each
        input_ids = torch.full((len(rows), T), pad, dtype=torch.long, device=host)
        mask = torch.zeros((len(rows), T), dtype=torch.long, device=host)
        user = torch.zeros((len(rows), T), dtype=torch.bool, device=host)
        for i, r in enumerate(rows):  # left padding: the last prompt token is at -1 in every row
            input_ids[i, T - len(r) :] = torch.tensor(r, dtype=torch.long, device=host)
            mask[i, T - len(r) :] = 1
            user[i, T - len(r) + len(self.head) : T - len(self.tail)] = True
        return Encoded(input_ids.to(device), mask.to(device), [list(n) for n in notices], user.to(device))
