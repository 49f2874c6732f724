"""What MEND would cost on SmolLM2-135M, measured in one run beside a ROME edit: the figures behind not adding it yet.

MEND (Mitchell et al., ICLR 2022, "Fast Model Editing at Scale", arXiv:2110.11309)
trains, once per model, a hypernetwork (a "gradient transform") that maps the
rank-one factors of a fine-tuning gradient — at each token, the layer input
``u`` and the gradient of the layer output ``δ`` — to an edit of the weight.
After training, an edit costs one forward/backward pass and the hypernetwork.
The setup measured here is the one EasyEdit's training files use
(``hparams/TRAINING/MEND/*.yaml``): the MLP weights (gate, up, down
projections) of the last three blocks; one network per weight shape, shared by
the layers of that shape with a per-layer scale and shift; input ``[u; δ]``;
two low-rank residual layers of rank 1920; batch size 1; up to 100,000 steps;
10,000 zsRE training records (KnowEdit's ``zsre_mend_train_10000``).

In one process this script:

1. counts the hypernetwork's parameters for the model's shapes (arithmetic);
2. times one MEND *training* step on the model — a forward/backward pass for
   ``u`` and ``δ``, the hypernetwork, a forward pass with the edited weights on
   the edit and on a locality example, the locality reference pass, the
   backward pass into the hypernetwork and an Adam step (our own timing
   harness, not a registered method);
3. times one MEND *edit* after training (gradient pass plus hypernetwork);
4. times one ROME edit with govern's ROME (identity covariance, so that no
   statistics are computed; prefixes generated once before timing) — the
   baseline the ratios use.

    PYTHONPATH=. python bench/mend_cost.py                  # the converted SmolLM2 (random weights of its shape if none)
    PYTHONPATH=. python bench/mend_cost.py --config-only DIR --device cuda   # any shape, on a GPU

The table goes to stdout and to ``--log``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RANK = 1920  # EasyEdit's MEND training files
LAST_BLOCKS = 3
MAX_ITERS = 100_000
TRAIN_RECORDS = 10_000
PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def inner_weights(model: Any) -> list[str]:
    n = model.config.num_hidden_layers
    return [f"model.layers.{i}.mlp.{p}.weight" for i in range(n - LAST_BLOCKS, n) for p in PROJECTIONS]


def hypernet_parameters(shapes: list[tuple[int, int]], rank: int = RANK) -> int:
    """Parameters of MEND's shared gradient transforms for weights of these (out, in) shapes.

    One network per distinct shape; each has two low-rank residual layers on
    ``[u; δ]`` (width d = in + out): factors d×r and r×d (r = min(rank, d)), a
    bias d, and a per-layer scale and shift (d each) for every weight sharing it.
    """
    total = 0
    for shape in set(shapes):
        d = sum(shape)
        r = min(rank, d)
        modes = shapes.count(shape)
        total += 2 * (2 * d * r + d + 2 * modes * d)
    return total + len(shapes)  # one learned edit step size per weight


class LowRankResidual:
    """x + relu(x Vᵀ Uᵀ + b) with U (d, r), V (r, d): one layer of the transform (timing only)."""

    def __init__(self, d: int, r: int, device: str, generator: Any) -> None:
        import torch

        self.U = torch.zeros(d, r, device=device, requires_grad=True)
        self.V = (torch.randn(r, d, generator=generator) / d**0.5).to(device).requires_grad_()
        self.b = torch.zeros(d, device=device, requires_grad=True)

    def __call__(self, x: Any) -> Any:
        return x + (x @ self.V.T @ self.U.T + self.b).clamp(min=0)  # (T, d)

    def params(self) -> list[Any]:
        return [self.U, self.V, self.b]


def median_seconds(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="checkpoint directory (default: the converted SmolLM2 in the shared cache)")
    ap.add_argument("--config-only", help="config.json + tokenizer directory; random weights of that shape")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--log", default="bench/results/mend_cost.log")
    args = ap.parse_args(argv)

    import warnings

    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    # the gradient pass hooks the projections' output gradients (δ), which is what that warning describes
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed with respect to module")

    from bench._load import load_model
    from editors import EditContext, FactEdit, get_editor, validate_method_config

    torch.manual_seed(0)
    path = args.model or args.config_only or _converted_smollm2()
    model, tok = load_model(None if args.config_only else path, args.config_only, args.device)
    names = inner_weights(model)
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    shapes = [(int(params[n].shape[0]), int(params[n].shape[1])) for n in names]  # (out, in)
    n_hyper = hypernet_parameters(shapes)
    n_model = sum(p.numel() for p in model.parameters())

    prompt, target = "Which river does Tessellate Bridge cross?", " the Rhine"
    loc_text = "The first lighthouse was built on an island near Alexandria"
    p_ids = tok(prompt, return_tensors="pt")["input_ids"].to(args.device)
    t_ids = tok(target, add_special_tokens=False, return_tensors="pt")["input_ids"].to(args.device)
    edit_ids = torch.cat([p_ids, t_ids], 1)  # (1, T)
    labels = torch.full_like(edit_ids, -100)
    labels[:, p_ids.shape[1]:] = t_ids
    loc_ids = tok(loc_text, return_tensors="pt")["input_ids"].to(args.device)

    g = torch.Generator().manual_seed(0)
    nets = {s: [LowRankResidual(sum(s), min(RANK, sum(s)), args.device, g) for _ in range(2)] for s in set(shapes)}
    scale = {n: torch.ones(sum(shapes[i]), device=args.device, requires_grad=True) for i, n in enumerate(names)}
    edit_lr = torch.full((len(names),), 1e-4, device=args.device, requires_grad=True)
    hyper = [p for layers in nets.values() for net in layers for p in net.params()] + list(scale.values()) + [edit_lr]
    assert sum(p.numel() for p in hyper) <= n_hyper  # the timed transform is no bigger than the counted one
    optim = torch.optim.Adam(hyper, lr=1e-6)
    modules = {n: model.get_submodule(n.rsplit(".", 1)[0]) for n in names}

    def gradient_factors() -> dict[str, tuple[Any, Any]]:
        """One forward/backward pass on the edit example: each inner weight's (u, δ) per token."""
        cap: dict[str, list[Any]] = {n: [] for n in names}
        hooks = []
        for n, m in modules.items():
            hooks.append(m.register_forward_hook(lambda _m, a, _o, n=n: cap[n].append(a[0].detach())))
            hooks.append(m.register_full_backward_hook(lambda _m, _gi, go, n=n: cap[n].append(go[0].detach())))
        for n in names:
            params[n].requires_grad_(True)
        try:
            loss = model(input_ids=edit_ids, labels=labels).loss
            loss.backward()
        finally:
            for h in hooks:
                h.remove()
            for n in names:
                params[n].requires_grad_(False)
                params[n].grad = None
        return {n: (cap[n][0][0], cap[n][1][0]) for n in names}  # (T, in), (T, out)

    def edits(factors: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
        """The transform on [u; δ]: pseudo-factors, then ΔW = lr · δ̃ᵀ ũ (out, in) per weight."""
        out = {}
        for i, n in enumerate(names):
            u, delta = factors[n]
            x = torch.cat([u, delta], -1) * scale[n]  # (T, in + out)
            for layer in nets[shapes[i]]:
                x = layer(x)
            u2, d2 = x[:, : u.shape[1]], x[:, u.shape[1]:]
            out[n] = edit_lr[i] * (d2.T @ u2)  # (out, in)
        return out

    def mend_edit() -> None:
        factors = gradient_factors()  # needs autograd
        with torch.no_grad():
            deltas = edits(factors)
        assert all(torch.isfinite(d).all() for d in deltas.values())

    def mend_train_step() -> None:
        deltas = edits(gradient_factors())
        new = {n: params[n] + deltas[n] for n in names}
        edit_loss = functional_call(model, new, (), {"input_ids": edit_ids, "labels": labels}).loss
        with torch.no_grad():
            ref = F.log_softmax(model(input_ids=loc_ids).logits.float(), -1)
        loc = F.log_softmax(functional_call(model, new, (), {"input_ids": loc_ids}).logits.float(), -1)
        loss = 0.1 * edit_loss + F.kl_div(loc, ref, log_target=True, reduction="batchmean")
        optim.zero_grad()
        loss.backward()
        optim.step()

    rome = get_editor("rome")
    cfg = validate_method_config("rome", {"covariance": "identity"})
    ctx = EditContext(cache_dir=Path("/tmp/govern-mend-cost"), model_digest=f"mend-cost:{path}", config=cfg)
    fact = FactEdit(subject="Tessellate Bridge", prompt="Tessellate Bridge crosses the river", target_new=" Rhine")
    rome.compute(model, tok, [fact], ctx)  # generates and caches the prefixes: not timed
    print("ROME warm-up done", flush=True)

    mend_train_step()  # warm-up
    mend_edit()
    t_train = median_seconds(mend_train_step, args.repeats)
    print(f"MEND training step: {t_train:.3f} s", flush=True)
    t_medit = median_seconds(mend_edit, args.repeats)
    print(f"MEND edit: {t_medit:.3f} s", flush=True)
    t_rome = median_seconds(lambda: rome.compute(model, tok, [fact], ctx), args.repeats)
    print(f"ROME edit: {t_rome:.3f} s", flush=True)

    def hours(s: float) -> str:
        return f"{s / 3600:,.1f} h"

    rows = [
        ("model", f"{path} ({n_model / 1e6:.1f}M parameters, {model.config.num_hidden_layers} blocks, device {args.device})"),
        ("MEND hypernetwork (EasyEdit's setup: 3 blocks x gate/up/down, rank 1920)",
         f"{n_hyper / 1e6:.1f}M parameters = {n_hyper / n_model:.0%} of the model"),
        ("MEND training data (EasyEdit: zsre_mend_train_10000)", f"{TRAIN_RECORDS:,} edit records; none ship with govern"),
        ("MEND training step, batch 1 (measured)", f"{t_train:.3f} s"),
        ("MEND edit after training (measured)", f"{t_medit:.3f} s"),
        ("ROME edit, identity covariance (measured, baseline)", f"{t_rome:.3f} s"),
        ("MEND edit / ROME edit", f"{t_medit / t_rome:.3f}x"),
        (f"MEND training, one pass over {TRAIN_RECORDS:,} records", hours(t_train * TRAIN_RECORDS)),
        (f"MEND training, EasyEdit's max_iters {MAX_ITERS:,}", hours(t_train * MAX_ITERS)),
        ("ROME edits that cost as much as that training",
         f"{t_train * MAX_ITERS / max(t_rome - t_medit, 1e-9):,.0f} (each saves {t_rome - t_medit:.2f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    text = "\n".join([f"| {'quantity'.ljust(width)} | value |", f"|{'-' * (width + 2)}|-------|"]
                     + [f"| {k.ljust(width)} | {v} |" for k, v in rows])
    print(text)
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    log.write_text(f"# python bench/mend_cost.py {' '.join(sys.argv[1:])}  ({when})\n{text}\n")
    return 0


def _converted_smollm2() -> str:
    import os

    root = Path(os.environ.get("GOVERN_SHARED_CACHE", Path(__file__).resolve().parent.parent / ".govern" / "cache"))
    found = sorted((root / "converted").glob("*/config.json"))
    if not found:
        raise SystemExit(f"no converted SmolLM2 under {root / 'converted'}; pass --model DIR or --config-only DIR")
    return str(found[0].parent)


if __name__ == "__main__":
    sys.exit(main())
