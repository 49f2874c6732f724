"""MEMIT's hyper-parameters, as a strict pydantic model (validated without importing torch).

Defaults are tuned for SmolLM2-135M (see bench/memit_quality.py); the layer
window defaults to `window` layers ending at the family's ROME layer + 2.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class MEMITConfig(BaseModel):
    """MEMIT (Meng et al., 2023, "Mass-Editing Memory in a Transformer") and its AlphaEdit projection."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[int] | None = Field(
        None, min_length=1, max_length=64,
        description="blocks whose MLP output projections are rewritten, e.g. [4, 5, 6, 7, 8]; default: `window` "
                    "layers centred on the family's ROME layer")
    window: int = Field(5, ge=1, le=64, description="number of layers of the default window (when `layers` is unset)")
    mom2_update_weight: float = Field(
        2000.0, gt=0, le=1e9, allow_inf_nan=False,
        description="λ in ΔW = R Kᵀ (λC + K Kᵀ)⁻¹: how strongly keys of general text are preserved")
    context_prefixes: int = Field(5, ge=0, le=64, description="model-generated prefixes each key is averaged over")
    prefix_tokens: int = Field(8, ge=1, le=64, description="length of each generated prefix, in tokens")
    steps: int = Field(25, ge=1, le=500, description="maximum optimisation steps for the target values")
    lr: float = Field(0.5, gt=0, le=10, allow_inf_nan=False, description="Adam learning rate for the value deltas")
    kl_factor: float = Field(0.0625, ge=0, le=100, allow_inf_nan=False,
                             description="weight of the KL term that keeps '<subject> is a' unchanged")
    weight_decay: float = Field(0.5, ge=0, le=100, allow_inf_nan=False, description="penalty on |δ|² / |h|² per fact")
    clamp_norm_factor: float = Field(4.0, gt=0, le=1000, allow_inf_nan=False,
                                     description="|δ| is kept below this multiple of |h| (the hidden state it is added to)")
    early_stop_nll: float = Field(0.05, ge=0, le=100, allow_inf_nan=False,
                                  description="a fact's δ is frozen once its mean target NLL is below this")
    stop_check_every: int = Field(5, ge=1, le=500, description="steps between host-side checks that every fact "
                                  "converged (the stop itself is exact: each fact's value is frozen on the device)")
    value_batch: int = Field(64, ge=1, le=100_000, description="facts per value optimisation batch (memory bound)")
    covariance: Literal["second_moment", "identity"] = Field(
        "second_moment", description="'identity' skips the statistics (worse locality); only where the policy allows it")
    stats_source: Literal["corpus", "model"] = Field("corpus", description="text the covariance is estimated from")
    stats_tokens: int = Field(50000, ge=100, le=10_000_000, description="at most this many tokens estimate the covariance")
    stats_corpus: str | None = Field(None, description="text file for stats_source=corpus; default: the shipped CC0 corpus")
    ridge: float = Field(0.01, ge=0, le=10, allow_inf_nan=False,
                         description="relative ridge added to C: C + ridge · tr(C)/F · I")
    projection: Literal["never", "always", "auto"] = Field(
        "auto", description="AlphaEdit null-space projection: never, always, or once the model carries "
                            "`projection_after` active edited facts")
    projection_after: int = Field(20, ge=0, le=10_000_000,
                                  description="auto: project once the model carries at least this many edited facts")
    preserved_energy: float = Field(
        0.3, gt=0, lt=1, allow_inf_nan=False,
        description="the top eigen-directions of C carrying this share of its trace are preserved (projected out); "
                    "the rest is the null space the update lives in")
    projection_reg: float = Field(0.1, gt=0, le=100, allow_inf_nan=False,
                                  description="ridge of the projected solve, relative to the mean |P k|²")
    null_space_cov_weight: float = Field(
        2000.0, ge=0, le=1e9, allow_inf_nan=False,
        description="λ of MEMIT's penalty on general text's keys inside the null space (projected solve): "
                    "ΔW = R Gᵀ (G Gᵀ + β H Hᵀ + λ P C P + alpha I)⁻¹; 0 is AlphaEdit's solve. Default (with "
                    "preserved_energy 0.3) from the sequential sweep in bench/measured/memit_seq_nullcov_h200_*")
    earlier_keys_weight: float = Field(1.0, ge=0, le=1e6, allow_inf_nan=False,
                                       description="weight of keeping ΔW k ≈ 0 on the keys of earlier edits")
    seed: int = Field(0, description="seed for the generated prefixes and sampled statistics text")

    @field_validator("layers")
    @classmethod
    def _distinct(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if any(x < 0 for x in v):
            raise ValueError(f"layers {v} must be block indices ≥ 0")
        if len(set(v)) != len(v):
            raise ValueError(f"layers {v} repeat a block; list each block once, e.g. [4, 5, 6]")
        return sorted(v)

    @model_validator(mode="after")
    def _projection_needs_statistics(self) -> MEMITConfig:
        if self.projection == "always" and self.covariance == "identity":
            raise ValueError("projection 'always' needs the covariance (its null space); set covariance: second_moment")
        return self
