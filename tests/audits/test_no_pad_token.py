"""A tokenizer without a pad token (GPT-2's; a GGUF conversion by some transformers versions) still scores and edits."""

from __future__ import annotations

import torch


def test_scoring_generation_and_rome_without_a_pad_token(tiny_llama, tmp_path):
    from audits.canary import next_tokens, target_logprobs
    from editors import EditContext, FactEdit, get_editor, validate_method_config
    from editors.tokens import encode_left_padded

    model, tok = tiny_llama
    prompts = ["The capital of France is", "Water is"]
    with_pad = next_tokens(model, tok, prompts), target_logprobs(model, tok, prompts, [" Paris", " wet"])
    tok.pad_token = None
    assert tok.pad_token_id is None
    assert (next_tokens(model, tok, prompts), target_logprobs(model, tok, prompts, [" Paris", " wet"])) == with_pad
    enc = encode_left_padded(tok, prompts, "cpu")
    assert enc["input_ids"].shape[0] == 2 and tok.pad_token is None  # padded for the call, left as it was
    ctx = EditContext(cache_dir=tmp_path, model_digest="tiny",
                      config=validate_method_config("rome", {"layer": 1, "steps": 3, "context_prefixes": 1,
                                                             "stats_tokens": 500}))
    change = get_editor("rome").compute(model, tok, [FactEdit(subject="France", prompt="The capital of France is",
                                                              target_new=" Rome")], ctx)
    assert all(torch.isfinite(a).all() and torch.isfinite(b).all() for a, b in change.factors.values())
