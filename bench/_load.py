"""Shared by the benchmarks: a model and tokenizer from a checkpoint, or random weights from a config."""

from __future__ import annotations

from typing import Any


def load_model(model: str | None, config_only: str | None, device: str, dtype: str = "float32") -> tuple[Any, Any]:
    """`model`: a checkpoint directory; `config_only`: config.json + tokenizer files, weights random (seed 0)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = model or config_only
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if model:
        net = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
    else:
        torch.manual_seed(0)
        net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=getattr(torch, dtype))
    return net.to(device).eval(), tok
