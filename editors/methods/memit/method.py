"""MEMIT: Mass-Editing Memory in a Transformer.

Meng, Sharma, Andonian, Belinkov, Bau. "Mass-Editing Memory in a Transformer".
ICLR 2023. arXiv:2210.07229.

ROME writes one fact into one MLP projection. MEMIT writes a batch of ``n``
facts into the MLP output projections of a window of layers ``l₁ < … < l_L``:

1. **Target values** (one batched optimisation): for every fact ``i`` a vector
   ``δᵢ`` (D,) is added to the residual stream leaving block ``l_L`` at the
   subject's last token, over the prompt and a few model-generated prefixes, to
   minimise ``NLL(targetᵢ) + kl_factor·KL("<subject> is a") + weight_decay·|δᵢ|²/|hᵢ|²``
   with ``|δᵢ| ≤ clamp·|hᵢ|``. The facts' rows run in one batch; the blocks
   below ``l_L`` run once (their output is cached). The target is
   ``zᵢ = hᵢ + δᵢ``. Optimisation state is float32 whatever the model's dtype.
2. **Spread over the layers**, lowest first: at layer ``l`` (the layers below
   already updated) take the keys ``K`` (F, n) — the projection's input at the
   subject, averaged over the contexts — and the residual still missing at the
   top, ``R = (Z − H_cur) / (layers left)`` (D, n), and solve in float64
   ``ΔW = R Kᵀ (λ C + K Kᵀ)⁻¹`` (the least-squares update that writes R at K
   while disturbing keys of general text, second moment C, as little as
   possible; the paper's eq. 14). Stored as factors ``A = R``,
   ``B = (λC + KKᵀ)⁻¹ K``: rank ≤ n per layer.
3. With the **null-space projection** (AlphaEdit, `editors.projection`), the
   solve is instead ``ΔW = R Gᵀ (G Gᵀ + β H Hᵀ + alpha I)⁻¹`` with ``G = P K``,
   ``H = P K_prior``: keys of general text and the keys of the edits the model
   already carries keep their values.

The change is one `LowRankUpdate` with a factor pair per layer, in storage
layout. The keys it was written at go to the sidecar ``ctx.keys_path`` so a
later projected edit can protect them.

This is an independent implementation from the papers' equations.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from editors.base import EditContext, FactEdit
from editors.capture import capture
from editors.changes.lowrank import LowRankUpdate, add_low_rank_
from editors.errors import EditSpecError, OptimisationError, StatisticsError
from editors.layers import LayerMap, layer_map_for
from editors.methods.memit.config import MEMITConfig
from editors.methods.rome.method import frozen, generate_prefixes, subject_last_token
from editors.projection import keys_path_for, load_keys, null_space_cov, preserved_basis, projected_factors, save_keys
from editors.stats import default_cache, device_second_moment
from editors.tokens import pad_right


def memit_factors(C: torch.Tensor | None, K: torch.Tensor, R: torch.Tensor, *, weight: float,
                  ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A (D, n), B (F, n)) in float64 with ``ΔW = A Bᵀ = R Kᵀ (λ C' + K Kᵀ)⁻¹``.

    ``C' = C + ridge · tr(C)/F · I``, λ = `weight`. ΔW minimises
    ``‖ΔW K − R‖² + λ E‖ΔW k‖²`` over keys with second moment C (Meng et al.
    2023, eq. 14). Without statistics (`C` None) C is taken isotropic at the
    keys' own scale, ``mean‖kᵢ‖²/F · I``, so λ means the same in both cases.
    """
    K64, R64 = K.double(), R.double()  # (F, n), (D, n)
    Fdim = K64.shape[0]
    eye = torch.eye(Fdim, dtype=torch.float64, device=K64.device)
    if C is None:
        Cr = float(K64.pow(2).sum(0).mean()) / Fdim * eye
    else:
        C64 = C.to(K64)
        Cr = C64 + ridge * torch.trace(C64) / Fdim * eye
    B = torch.linalg.solve(weight * Cr + K64 @ K64.T, K64)  # (F, n)
    return R64, B


@dataclass
class _Batch:
    """The rows of one value-optimisation batch: every fact's contexts (+ target tokens) and its KL prompt."""

    input_ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T)
    subj: torch.Tensor  # (B,) subject's last token per row
    row_fact: torch.Tensor  # (B,) the fact (0..n-1) of each row
    n_ctx_rows: int  # rows [0, n_ctx_rows) are contexts; the n KL rows follow
    sel_rows: torch.Tensor  # (N,) positions whose logits the target NLL needs
    sel_cols: torch.Tensor  # (N,)
    sel_tok: torch.Tensor  # (N,) the target token predicted there
    sel_fact: torch.Tensor  # (N,)
    sel_weight: torch.Tensor  # (N,) 1 / (contexts · target tokens) of the fact
    kl_cols: torch.Tensor  # (n,) last position of each KL row


class MEMIT:
    """Batch edit over a window of MLP layers; see the module docstring."""

    name = "memit"

    def __init__(self) -> None:
        # live as long as the editor (get_editor reuses it): prefixes and earlier keys; covariances and bases on the
        # device go through the one bounded `editors.stats.default_cache`
        self._prefix_cache: dict[tuple, list[str]] = {}
        self._keys_cache: dict[str, tuple[dict[str, torch.Tensor], int] | None] = {}

    def compute(self, model: nn.Module, tokenizer: Any, payload: Sequence[FactEdit], ctx: EditContext) -> LowRankUpdate:
        facts = _facts(payload)
        cfg = _config(ctx)
        started = time.perf_counter()
        lm = layer_map_for(model)
        layers = cfg.layers or default_layers(lm, model, cfg.window)
        for layer in layers:
            lm.check_layer(model, layer)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        names = [lm.weight_name(layer) for layer in layers]

        ctx.report("prefixes", 0.0)
        pkey = (ctx.model_digest, cfg.context_prefixes, cfg.prefix_tokens, cfg.seed)
        if pkey not in self._prefix_cache:
            self._prefix_cache[pkey] = generate_prefixes(model, tokenizer, cfg.context_prefixes, cfg.prefix_tokens, cfg.seed)
        prefixes = self._prefix_cache[pkey]

        ctx.report("statistics", 0.0)
        stats = {layer: self._statistics(model, tokenizer, lm, layer, cfg, ctx) for layer in layers}

        earlier, active_facts, unprotected = self._earlier_keys(ctx, names)
        project = cfg.covariance != "identity" and (
            cfg.projection == "always" or (cfg.projection == "auto" and active_facts >= cfg.projection_after))

        with frozen(model):
            Z, value_info = self._target_values(model, tokenizer, lm, layers[-1], facts, prefixes, cfg, ctx)
            factors, keys, layer_info = self._spread(model, tokenizer, lm, layers, facts, prefixes, Z, stats, cfg,
                                                     project, earlier, ctx)

        change = LowRankUpdate.build(model, "memit", factors, meta={
            "layers": layers,
            "modules": [lm.mlp_out_name(layer) for layer in layers],
            "family": lm.family,
            "facts": len(facts),
            "covariance": "identity" if cfg.covariance == "identity" else "second_moment",
            "statistics": {str(layer): stats[layer][1] for layer in layers},
            "context_prompts": 1 + len(prefixes),
            "projection": {"used": project, "mode": cfg.projection, "active_facts_before": active_facts,
                           "earlier_changes": len(ctx.history), "unprotected_changes": unprotected},
            "per_layer": layer_info[:-1],
            **layer_info[-1],
            **value_info,
            "seconds": round(time.perf_counter() - started, 3),
            "config": cfg.model_dump(),
        })
        if ctx.keys_path is not None:
            save_keys(ctx.keys_path, keys, facts=len(facts), change_digest=change.digest)
        ctx.report("done", 1.0)
        return change

    # -- 0. statistics and earlier edits ---------------------------------------------------
    def _statistics(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, cfg: MEMITConfig,
                    ctx: EditContext) -> tuple[torch.Tensor | None, dict[str, Any]]:
        if cfg.covariance == "identity":
            return None, {"kind": "identity"}
        try:
            C, info = device_second_moment(ctx.cache_dir / "stats", model, tokenizer, lm, layer,
                                           model_digest=ctx.model_digest, source=cfg.stats_source,
                                           n_tokens=cfg.stats_tokens, corpus_path=cfg.stats_corpus,
                                           progress=ctx.progress)
        except OSError as e:
            raise StatisticsError(f"could not read or write the statistics cache in {ctx.cache_dir}: {e}") from e
        return C, {k: v for k, v in info.items() if k != "cache"}

    def _basis(self, C: torch.Tensor, info: dict[str, Any], cfg: MEMITConfig, what: str = "basis") -> torch.Tensor:
        """The preserved basis Q of C (`what` "basis"), or ``P C P`` ("null_cov"): both depend only on the statistics
        and preserved_energy, so sequential edits of one model compute each once (the bounded device cache)."""
        key = (what, info.get("model_digest"), info.get("layer"), info.get("source"), info.get("tokens"),
               cfg.preserved_energy, str(C.device))
        found = default_cache.get(key)
        if found is None:
            found = (preserved_basis(C, cfg.preserved_energy) if what == "basis"
                     else null_space_cov(C, self._basis(C, info, cfg)))
            default_cache.put(key, found, found.numel() * found.element_size())
        return found

    def _earlier_keys(self, ctx: EditContext, names: list[str]) -> tuple[dict[str, torch.Tensor], int, int]:
        """Keys of the model's earlier edits at `names` (F, m), the facts they edited, and how many changes had none."""
        found: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        facts = unprotected = 0
        for prior in ctx.history:
            if prior.digest not in self._keys_cache:
                self._keys_cache[prior.digest] = load_keys(keys_path_for(Path(prior.path)), prior.digest)
            stored = self._keys_cache[prior.digest]
            if stored is None:
                facts += 1  # a change without a keys file (e.g. ROME's) counts as one fact, unprotected
                unprotected += 1
                continue
            keys, n = stored
            facts += n
            for name in names:
                if name in keys:
                    found[name].append(keys[name])
        return {n: torch.cat(ks, 1) for n, ks in found.items() if ks}, facts, unprotected

    # -- 1. target values --------------------------------------------------------------------
    def _rows(self, tokenizer: Any, facts: Sequence[FactEdit], prefixes: list[str], device: torch.device) -> _Batch:
        rows: list[list[int]] = []
        subj: list[int] = []
        row_fact: list[int] = []
        sel: list[tuple[int, int, int, int, float]] = []  # (row, col, token, fact, weight)
        n_ctx = 1 + len(prefixes)
        for i, f in enumerate(facts):
            target_ids = tokenizer(f.target_new, add_special_tokens=False)["input_ids"]
            if not target_ids:
                raise EditSpecError(f"the target {f.target_new!r} of {f.subject!r} has no tokens")
            s0 = f.prompt.index(f.subject)
            for pre in [""] + [p + " " for p in prefixes]:
                ids, si = subject_last_token(tokenizer, pre + f.prompt, len(pre) + s0, len(pre) + s0 + len(f.subject))
                r = len(rows)
                for j, tok_id in enumerate(target_ids):  # logits at position p-1 predict token p
                    sel.append((r, len(ids) - 1 + j, tok_id, i, 1.0 / (n_ctx * len(target_ids))))
                rows.append(ids + target_ids)
                subj.append(si)
                row_fact.append(i)
        n_ctx_rows = len(rows)
        kl_cols = []
        for i, f in enumerate(facts):
            ids, si = subject_last_token(tokenizer, f"{f.subject} is a", 0, len(f.subject))
            rows.append(ids)
            subj.append(si)
            row_fact.append(i)
            kl_cols.append(len(ids) - 1)
        input_ids, mask = pad_right(rows, tokenizer.pad_token_id, device)  # (B, T)

        def t(xs: list, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.tensor(xs, dtype=dtype, device=device)

        return _Batch(input_ids=input_ids, mask=mask, subj=t(subj), row_fact=t(row_fact), n_ctx_rows=n_ctx_rows,
                      sel_rows=t([s[0] for s in sel]), sel_cols=t([s[1] for s in sel]), sel_tok=t([s[2] for s in sel]),
                      sel_fact=t([s[3] for s in sel]), sel_weight=t([s[4] for s in sel], torch.float32), kl_cols=t(kl_cols))

    def _target_values(self, model: nn.Module, tokenizer: Any, lm: LayerMap, top: int, facts: Sequence[FactEdit],
                       prefixes: list[str], cfg: MEMITConfig, ctx: EditContext) -> tuple[torch.Tensor, dict[str, Any]]:
        """Z (n, D) float32: the residual stream each fact's subject should carry leaving block `top`."""
        device = next(model.parameters()).device
        Zs, steps, nlls = [], [], []
        for start in range(0, len(facts), cfg.value_batch):
            chunk = facts[start : start + cfg.value_batch]
            z, s, nll = self._optimise_chunk(model, tokenizer, lm, top, chunk, prefixes, cfg, ctx, device,
                                             done_before=start, total=len(facts))
            Zs.append(z)
            steps.append(s)
            nlls.append(nll)
        nll_all = torch.cat(nlls)
        info = {"steps": max(steps), "final_target_nll_mean": round(float(nll_all.mean()), 5),
                "final_target_nll_max": round(float(nll_all.max()), 5),
                "converged_facts": int((nll_all < cfg.early_stop_nll).sum())}
        return torch.cat(Zs), info

    def _optimise_chunk(self, model: nn.Module, tokenizer: Any, lm: LayerMap, top: int, facts: Sequence[FactEdit],
                        prefixes: list[str], cfg: MEMITConfig, ctx: EditContext, device: torch.device, *,
                        done_before: int, total: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        b = self._rows(tokenizer, facts, prefixes, device)
        n = len(facts)
        rows_all = torch.arange(b.input_ids.shape[0], device=device)
        head = model.get_output_embeddings()  # type: ignore[operator]  # a transformers PreTrainedModel
        body = _get(model, lm.body)
        cap: dict[str, torch.Tensor] = {}

        def keep_hidden(_m: nn.Module, _a: tuple, out: Any) -> None:
            cap["h"] = (out[0] if isinstance(out, tuple) else out).detach()

        handle = lm.block(model, top).register_forward_hook(keep_hidden)
        try:
            with torch.no_grad():
                final0 = body(input_ids=b.input_ids, attention_mask=b.mask, use_cache=False).last_hidden_state
        finally:
            handle.remove()
        hidden = cap["h"]  # (B, T, D) leaving block `top`
        kl_rows = rows_all[b.n_ctx_rows :]
        with torch.no_grad():
            p0_log = F.log_softmax(head(final0[kl_rows, b.kl_cols]).float(), dim=-1)  # (n, V)
        h_subj = hidden[rows_all, b.subj].float()  # (B, D)
        ctx_fact = b.row_fact[: b.n_ctx_rows]
        counts = torch.zeros(n, device=device).index_add_(0, ctx_fact, torch.ones_like(ctx_fact, dtype=torch.float32))
        h0 = torch.zeros(n, h_subj.shape[1], device=device).index_add_(0, ctx_fact, h_subj[: b.n_ctx_rows])
        h0 = h0 / counts[:, None]  # (n, D) the fact's mean hidden state at the subject
        h_norm = h0.norm(dim=1)  # (n,)
        max_norm = (cfg.clamp_norm_factor * h_norm)[:, None]  # (n, 1)

        # float32 whatever the model's dtype: Adam's eps underflows in float16
        delta = torch.zeros(n, hidden.shape[-1], device=device, dtype=torch.float32, requires_grad=True)  # (n, D)
        optim = torch.optim.Adam([delta], lr=cfg.lr)
        # per fact: δ is the first iterate under `early_stop_nll` (frozen there), else the iterate of least target NLL
        # (step 0 is δ = 0, so no fact's target ends less likely than without the edit); the host reads the flags
        # only every `stop_check_every` steps. Facts are independent rows (separable loss, elementwise Adam, a
        # per-row clamp), so the steps a converged fact keeps taking change nothing that is returned.
        best = torch.zeros_like(delta, requires_grad=False)
        best_nll = torch.full((n,), float("inf"), device=device)
        done = torch.zeros(n, dtype=torch.bool, device=device)
        sel_rows = torch.cat([b.sel_rows, kl_rows])
        sel_cols = torch.cat([b.sel_cols, b.kl_cols])
        n_sel = b.sel_rows.shape[0]
        steps_run = 0
        with lm.upper_stack(model, top) as run_upper:
            for step in range(cfg.steps):
                steps_run = step + 1
                add = torch.zeros_like(hidden)
                add[rows_all, b.subj] = delta[b.row_fact].to(hidden.dtype)  # δ of each row's fact at its subject
                final = run_upper(hidden + add, b.mask)  # (B, T, D)
                logp = F.log_softmax(head(final[sel_rows, sel_cols]).float(), dim=-1)  # (N + n, V)
                tok_lp = logp[:n_sel].gather(1, b.sel_tok[:, None])[:, 0]  # (N,)
                nll = torch.zeros(n, device=device).index_add(0, b.sel_fact, -tok_lp * b.sel_weight)  # (n,)
                kl = (p0_log.exp() * (p0_log - logp[n_sel:])).sum(1)  # (n,)
                wd = cfg.weight_decay * delta.pow(2).sum(1) / h_norm.pow(2)
                loss = (nll + cfg.kl_factor * kl + wd).sum()
                with torch.no_grad():
                    now = nll.detach()
                    better = (now < best_nll) & ~done  # NaN is never better
                    best = torch.where(better[:, None], delta.detach(), best)
                    best_nll = torch.where(better, now, best_nll)
                    done = done | ((now < cfg.early_stop_nll) & ~done)  # its first iterate under it is `best` already
                ctx.report("optimise", (done_before + n * steps_run / cfg.steps) / total)
                if steps_run % cfg.stop_check_every == 0 and bool(done.all()):
                    break
                optim.zero_grad()
                loss.backward()
                optim.step()
                with torch.no_grad():  # |δᵢ| ≤ clamp·|hᵢ|, without a host sync
                    norms = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
                    delta.mul_(torch.clamp(max_norm / norms, max=1.0))
        if not bool(torch.isfinite(best).all()):
            raise OptimisationError(f"MEMIT's value optimisation diverged (non-finite δ after {steps_run} steps); "
                                    "lower memit.lr or raise memit.weight_decay")
        return (h0 + best).detach(), steps_run, best_nll

    # -- 2 + 3. spread over the layers -----------------------------------------------------
    def _keys_and_top(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layer: int, top: int,
                      facts: Sequence[FactEdit], prefixes: list[str],
                      cfg: MEMITConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """(K (F, n), H (n, D)): per fact, the mean key at `layer` and the mean hidden state leaving `top` (current weights)."""
        device = next(model.parameters()).device
        Ks, Hs = [], []
        for start in range(0, len(facts), cfg.value_batch):
            b = self._rows(tokenizer, facts[start : start + cfg.value_batch], prefixes, device)
            n = len(facts[start : start + cfg.value_batch])
            rows = torch.arange(b.n_ctx_rows, device=device)
            with torch.no_grad():  # the key at `layer` and the hidden state leaving `top`; blocks above are skipped
                cap = capture(model, {"input_ids": b.input_ids[: b.n_ctx_rows], "attention_mask": b.mask[: b.n_ctx_rows]},
                              inputs_of={"k": lm.mlp_out_module(model, layer)}, outputs_of={"h": lm.block(model, top)})
            fact = b.row_fact[: b.n_ctx_rows]
            subj = b.subj[: b.n_ctx_rows]
            counts = torch.zeros(n, device=device, dtype=torch.float64).index_add_(
                0, fact, torch.ones_like(fact, dtype=torch.float64))[:, None]
            k = cap["k"][rows, subj].double()  # (rows, F)
            h = cap["h"][rows, subj].double()  # (rows, D)
            Ks.append(torch.zeros(n, k.shape[1], dtype=torch.float64, device=device).index_add_(0, fact, k) / counts)
            Hs.append(torch.zeros(n, h.shape[1], dtype=torch.float64, device=device).index_add_(0, fact, h) / counts)
        return torch.cat(Ks).T.contiguous(), torch.cat(Hs)  # (F, n), (n, D)

    def _spread(self, model: nn.Module, tokenizer: Any, lm: LayerMap, layers: list[int], facts: Sequence[FactEdit],
                prefixes: list[str], Z: torch.Tensor, stats: dict[int, tuple[torch.Tensor | None, dict[str, Any]]],
                cfg: MEMITConfig, project: bool, earlier: dict[str, torch.Tensor],
                ctx: EditContext) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, torch.Tensor],
                                           list[dict[str, Any]]]:
        top = layers[-1]
        factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        keys: dict[str, torch.Tensor] = {}
        info: list[dict[str, Any]] = []
        params = dict(model.named_parameters())
        with _restored(model, [lm.weight_name(layer) for layer in layers]):
            for i, layer in enumerate(layers):
                ctx.report("spread", i / len(layers))
                name = lm.weight_name(layer)
                K, H = self._keys_and_top(model, tokenizer, lm, layer, top, facts, prefixes, cfg)  # (F, n), (n, D)
                R = ((Z.double() - H) / (len(layers) - i)).T  # (D, n): this layer's share of what is missing at the top
                C, sinfo = stats[layer]
                row: dict[str, Any] = {"layer": layer, "residual_norm_mean": round(float(R.norm(dim=0).mean()), 5)}
                if project and C is not None:
                    Q = self._basis(C, sinfo, cfg)
                    prior = earlier.get(name)
                    try:
                        A, B = projected_factors(K, R, Q, prior, reg=cfg.projection_reg,
                                                 earlier_weight=cfg.earlier_keys_weight,
                                                 null_cov=(self._basis(C, sinfo, cfg, "null_cov")
                                                           if cfg.null_space_cov_weight > 0 else None),
                                                 cov_weight=cfg.null_space_cov_weight)
                    except ValueError as e:
                        raise OptimisationError(f"MEMIT at layer {layer}: {e}") from None
                    row.update(preserved_dims=int(Q.shape[1]), null_space_dims=int(Q.shape[0] - Q.shape[1]),
                               earlier_keys=0 if prior is None else int(prior.shape[1]))
                else:
                    A, B = memit_factors(C, K, R, weight=cfg.mom2_update_weight, ridge=cfg.ridge)
                if not (bool(torch.isfinite(A).all()) and bool(torch.isfinite(B).all())):
                    raise OptimisationError(f"MEMIT's solve at layer {layer} gave non-finite factors; raise memit.ridge "
                                            "or memit.mom2_update_weight")
                stored = lm.storage_factors(A, B)  # ΔW_stored = A' B'ᵀ
                a32, b32 = stored[0].float(), stored[1].float()  # what the change will store: the layers above see it
                with torch.no_grad():
                    add_low_rank_(params[name], a32, b32)
                factors[name] = (a32, b32)
                keys[name] = K.float()
                info.append(row)
                if i == 0:
                    missing_before = (Z.double() - H).norm(dim=1)  # (n,)
            # what is still missing at the top with every layer updated: the spread's own check
            _, H = self._keys_and_top(model, tokenizer, lm, top, top, facts, prefixes, cfg)
            missing_after = (Z.double() - H).norm(dim=1)  # (n,)
        info.append({"top_residual_before": round(float(missing_before.mean()), 5),
                     "top_residual_after": round(float(missing_after.mean()), 5)})
        return factors, keys, info


def default_layers(lm: LayerMap, model: nn.Module, window: int) -> list[int]:
    """`window` consecutive blocks centred on the family's ROME layer, inside the model."""
    n = lm.num_layers(model)
    window = min(window, n)
    start = min(max(0, lm.default_layer(model) - window // 2), n - window)
    return list(range(start, start + window))


@contextmanager
def _restored(model: nn.Module, names: list[str]) -> Iterator[None]:
    """Keep copies of the named parameters; put their exact bytes back in `finally`."""
    params = dict(model.named_parameters())
    saved = {n: params[n].detach().clone() for n in names}
    try:
        yield
    finally:
        with torch.no_grad():
            for n, w in saved.items():
                params[n].copy_(w)


def _get(root: nn.Module, dotted: str) -> Any:
    obj: Any = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _facts(payload: Sequence[FactEdit]) -> Sequence[FactEdit]:
    if isinstance(payload, FactEdit):
        raise EditSpecError("pass the facts as a sequence, e.g. [FactEdit(...)]")
    if len(payload) == 0:
        raise EditSpecError("MEMIT needs at least one fact to edit")
    seen: dict[tuple[str, str], FactEdit] = {}
    for f in payload:
        key = (f.subject, f.prompt.replace(f.subject, "{}", 1))
        other = seen.setdefault(key, f)
        if other is not f and other.target_new != f.target_new:
            raise EditSpecError(f"the batch asks for two targets for {f.subject!r} on the same prompt "
                                f"({other.target_new!r}, {f.target_new!r}); keep one fact per subject and relation")
    return payload


def _config(ctx: EditContext) -> MEMITConfig:
    if ctx.config is None:
        return MEMITConfig.model_validate({})
    if not isinstance(ctx.config, MEMITConfig):
        raise EditSpecError(f"MEMIT needs its settings as a MEMITConfig, got {type(ctx.config).__name__}; build it with "
                            "editors.validate_method_config('memit', settings)")
    return ctx.config
