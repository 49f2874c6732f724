"""Batching helpers shared by the editors and the canary (pure: ids in, tensors out)."""

from __future__ import annotations

from typing import Any

import torch


def pad_right(rows: list[list[int]], pad_id: int | None, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), each (B, T): rows padded on the right, so position i is token i.

    A tokenizer without a pad token (GPT-2's, many GGUF conversions) pads with id 0: padded positions are masked
    and never scored, so the id only has to exist."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), 0 if pad_id is None else pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def encode_left_padded(tokenizer: Any, texts: list[str], device: torch.device | str) -> dict[str, torch.Tensor]:
    """Tokenise for generation: padded on the left so every row continues from its own end.

    The tokenizer's padding side is restored afterwards; one without a pad token pads with its end-of-text token
    (masked, so never read) and is left as it was.
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    no_pad = getattr(tokenizer, "pad_token", None) is None and getattr(tokenizer, "eos_token", None) is not None
    if no_pad:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        return tokenizer(texts, return_tensors="pt", padding=True).to(device)
    finally:
        tokenizer.padding_side = side
        if no_pad:
            tokenizer.pad_token = None


def context_length(model: Any) -> int | None:
    """The most positions the model can attend over (GPT-2 ``n_positions``, Llama ``max_position_embeddings``), if it says."""
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_left(enc: dict[str, torch.Tensor], model: Any, room_after: int) -> dict[str, torch.Tensor]:
    """Keep only the last tokens of a (left-padded) batch so that `room_after` more tokens fit the model's context.

    A prompt longer than the context is read in its last window, as a model with that context would read it.
    """
    ctx = context_length(model)
    if ctx is None or enc["input_ids"].shape[1] + room_after <= ctx:
        return enc
    keep = ctx - room_after
    if keep < 1:
        raise ValueError(f"the model's context of {ctx} tokens has no room for a prompt and {room_after} new tokens")
    return {k: v[:, -keep:] for k, v in enc.items()}


@torch.no_grad()
def generate_greedy(model: Any, tokenizer: Any, prompt: str, max_new_tokens: int) -> str:
    """The model's greedy continuation of `prompt` (special tokens dropped; a long prompt is read in its last window)."""
    enc = fit_left(dict(tokenizer(prompt, return_tensors="pt").to(next(model.parameters()).device)), model, max_new_tokens)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
