"""Batching helpers shared by the editors and the canary (pure: ids in, tensors out)."""

from __future__ import annotations

from typing import Any

import torch


def pad_right(rows: list[list[int]], pad_id: int, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, T): rows padded on the right, so position i is token i."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def encode_left_padded(tokenizer: Any, texts: list[str], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Tokenise for generation: padded on the left so every row continues from its own end.

    The tokenizer's padding side is restored afterwards.
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        return tokenizer(texts, return_tensors="pt", padding=True).to(device)
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def generate_greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """The model's greedy continuation of `prompt` (special tokens dropped)."""
    enc = tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
