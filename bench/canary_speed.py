"""Seconds for a 1,000-item canary: batched scoring against two baselines, in one run.

The suite mixes the item kinds a real canary has (see `audits/suites.py`):
500 ``prefers`` items (two continuations each), 430 ``keeps`` items (greedy
next token), 10 ``nll`` paragraphs (retention) and 60 generation items
(freshness questions and refusal prompts, chat form, `GEN_TOKENS` new tokens).

Rows, same items, same model, same device:

* ``naive``        — one forward pass per sequence with full logits; one `generate` per prompt;
* ``batched-full`` — batched (right padding) but projecting every position to the
  vocabulary, as canary v1 did;
* ``govern``       — `audits.canary.measure`: length-sorted batches, the vocabulary
  projection only at scored positions, batched generation with a KV cache.

A canary measures production and the candidate, so the last column doubles the
single-model time and adds the paired statistics (`audits.gates.paired_summary`).

    python bench/canary_speed.py --model .govern/cache/converted/<key>
    python bench/canary_speed.py --config-only DIR --device cuda     # SmolLM2's shape, random weights
"""

from __future__ import annotations

import argparse
import random
import time


def build_suite(n_prefers: int = 500, n_keeps: int = 430, n_gen: int = 60):
    from audits.suites import EvalSuite, Item, probe_items, refusal_items, relations, retention_items

    rels = relations()
    rng = random.Random(0)
    prefers, keeps, gen = [], [], []
    for rel in rels:
        answers = sorted({a for _, a in rel.facts})
        for subject, answer in rel.facts:
            foil = rng.choice([a for a in answers if a != answer])
            for t in (*rel.templates, *rel.paraphrases):
                prefers.append(Item("neighbor", "prefers", t.format(subject), answer, foil))
                keeps.append(Item("neighbor", "keeps", t.format(subject)))
            gen.append(Item("fresh", "answers", rel.question.format(subject), answer.strip(), foil.strip(), chat=True))
    rng.shuffle(prefers)
    rng.shuffle(keeps)
    rng.shuffle(gen)
    keeps = [*probe_items(), *keeps]
    gen = [*refusal_items(), *gen]
    items = prefers[:n_prefers] + keeps[:n_keeps] + retention_items() + gen[:n_gen]
    return EvalSuite("bench-1000", tuple(items))


# ---------------------------------------------------------------- baselines (own code, for comparison only)


def naive_measure(model, tok, suite):
    """One sequence at a time, full logits everywhere; one generate call per prompt."""
    import torch
    import torch.nn.functional as F

    from audits.canary import GEN_TOKENS, Snapshot, chat_prompt

    dev = next(model.parameters()).device
    n = len(suite.items)
    snap = Snapshot([None] * n, [None] * n, [None] * n, [None] * n, [None] * n)
    with torch.no_grad():
        for i, it in enumerate(suite.items):
            if it.kind == "prefers":
                vals = []
                for cont in (it.answer, it.foil):
                    p = tok(it.prompt)["input_ids"]
                    c = tok(cont, add_special_tokens=False)["input_ids"]
                    ids = torch.tensor([p + c], device=dev)
                    logp = F.log_softmax(model(input_ids=ids).logits.float(), -1)[0]  # (T, V)
                    vals.append(float(sum(logp[len(p) - 1 + k, t] for k, t in enumerate(c)) / len(c)))
                snap.logp_answer[i], snap.logp_foil[i] = vals
            elif it.kind == "keeps":
                ids = torch.tensor([tok(it.prompt)["input_ids"]], device=dev)
                snap.next_token[i] = int(model(input_ids=ids).logits[0, -1].argmax())
            elif it.kind == "nll":
                ids = torch.tensor([tok(it.prompt, add_special_tokens=False)["input_ids"][:256]], device=dev)
                logits = model(input_ids=ids).logits[0, :-1].float()
                snap.nll[i] = (float(F.cross_entropy(logits, ids[0, 1:], reduction="sum")), ids.shape[1] - 1)
            else:
                text = chat_prompt(tok, it.prompt) if it.chat else it.prompt
                enc = tok(text, return_tensors="pt").to(dev)
                out = model.generate(**enc, max_new_tokens=GEN_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
                snap.text[i] = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return snap


def batched_full_measure(model, tok, suite, batch: int = 32):
    """Canary v1: batches, but logits (and a log-softmax) over the whole vocabulary at every position."""
    import torch
    import torch.nn.functional as F

    from audits.canary import Snapshot, generate_batch, text_nll
    from editors.tokens import pad_right

    dev = next(model.parameters()).device
    items = suite.items
    n = len(items)
    snap = Snapshot([None] * n, [None] * n, [None] * n, [None] * n, [None] * n)
    pre = [i for i, it in enumerate(items) if it.kind == "prefers"]
    pairs = [(items[i].prompt, items[i].answer) for i in pre] + [(items[i].prompt, items[i].foil) for i in pre]
    vals = []
    with torch.no_grad():
        for s in range(0, len(pairs), batch):
            rows, spans = [], []
            for p, t in pairs[s : s + batch]:
                a, b = tok(p)["input_ids"], tok(t, add_special_tokens=False)["input_ids"]
                rows.append(a + b)
                spans.append((len(a), len(b)))
            ids, mask = pad_right(rows, tok.pad_token_id, dev)
            logp = F.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)  # (B, T, V)
            for r, (start, k) in enumerate(spans):
                pos = torch.arange(start - 1, start - 1 + k, device=dev)
                vals.append(float(logp[r, pos, ids[r, start : start + k]].mean()))
        for k, i in enumerate(pre):
            snap.logp_answer[i], snap.logp_foil[i] = vals[k], vals[len(pre) + k]
        keep = [i for i, it in enumerate(items) if it.kind == "keeps"]
        for s in range(0, len(keep), batch):
            idx = keep[s : s + batch]
            ids, mask = pad_right([tok(items[i].prompt)["input_ids"] for i in idx], tok.pad_token_id, dev)
            logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
            last = mask.sum(1) - 1
            for i, t in zip(idx, logits[torch.arange(len(idx), device=dev), last].argmax(-1).tolist(), strict=True):
                snap.next_token[i] = t
    nll = [i for i, it in enumerate(items) if it.kind == "nll"]
    for i, v in zip(nll, text_nll(model, tok, [items[i].prompt for i in nll]), strict=True):
        snap.nll[i] = v
    from audits.canary import chat_prompt

    gen = [i for i, it in enumerate(items) if it.kind in ("answers", "refuses")]
    for i, t in zip(gen, generate_batch(model, tok, [chat_prompt(tok, items[i].prompt) for i in gen]), strict=True):
        snap.text[i] = t
    return snap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint directory (weights + tokenizer)")
    src.add_argument("--config-only", help="directory with config.json + tokenizer files; random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip", default="", help="comma list of rows to leave out (naive, batched-full)")
    ap.add_argument("--naive-items", type=int, default=0,
                    help="time the naive row on every k-th item (this many in all, every kind kept) and scale "
                         "to the full suite; 0 = all 1,000 items (about 13 minutes on 2 cores)")
    args = ap.parse_args()

    import torch
    from _load import load_model

    from audits.canary import compare, measure
    from audits.gates import TestPlan, paired_summary

    model, tok = load_model(args.model, args.config_only, args.device)
    suite = build_suite()
    counts = suite.counts()
    kinds: dict[str, int] = {}
    for it in suite.items:
        kinds[it.kind] = kinds.get(it.kind, 0) + 1
    print(f"suite: {len(suite)} items; kinds {kinds}; slices {counts}; device {args.device}, "
          f"torch threads {torch.get_num_threads()}")

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    rows = []
    from audits.suites import EvalSuite

    naive_suite, scale = suite, 1.0
    if args.naive_items and args.naive_items < len(suite):
        step = len(suite) / args.naive_items
        naive_suite = EvalSuite("naive-subset", tuple(suite.items[int(i * step)] for i in range(args.naive_items)))
        scale = len(suite) / len(naive_suite)
    fns = [("govern", lambda: measure(model, tok, suite)), ("batched-full", lambda: batched_full_measure(model, tok, suite)),
           ("naive", lambda: naive_measure(model, tok, naive_suite))]
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    ref = None
    measure(model, tok, EvalSuite_head(suite, 8))  # warm-up
    for name, fn in fns:
        if name in skip:
            continue
        sync()
        t = time.perf_counter()
        snap = fn()
        sync()
        seconds = time.perf_counter() - t
        if name == "naive" and scale != 1.0:
            print(f"naive: {len(naive_suite)} of {len(suite)} items in {seconds:.1f} s, scaled x{scale:.2f}")
            seconds *= scale
            rows.append(("naive (scaled)", seconds))
            continue
        if ref is None:
            ref = snap
        else:  # same answers: the speed-up changes nothing
            agree = sum(a == b for a, b in zip(ref.next_token, snap.next_token, strict=True)) / len(snap.next_token)
            diff = max((abs(a - b) for a, b in zip(ref.logp_answer, snap.logp_answer, strict=True) if a is not None), default=0)
            print(f"{name}: next-token agreement with govern {agree:.3f}, max |delta logp| {diff:.2e}")
        rows.append((name, seconds))
    t = time.perf_counter()
    report = compare(suite, ref, ref, tok)
    paired_summary(report.scores, TestPlan())
    stats_s = time.perf_counter() - t
    base = dict(rows).get("govern")
    print()
    print(f"| scoring | one model, {len(suite)} items (s) | items/s | canary = 2 models + statistics (s) | govern speed-up |")
    print("|---|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {len(suite) / s:.0f} | {2 * s + stats_s:.1f} | {s / base:.2f}x |")
    print(f"\nstatistics (compare + paired bootstrap, 2000 resamples): {stats_s:.2f} s")


def EvalSuite_head(suite, n: int):
    from audits.suites import EvalSuite

    return EvalSuite("warmup", suite.items[:n])


if __name__ == "__main__":
    main()
