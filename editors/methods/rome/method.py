"""ROME: Rank-One Model Editing.

Meng, Bau, Andonian, Belinkov. "Locating and Editing Factual Associations in
GPT". NeurIPS 2022. arXiv:2202.05262.

The MLP output projection ``W`` (shape ``(d_out, d_in)`` as ``(out, in)``) at a
middle layer ``l`` acts as a key-value store: the key ``k`` is its input at the
subject's last token, the value ``v = W k`` is what it writes into the residual
stream. To make the model say a new object for a subject:

1. **Key** ``k*``: the projection's input at the subject's last token,
   averaged over the plain prompt and a few model-generated prefixes + prompt.
2. **Value**: find ``δ`` (added to the projection's output at the subject's
   last token) that minimises
   ``NLL(target | prompt) + kl_factor·KL(p₀ ‖ p_δ on "<subject> is a")
   + weight_decay·|δ|²/|v|²``, with ``|δ| ≤ clamp·|v|``.
   Because δ enters at layer ``l``, the residual stream leaving block ``l`` is
   computed once and only the blocks above are re-run per step.
3. **Update**: ``ΔW = δ uᵀ / (uᵀ k*)`` with ``u = C⁻¹ k*`` and ``C = E[k kᵀ]``
   over general text, so ``ΔW k* = δ`` while keys typical of other text are
   moved as little as possible (the closed-form least-squares solution of the
   paper's constrained problem).

The result is a `LowRankUpdate` holding the two factors ``δ`` and
``u / (uᵀ k*)`` in float32, in the projection's storage layout (swapped for
GPT-2's Conv1D): O(d + d_ff) numbers per edit instead of a copy of the matrix.

This is an independent implementation from the paper's equations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editors.base import EditContext, FactEdit
from editors.changes.lowrank import LowRankUpdate
from editors.errors import EditSpecError, OptimisationError, StatisticsError
from editors.layers import LayerMap, layer_map_for
from editors.methods.rome.config import ROMEConfig
from editors.stats import cached_second_moment
from editors.tokens import encode_left_padded, pad_right


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off gradients for all parameters; restore the flags in `finally`."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, f in flags:
            p.requires_grad_(f)


@torch.no_grad()
def generate_prefixes(model: nn.Module, tokenizer: Any, n: int, length: int, seed: int) -> list[str]:
    """Short model-written texts that precede the prompt when averaging keys (seeded)."""
    if n == 0:
        return []
    starts = ["The", "Therefore", "Because", "I", "You", "It", "In", "When", "A", "We"]
    device = next(model.parameters()).device
    firsts = [starts[i % len(starts)] for i in range(n)]
    enc = encode_left_padded(tokenizer, firsts, device)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = model.generate(  # type: ignore[operator]  # a transformers PreTrainedModel
            **enc, do_sample=True, top_k=5, max_new_tokens=length, pad_token_id=tokenizer.pad_token_id
        )
    finally:
        torch.random.set_rng_state(state)
    texts = [tokenizer.decode(row, skip_special_tokens=True).replace("\n", " ").strip() for row in out]
    return [t.rstrip(".") + "." for t in texts]


def subject_last_token(tokenizer: Any, text: str, subject_start: int, subject_end: int) -> tuple[list[int], int]:
    """Token ids of `text` and the index of the token holding the subject's last character."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    last_char = subject_end - 1
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if a <= last_char < b:
            return list(enc["input_ids"]), i
    raise EditSpecError(f"could not locate the subject (chars {subject_start}:{subject_end}) in the tokens of {text!r}")


def rank_one_factors(C: torch.Tensor | None, k_star: torch.Tensor, delta_v: torch.Tensor,
                     ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(a (D,), b (F,)) in float64 with ΔW = a bᵀ (out, in), ΔW k* = δ, spread along u = (C + λI)⁻¹ k*.

    a = δ and b = u / (uᵀ k*). `C` is E[k kᵀ] (F, F) or None for the identity;
    λ = ridge · tr(C) / F keeps a covariance estimated from few tokens
    invertible. Among all updates with ΔW k* = δ, this one minimises E‖ΔW k‖²
    over keys distributed with second moment C (+λI): Meng et al. 2022, eq. 2
    and its appendix.
    """
    k64 = k_star.double()  # (F,)
    if C is None:
        u = k64
    else:
        d = C.shape[0]
        reg = ridge * torch.trace(C) / d
        u = torch.linalg.solve(C.to(k64) + reg * torch.eye(d, dtype=torch.float64, device=k64.device), k64)  # (F,)
    return delta_v.double(), u / torch.dot(u, k64)  # (D,), (F,)


def rank_one_update(C: torch.Tensor | None, k_star: torch.Tensor, delta_v: torch.Tensor, ridge: float) -> torch.Tensor:
    """ΔW (out, in) in float64: the outer product of `rank_one_factors`."""
    a, b = rank_one_factors(C, k_star, delta_v, ridge)
    return torch.outer(a, b)  # (D, F)


class ROME:
    """Rank-one edit of one MLP projection; see the module docstring."""

    name = "rome"

    def __init__(self) -> None:
        self._prefix_cache: dict[tuple, list[str]] = {}  # lives as long as the editor: get_editor reuses it

    def compute(self, model: nn.Module, tokenizer: Any, payload: Sequence[FactEdit], ctx: EditContext) -> LowRankUpdate:
        edit = _one_fact(payload)
        cfg = _config(ctx)
        started = time.perf_counter()
        lm = layer_map_for(model)
        layer = lm.default_layer(model) if cfg.layer is None else cfg.layer
        lm.check_layer(model, layer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

        ctx.report("prefixes", 0.0)
        key = (ctx.model_digest, cfg.context_prefixes, cfg.prefix_tokens, cfg.seed)
        if key not in self._prefix_cache:
            self._prefix_cache[key] = generate_prefixes(model, tokenizer, cfg.context_prefixes, cfg.prefix_tokens, cfg.seed)
        prefixes = self._prefix_cache[key]

        ctx.report("statistics", 0.0)
        C, stats_info = self._statistics(model, tokenizer, lm, layer, cfg, ctx)

        with frozen(model):
            k_star, delta_v, v_norm, opt = self._key_and_value(model, tokenizer, lm, layer, edit, prefixes, cfg, ctx)

        a, b = rank_one_factors(C, k_star, delta_v, cfg.ridge)  # ΔW = a bᵀ as (out, in): (D,), (F,)
        A, B = lm.storage_factors(a[:, None], b[:, None])  # storage layout: ΔW_stored = A Bᵀ
        change = LowRankUpdate.build(model, "rome", {lm.weight_name(layer): (A, B)}, meta={
            "layer": layer,
            "module": lm.mlp_out_name(layer),
            "family": lm.family,
            "value_delta_norm": float(delta_v.norm()),
            "value_norm": v_norm,
            "update_frobenius_norm": float(a.norm() * b.norm()),
            "covariance": "identity" if C is None else "second_moment",
            "statistics": stats_info,
            "context_prompts": 1 + len(prefixes),
            "seconds": round(time.perf_counter() - started, 3),
            **opt,
            "config": cfg.model_dump(),
        })
        ctx.report("done", 1.0)
        return change

    # -- 0. statistics -------------------------------------------------------
    def _statistics(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, cfg: ROMEConfig,
                    ctx: EditContext) -> tuple[torch.Tensor | None, dict[str, Any]]:
        if cfg.covariance == "identity":
            return None, {"kind": "identity"}
        try:
            return cached_second_moment(
                ctx.cache_dir / "stats",
                model,
                tokenizer,
                lm,
                layer,
                model_digest=ctx.model_digest,
                source=cfg.stats_source,
                n_tokens=cfg.stats_tokens,
                corpus_path=cfg.stats_corpus,
                progress=ctx.progress,
            )
        except StatisticsError:
            raise
        except OSError as e:
            raise StatisticsError(f"could not read or write the statistics cache in {ctx.cache_dir}: {e}") from e

    @contextmanager
    def _forward_with_delta(self, model: nn.Module, lm: LayerMap, layer: int, proj: nn.Module, input_ids: torch.Tensor,
                            hidden: torch.Tensor, mask: torch.Tensor, row_idx: torch.Tensor, subj: torch.Tensor,
                            cfg: ROMEConfig) -> Iterator[Any]:
        """Yield ``run(delta) -> logits`` with δ added at the subject positions of layer `layer`.

        Fast path: start from the cached residual stream leaving block `layer` and
        run only the blocks above. Baseline (``cache_lower_layers=False``): the
        whole model with a hook, as a naive implementation would.
        """
        if not cfg.cache_lower_layers:
            with _naive_forward(model, proj, input_ids, mask, row_idx, subj, {}) as run:
                yield run
            return
        head = model.get_output_embeddings()  # type: ignore[operator]  # a transformers PreTrainedModel
        with lm.upper_stack(model, layer) as run_upper:
            def run(delta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
                add = torch.zeros_like(hidden)
                add[row_idx, subj] = delta.to(hidden.dtype)  # δ at each row's subject position
                final = run_upper(hidden + add, mask)  # (B, T, D)
                return head(final[rows, cols])  # (N, V): logits only where the loss looks

            yield run

    # -- 1 + 2. key and value ----------------------------------------------
    def _key_and_value(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, edit: FactEdit, prefixes: list[str],
                       cfg: ROMEConfig, ctx: EditContext) -> tuple[torch.Tensor, torch.Tensor, float, dict[str, Any]]:
        device = next(model.parameters()).device
        target_ids = tokenizer(edit.target_new, add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise EditSpecError(f"the target {edit.target_new!r} has no tokens")
        s0 = edit.prompt.index(edit.subject)

        rows: list[list[int]] = []
        subj_idx: list[int] = []
        tgt_pos: list[int] = []  # index of the first target token in each row
        for pre in [""] + [p + " " for p in prefixes]:
            text = pre + edit.prompt
            ids, si = subject_last_token(tokenizer, text, len(pre) + s0, len(pre) + s0 + len(edit.subject))
            rows.append(ids + target_ids)
            subj_idx.append(si)
            tgt_pos.append(len(ids))
        n_ctx = len(rows)
        kl_text = f"{edit.subject} is a"
        kl_ids, kl_si = subject_last_token(tokenizer, kl_text, 0, len(edit.subject))
        rows.append(kl_ids)
        subj_idx.append(kl_si)

        input_ids, mask = pad_right(rows, tokenizer.pad_token_id, device)  # (B, T) each
        row_idx = torch.arange(len(rows), device=device)
        subj = torch.tensor(subj_idx, device=device)

        # one full pass: residual stream leaving block `layer`, keys and values at the subject
        block = lm.block(model, layer)
        proj = lm.mlp_out_module(model, layer)
        cap: dict[str, torch.Tensor] = {}

        def keep_hidden(_m: nn.Module, _a: tuple, out: Any) -> None:
            cap["h"] = (out[0] if isinstance(out, tuple) else out).detach()

        def keep_key_value(_m: nn.Module, a: tuple, out: torch.Tensor) -> None:
            cap["k"], cap["v"] = a[0].detach(), out.detach()

        h1 = block.register_forward_hook(keep_hidden)
        h2 = proj.register_forward_hook(keep_key_value)
        try:
            with torch.no_grad():
                logits0 = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits  # (B, T, V)
        finally:
            h1.remove()
            h2.remove()
        hidden = cap["h"]  # (B, T, D)
        keys = cap["k"][row_idx, subj]  # (B, F)
        values = cap["v"][row_idx, subj]  # (B, D)
        k_star = keys[:n_ctx].mean(0)  # (F,)
        v_norm = float(values[:n_ctx].mean(0).norm())
        kl_last = len(kl_ids) - 1
        p0_log = F.log_softmax(logits0[n_ctx, kl_last].float(), dim=-1).detach()  # (V,)

        # target positions: logits at t-1 predict token t
        tgt = torch.tensor(target_ids, device=device)
        L = len(target_ids)
        pos = torch.stack([torch.arange(p - 1, p - 1 + L, device=device) for p in tgt_pos])  # (n_ctx, L)

        # the positions whose logits the loss needs: every target token of every context row, then the KL position
        sel_rows = torch.cat([torch.arange(n_ctx, device=device).repeat_interleave(L), torch.tensor([n_ctx], device=device)])
        sel_cols = torch.cat([pos.reshape(-1), torch.tensor([kl_last], device=device)])
        # float32 whatever the model's dtype: Adam's eps (1e-8) underflows in float16 and the step turns NaN
        delta = torch.zeros(hidden.shape[-1], device=device, dtype=torch.float32, requires_grad=True)  # (D,)
        optim = torch.optim.Adam([delta], lr=cfg.lr)
        max_norm = cfg.clamp_norm_factor * v_norm
        nll = torch.tensor(float("inf"))
        steps_run = 0
        with self._forward_with_delta(model, lm, layer, proj, input_ids, hidden, mask, row_idx, subj, cfg) as run:
            for step in range(cfg.steps):
                steps_run = step + 1
                logits = run(delta, sel_rows, sel_cols)  # (n_ctx * L + 1, V)
                logp = F.log_softmax(logits.float(), dim=-1)
                tok_logp = logp[:-1].gather(1, tgt.repeat(n_ctx)[:, None]).view(n_ctx, L)  # (n_ctx, L)
                nll = -tok_logp.mean(1).mean()
                kl_logp = logp[-1]  # (V,) at the end of "<subject> is a"
                kl = F.kl_div(kl_logp, p0_log, log_target=True, reduction="sum")
                wd = cfg.weight_decay * delta.float().pow(2).sum() / (v_norm**2)
                loss = nll + cfg.kl_factor * kl + wd
                ctx.report("optimise", steps_run / cfg.steps)
                if nll.item() < cfg.early_stop_nll:
                    break
                optim.zero_grad()
                loss.backward()
                optim.step()
                with torch.no_grad():
                    n = delta.norm()
                    if n > max_norm:
                        delta.mul_(max_norm / n)
        if not bool(torch.isfinite(delta).all()):
            raise OptimisationError(f"ROME's value optimisation diverged for {edit.subject!r} (non-finite δ after {steps_run} "
                                "steps); lower rome.lr or raise rome.weight_decay")
        info = {"steps": steps_run, "final_target_nll": round(float(nll.detach()), 5), "target_tokens": L}
        return k_star.detach(), delta.detach(), v_norm, info


@contextmanager
def _naive_forward(model: nn.Module, proj: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, row_idx: torch.Tensor,
                   subj: torch.Tensor, holder: dict) -> Iterator[Any]:
    def add_delta(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[row_idx, subj] = out[row_idx, subj] + holder["delta"].to(out.dtype)
        return out

    handle = proj.register_forward_hook(add_delta)
    try:
        def run(delta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
            holder["delta"] = delta
            return model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits[rows, cols]

        yield run
    finally:
        handle.remove()


def _one_fact(payload: Sequence[FactEdit]) -> FactEdit:
    if isinstance(payload, FactEdit):
        raise EditSpecError("pass the facts as a sequence, e.g. [FactEdit(...)]; ROME takes a list of exactly one")
    if len(payload) != 1:
        raise EditSpecError(f"ROME edits one fact per request; this request has {len(payload)} — use a batch method "
                            "such as MEMIT or split the request")
    return payload[0]


def _config(ctx: EditContext) -> ROMEConfig:
    if ctx.config is None:
        return ROMEConfig.model_validate({})
    if not isinstance(ctx.config, ROMEConfig):
        raise EditSpecError(f"ROME needs its settings as a ROMEConfig, got {type(ctx.config).__name__}; build it with "
                            "editors.validate_method_config('rome', settings)")
    return ctx.config
