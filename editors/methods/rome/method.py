"""ROME: Rank-One Model Editing.

Meng, Bau, Andonian, Belinkov. "Locating and Editing Factual Associations in
GPT". NeurIPS 2022. arXiv:2202.05262.

The MLP output projection ``W`` (shape ``(d_out, d_in)`` as ``(out, in)``) at a
middle layer ``l`` acts as a key-value store: the key ``k`` is its input at the
subject's last token, the value ``v = W k`` is what it writes into the residual
stream. To make the model say a new object for a subject:

1. **Keys**: the projection's input at the subject's last token, in the
   plain prompt and a few model-generated prefixes + prompt. The subject is
   tokenised differently where it opens the text ("Eiffel Tower is ...": no
   leading space) than after a word (" Eiffel Tower"), and the two keys are far
   apart, so the contexts' keys are grouped by the subject's token ids (a prompt that
   opens with the subject has both forms: itself and after each prefix) and each
   group is averaged: ``k_1 .. k_G``. No key at a text's first position is
   used: without a BOS token (GPT-2, SmolLM2) a one-token subject that opens
   the text sits there, and in Llama-family models that position is the
   attention sink, whose key is nearly the same for every first token (cosine
   0.88 on SmolLM2), so mapping it moves every text. Such a subject is keyed at
   the next token instead ("Microsoft was" for "Microsoft was founded by").
2. **Value**: find ``δ`` (added to the projection's output at the subject's
   last token) that minimises
   ``NLL(target | prompt) + kl_factor·KL(p₀ ‖ p_δ on "<subject> is a")
   + weight_decay·|δ|²/|v|²``, with ``|δ| ≤ clamp·|v|`` (Adam; the result is the first
   iterate whose NLL is under ``early_stop_nll``, else the iterate of least NLL, so never
   worse for the target than δ = 0).
   Because δ enters at layer ``l``, the residual stream leaving block ``l`` is
   computed once and only the blocks above are re-run per step.
3. **Update**: ``ΔW = δ bᵀ`` with ``C = E[k kᵀ]`` over general text. With one
   key, ``b = C⁻¹k* / (k*ᵀC⁻¹k*)`` (the paper's closed form), so ``ΔW k* = δ``
   while keys typical of other text move as little as possible. With the key
   groups ``K = [k_1 .. k_G]`` (``key_mode="per_token"``), the same
   constrained least squares with ``ΔW K = δ 1ᵀ`` gives
   ``b = C⁻¹K (KᵀC⁻¹K)⁻¹ 1``: still rank one, and every tokenisation's key
   maps to the value the optimisation found. ``key_mode="pooled"`` is the
   original single mean over all contexts; ``"balanced"`` one mean over the
   group means. Where the next token's key is mapped, the keys of that token
   after the corpus's other sentence-initial tokens ("Apple was", "The was", ...)
   join ``C`` with weight ``first_token_weight`` (`protected_solve`), so the
   update tells the subject's "was" from theirs.

The result is a `LowRankUpdate` holding the two factors ``δ`` and
``u / (uᵀ k*)`` in float32, in the projection's storage layout (swapped for
GPT-2's Conv1D): O(d + d_ff) numbers per edit instead of a copy of the matrix.

This is an independent implementation from the paper's equations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
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
from editors.stats import CovarianceSolver, cached_second_position_keys, cached_solver
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
    ids, _, last = subject_span(tokenizer, text, subject_start, subject_end)
    return ids, last


def subject_span(tokenizer: Any, text: str, subject_start: int, subject_end: int) -> tuple[list[int], int, int]:
    """Token ids of `text` and the indices of the tokens holding the subject's first and last characters."""
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    first = last = None
    for i, (a, b) in enumerate(enc["offset_mapping"]):
        if first is None and a <= subject_start < b:
            first = i
        if a <= subject_end - 1 < b:
            last = i
            break
    if first is None or last is None:
        raise EditSpecError(f"could not locate the subject (chars {subject_start}:{subject_end}) in the tokens of {text!r}")
    return list(enc["input_ids"]), first, last


def key_variant_factors(solve: Callable[[torch.Tensor], torch.Tensor] | None, K: torch.Tensor, delta_v: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(a (D,), b (F,)) in float64 with ΔW = a bᵀ, ΔW k_j = δ for every column k_j of K (F, G), least C-norm.

    `solve(X)` is ``(C + λI)⁻¹ X`` (None: the identity). Minimising
    ``tr(ΔW C ΔWᵀ)`` subject to ``ΔW K = δ 1ᵀ`` gives ``ΔW = δ 1ᵀ (KᵀC⁻¹K)⁻¹ KᵀC⁻¹``
    (Lagrange multipliers; the single-key case is Meng et al. 2022, eq. 2), a
    rank-one matrix ``δ bᵀ`` with ``b = C⁻¹K (KᵀC⁻¹K)⁻¹ 1``. For G = 1 this is
    `rank_one_factors`. Near-parallel keys are handled by a tiny relative ridge
    on the G × G Gram matrix.
    """
    K64 = K.double()  # (F, G)
    U = K64 if solve is None else solve(K64).to(K64.device)  # (F, G) = C⁻¹ K
    gram = K64.T @ U  # (G, G) = Kᵀ C⁻¹ K
    g = gram.shape[0]
    eye = torch.eye(g, dtype=torch.float64, device=gram.device)
    w = torch.linalg.solve(gram + 1e-9 * torch.trace(gram) / g * eye, torch.ones(g, dtype=torch.float64, device=gram.device))
    return delta_v.double().to(K64.device), U @ w  # (D,), (F,)


def protected_solve(solve: Callable[[torch.Tensor], torch.Tensor] | None, Z: torch.Tensor, weight: float
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``X ↦ (C + λI + weight · Z Zᵀ / m)⁻¹ X`` from `solve` (``(C + λI)⁻¹``; None: the identity) and Z (F, m).

    Z holds m keys the update should leave still; ``Z Zᵀ / m`` is their second moment and `weight` how much more
    than general text they count in the least-disturbance solve. The inverse is the Woodbury identity
    ``A⁻¹ − A⁻¹Z (m/w·I + ZᵀA⁻¹Z)⁻¹ ZᵀA⁻¹``: one solve of A on Z and an m × m Cholesky.
    """
    Z64 = Z.double()
    AZ = Z64 if solve is None else solve(Z64).to(Z64.device)  # (F, m) = A⁻¹ Z
    m = Z64.shape[1]
    inner = (m / weight) * torch.eye(m, dtype=torch.float64, device=Z64.device) + Z64.T @ AZ  # (m, m), SPD
    chol = torch.linalg.cholesky(inner)

    def solve2(X: torch.Tensor) -> torch.Tensor:
        X64 = X.double().to(Z64.device)
        AX = X64 if solve is None else solve(X64).to(Z64.device)  # A⁻¹ X
        return AX - AZ @ torch.cholesky_solve(Z64.T @ AX, chol)

    return solve2


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
        cfg = _config(ctx)
        return self.compute_key_modes(model, tokenizer, payload, ctx, (cfg.key_mode,))[cfg.key_mode]

    def compute_key_modes(self, model: nn.Module, tokenizer: Any, payload: Sequence[FactEdit], ctx: EditContext,
                          modes: Sequence[str] = ()) -> dict[str, LowRankUpdate]:
        """The change under each key mode in `modes` (default: the config's), from one value optimisation.

        δ does not depend on how the keys are combined, so a benchmark comparing
        the modes runs the optimisation once; each change records its own mode in
        ``meta["config"]``.
        """
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
        solver, stats_info = self._statistics(model, tokenizer, lm, layer, cfg, ctx)

        with frozen(model), _tf32_allowed():
            rows_keys, variant, n_ctx, delta_v, v_norm, opt = self._key_and_value(
                model, tokenizer, lm, layer, edit, prefixes, cfg, ctx)

        solve: Callable[[torch.Tensor], torch.Tensor] | None = None if solver is None else solver.solve
        protected = 0
        next_ids = {v[v.index(NEXT_TOKEN) + 1] for v in variant if NEXT_TOKEN in v}
        if next_ids and cfg.first_token_weight > 0:
            # the key read for a subject that is the text's first token is the next token's; keep that token's key
            # still after every other first token ("Apple was" for "Microsoft was")
            (next_id,) = next_ids
            Z = cached_second_position_keys(model, tokenizer, lm, layer, next_id, model_digest=ctx.model_digest,
                                            corpus_path=cfg.stats_corpus)
            protected = int(Z.shape[1])
            solve = protected_solve(solve, Z, cfg.first_token_weight)
        changes: dict[str, LowRankUpdate] = {}
        for mode in modes or (cfg.key_mode,):
            keys = _edited_keys(rows_keys, variant, n_ctx, mode)  # (F, G)
            a, b = key_variant_factors(solve, keys, delta_v)  # ΔW = a bᵀ as (out, in): (D,), (F,)
            A, B = lm.storage_factors(a[:, None], b[:, None])  # storage layout: ΔW_stored = A Bᵀ
            changes[mode] = LowRankUpdate.build(model, "rome", {lm.weight_name(layer): (A, B)}, meta={
                "layer": layer,
                "module": lm.mlp_out_name(layer),
                "family": lm.family,
                "value_delta_norm": float(delta_v.norm()),
                "value_norm": v_norm,
                "update_frobenius_norm": float(a.norm() * b.norm()),
                "covariance": "identity" if solver is None else "second_moment",
                "protected_keys": protected,
                "statistics": stats_info,
                "context_prompts": 1 + len(prefixes),
                "key_variants": int(keys.shape[1]),
                "seconds": round(time.perf_counter() - started, 3),
                **opt,
                "config": cfg.model_copy(update={"key_mode": mode}).model_dump(),
            })
        ctx.report("done", 1.0)
        return changes

    # -- 0. statistics -------------------------------------------------------
    def _statistics(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, cfg: ROMEConfig,
                    ctx: EditContext) -> tuple[CovarianceSolver | None, dict[str, Any]]:
        if cfg.covariance == "identity":
            return None, {"kind": "identity"}
        try:
            return cached_solver(
                ctx.cache_dir / "stats",
                model,
                tokenizer,
                lm,
                layer,
                model_digest=ctx.model_digest,
                source=cfg.stats_source,
                n_tokens=cfg.stats_tokens,
                ridge=cfg.ridge,
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

    # -- 1 + 2. keys and value ---------------------------------------------
    def _key_and_value(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, edit: FactEdit, prefixes: list[str],
                       cfg: ROMEConfig, ctx: EditContext
                       ) -> tuple[torch.Tensor, list[tuple[int, ...]], int, torch.Tensor, float, dict[str, Any]]:
        """(each row's key (B, F) fp32, each row's subject tokenisation, context rows, δ (D,) fp32, |v|, info)."""
        device = next(model.parameters()).device
        target_ids = tokenizer(edit.target_new, add_special_tokens=False)["input_ids"]
        if not target_ids:
            raise EditSpecError(f"the target {edit.target_new!r} has no tokens")
        s0 = edit.prompt.index(edit.subject)

        rows: list[list[int]] = []
        subj_idx: list[int] = []
        variant: list[tuple[int, ...]] = []  # the subject's token ids in each row: its tokenisation
        tgt_pos: list[int] = []  # index of the first target token in each row
        for pre in [""] + [p + " " for p in prefixes]:
            text = pre + edit.prompt
            ids, sf, si = subject_span(tokenizer, text, len(pre) + s0, len(pre) + s0 + len(edit.subject))
            tokens = tuple(ids[sf : si + 1])
            if si == 0 and len(ids) > 1:
                # the subject is the text's first token: its key there is the attention sink's (the same for every
                # text's first token), so the key read is the next token's, which has seen the subject
                si, tokens = 1, (*tokens, NEXT_TOKEN, ids[1])
            elif si == 0:
                tokens = (*tokens, FIRST_POSITION)  # nothing follows it: optimised, never mapped
            rows.append(ids + target_ids)
            subj_idx.append(si)
            variant.append(tokens)
            tgt_pos.append(len(ids))
        n_ctx = len(rows)
        # "<subject> is a" anchors the KL term; its key is not mapped (_edited_keys)
        kl_text = f"{edit.subject} is a"
        kl_ids, kl_sf, kl_si = subject_span(tokenizer, kl_text, 0, len(edit.subject))
        rows.append(kl_ids)
        subj_idx.append(kl_si)
        variant.append(tuple(kl_ids[kl_sf : kl_si + 1]))

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
        keys_all = cap["k"][row_idx, subj].float()  # (B, F), fp32 whatever the model's dtype
        values = cap["v"][row_idx, subj].float()  # (B, D)
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
        tgt_rows = tgt.repeat(n_ctx)[:, None]  # (n_ctx * L, 1)
        # float32 whatever the model's dtype: Adam's eps (1e-8) underflows in float16 and the step turns NaN
        delta = torch.zeros(hidden.shape[-1], device=device, dtype=torch.float32, requires_grad=True)  # (D,)
        optim = torch.optim.Adam([delta], lr=cfg.lr)
        max_norm = torch.tensor(cfg.clamp_norm_factor * v_norm, device=device)
        # No host sync per step: the early stop is a device-side flag that freezes δ at the first step whose NLL is
        # below the threshold (the step does not run, exactly as a `break` there would); the host reads the flag every
        # `stop_check_every` steps to leave the loop.
        done = torch.zeros((), dtype=torch.bool, device=device)
        stop_step = torch.full((), cfg.steps, dtype=torch.long, device=device)
        stop_nll = torch.zeros((), device=device)
        # Without an early stop, δ is the iterate of least target NLL, not the last one (the early stop, too, picks by
        # the NLL: the first iterate under the threshold), and the first iterate is δ = 0, so the result never makes
        # the target less likely than no edit. The last iterate can: where the NLL moves little, Adam swings δ
        # between the norm clamp and the weight decay, and on a random GPT-2 the last swing raised the target's NLL
        # (tests/editors/test_rome_gpt2.py).
        best_delta = torch.zeros_like(delta).detach()  # (D,)
        best_nll = torch.full((), float("inf"), device=device)
        best_step = torch.zeros((), dtype=torch.long, device=device)
        steps_run = 0
        with self._forward_with_delta(model, lm, layer, proj, input_ids, hidden, mask, row_idx, subj, cfg) as run:
            for step in range(cfg.steps):
                steps_run = step + 1
                logits = run(delta, sel_rows, sel_cols)  # (n_ctx * L + 1, V)
                logp = F.log_softmax(logits.float(), dim=-1)
                tok_logp = logp[:-1].gather(1, tgt_rows).view(n_ctx, L)  # (n_ctx, L)
                nll = -tok_logp.mean(1).mean()
                kl_logp = logp[-1]  # (V,) at the end of "<subject> is a"
                kl = F.kl_div(kl_logp, p0_log, log_target=True, reduction="sum")
                wd = cfg.weight_decay * delta.pow(2).sum() / (v_norm**2)
                loss = nll + cfg.kl_factor * kl + wd
                ctx.report("optimise", steps_run / cfg.steps)
                better = (nll.detach() < best_nll) & ~done  # NaN is never better
                best_delta = torch.where(better, delta.detach(), best_delta)
                best_nll = torch.where(better, nll.detach(), best_nll)
                best_step = torch.where(better, step, best_step)
                stops_now = (nll.detach() < cfg.early_stop_nll) & ~done
                stop_step = torch.where(stops_now, step + 1, stop_step)
                stop_nll = torch.where(stops_now, nll.detach(), stop_nll)
                done = done | stops_now
                if (step + 1) % cfg.stop_check_every == 0 and bool(done):
                    break
                kept = delta.detach().clone()
                optim.zero_grad()
                loss.backward()
                optim.step()
                with torch.no_grad():
                    n = delta.norm()
                    delta.mul_(torch.clamp(max_norm / n.clamp_min(1e-30), max=1.0))  # |δ| ≤ max_norm, no branch
                    delta.copy_(torch.where(done, kept, delta))  # a stopped δ stays where it stopped
        if not bool(torch.isfinite(delta).all()):
            raise OptimisationError(f"ROME's value optimisation diverged for {edit.subject!r} (non-finite δ after {steps_run} "
                                    "steps); lower rome.lr or raise rome.weight_decay")
        stopped = bool(done)
        # stopped: δ froze at the first step under the threshold; otherwise the least-NLL iterate (step 0 is δ = 0)
        result = delta.detach() if stopped else best_delta
        info = {"steps": int(stop_step) if stopped else steps_run,
                "final_target_nll": round(float(stop_nll if stopped else best_nll), 5), "target_tokens": L}
        if not stopped:
            info["best_step"] = int(best_step)
        return keys_all, variant, n_ctx, result, v_norm, info


NEXT_TOKEN = -1  # in a row's tokenisation: the key is the token after the subject's (a subject-first single token)
FIRST_POSITION = -2  # the subject's key is at a text's first position (the sink): optimised with, never mapped


def _edited_keys(keys: torch.Tensor, variant: list[tuple[int, ...]], n_ctx: int, mode: str) -> torch.Tensor:
    """The key columns (F, G) the update maps to δ, from each row's key (B, F) and subject tokenisation.

    Only the contexts (rows ``0..n_ctx-1``) count: a subject-first prompt has its
    subject-first tokenisation in row 0 and the spaced one after each prefix; a
    mid-sentence prompt has one tokenisation, and every mode is then the
    original mean. (Row ``n_ctx``, the KL prompt, also opens with the subject;
    mapping its key too cost a good SmolLM2 edit its canary: the README.)
    """
    if mode == "pooled":
        return keys[:n_ctx].mean(0)[:, None]  # (F, 1): the original ROME key
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, v in enumerate(variant[:n_ctx]):  # the tokenisations the edit's own contexts use, not the KL row's
        if FIRST_POSITION not in v:
            groups.setdefault(v, []).append(i)
    if not groups:  # the prompt is the subject alone and there are no prefixes: nothing else to key on
        groups[()] = list(range(n_ctx))
    means = [keys[idx].mean(0) for idx in groups.values()]
    K = torch.stack(means, 1)  # (F, G)
    return K.mean(1, keepdim=True) if mode == "balanced" else K


@contextmanager
def _tf32_allowed() -> Iterator[None]:
    """Allow TF32 for float32 products on CUDA during the optimisation (restored in `finally`; a no-op on the CPU)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


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
