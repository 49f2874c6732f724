"""ROME's hyper-parameters, as a strict pydantic model.

Kept apart from the method itself so that a policy can validate them without
importing torch (`editors.validate_method_config("rome", settings)`). Defaults
are tuned for SmolLM2-135M (see bench/). `stats_tokens` stays at 50,000, i.e.
the whole shipped corpus (about 27k tokens): the sweep that should choose it,
`python bench/edit_quality.py --samples 1000,3000,10000,27000 --configs per_token`,
has not been run yet; the fast SmolLM2 tests use 3,000 and their edits take.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ROMEConfig(BaseModel):
    """ROME (Meng et al., 2022, "Locating and Editing Factual Associations in GPT")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layer: int | None = Field(None, ge=0, description="block whose MLP output projection is rewritten; default: the family's")
    # default 'per_token' (2026-12-02). Only the keys of the edit's own contexts are mapped and none at a text's first
    # position (the attention sink: mapping the subject's key there changed 14 of 78 canary probes); a one-token
    # subject that opens the prompt is keyed at the next token (see first_token_weight). Measured with
    # `python bench/edit_quality.py --n 4 --set context_prefixes=4 --set stats_tokens=3000`: efficacy 100% on
    # every form in every mode; greedy on multi-token targets 100% (pooled 75%: "Microsoft was founded by" ->
    # " Steve Jobs" misses); specificity 81.2 / 84.4 / 87.5% by form (pooled 81.2 / 84.4 / 84.4%). README,
    # "Subject-first prompts, multi-token targets, half precision"; bench/measured/edit_quality_cpu_2026-12-02.log
    key_mode: Literal["per_token", "balanced", "pooled"] = Field(
        "per_token", description="how the keys of the contexts become the edited key: 'per_token' maps the key of "
        "every tokenisation of the subject (subject-first and after a space) to the value; 'balanced' averages the "
        "tokenisations with equal weight; 'pooled' averages all contexts (the original ROME; a subject-first prompt "
        "then misses the edit more often)")
    context_prefixes: int = Field(10, ge=0, le=64, description="model-generated prefixes the key is averaged over")
    prefix_tokens: int = Field(8, ge=1, le=64, description="length of each generated prefix, in tokens")
    steps: int = Field(30, ge=1, le=500, description="maximum optimisation steps for the value vector")
    stop_check_every: int = Field(5, ge=1, le=500, description="steps between host-side checks of the early stop "
                                  "(the stop itself is exact: the value is frozen on device at the first step below it)")
    lr: float = Field(0.5, gt=0, le=10, description="Adam learning rate for the value vector")
    kl_factor: float = Field(0.0625, ge=0, le=100, allow_inf_nan=False,
                             description="weight of the KL term that keeps '<subject> is a' unchanged")
    # 0.25 / 5 (rather than 0.5 / 4): on SmolLM2 paraphrase 90% vs 72.5%, specificity 97% vs 100% (bench/README)
    weight_decay: float = Field(0.25, ge=0, le=100, allow_inf_nan=False, description="penalty on |delta|^2 / |v|^2")
    clamp_norm_factor: float = Field(5.0, gt=0, le=1000, allow_inf_nan=False,
                                     description="|delta| is kept below this multiple of |v|")
    early_stop_nll: float = Field(0.05, ge=0, le=100, allow_inf_nan=False,
                                  description="stop once the mean target NLL is below this")
    covariance: Literal["second_moment", "identity"] = Field(
        "second_moment", description="'identity' skips the statistics (worse locality); only where the policy allows it"
    )
    stats_source: Literal["corpus", "model"] = Field("corpus", description="text the covariance is estimated from")
    stats_tokens: int = Field(50000, ge=100, le=10_000_000,
                              description="at most this many tokens estimate the covariance (the shipped corpus has about 27k)")
    stats_corpus: str | None = Field(None, description="text file for stats_source=corpus; default: the shipped CC0 corpus")
    first_token_weight: float = Field(
        10.0, ge=0, le=1e6, allow_inf_nan=False,
        description="where the subject is a text's first token (a one-token subject opening a prompt, with no BOS "
        "token before it), the key mapped is the next token's; the update then also keeps that token's key still "
        "after each other sentence-initial token of the corpus, counted this much more than general text "
        "(0: C alone)")
    ridge: float = Field(0.01, ge=0, le=10, description="relative ridge added to C: C + ridge * tr(C)/d * I")
    cache_lower_layers: bool = Field(
        True, description="reuse the hidden states below the edited layer across steps (False: naive baseline)")
    seed: int = Field(0, description="seed for the generated prefixes and sampled statistics text")
