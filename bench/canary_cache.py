"""Per-candidate canary time with and without the production score cache, on a 1,000-item suite, in one run.

A candidate's canary scores production and the candidate on the same items. Production does not change
between candidates built on it, so `audits.canary.ScoreCache` keeps production's raw numbers per
(version, item) and a candidate scores one model instead of two (`govern.executors.local.LocalExecutor`,
``production_cache=True``). This bench makes real ROME edits on the model and, for each candidate, times:

* ``without cache`` — `measure(production)` + `measure(candidate)` + compare + gates (the v1 canary);
* ``with cache``    — `ScoreCache.measure(production)` + `measure(candidate)` + compare + gates; the first
  candidate fills the cache (production answers every item once), the next ones score production only on
  their own request items.

Each suite: the request's own items (`audits.suites.for_request` with the default policy's 60 neighbours and
the shipped probes, retention text and refusal prompts) plus shared filler items from `bench/canary_speed.py`
up to 1,000 items. Decisions are compared gate by gate (the default policy's gates, `audits.gates.evaluate`):
the cache must change no number and no decision.

    python bench/canary_cache.py --model .govern/cache/converted/<key>            # SmolLM2, CPU
    python bench/canary_cache.py --model DIR --candidates 5 --device cuda
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FACTS = [  # (subject, prompt, new target): counterfactual capitals, other relations' wording
    ("Canada", "The capital of Canada is", " Toronto"),
    ("Kenya", "The capital of Kenya is", " Mombasa"),
    ("Australia", "The capital of Australia is", " Sydney"),
    ("Brazil", "The capital of Brazil is", " Rio"),
    ("Turkey", "The capital of Turkey is", " Istanbul"),
    ("Vietnam", "The capital of Vietnam is", " Saigon"),
]


def suite_for(model, tok, subject: str, prompt: str, target: str, filler, size: int, neighbors: int):
    from audits.canary import greedy_answer
    from audits.suites import EvalSuite, for_request

    old = " " + greedy_answer(model, tok, prompt).strip()
    own = for_request(subject=subject, prompt=prompt, target_new=target, target_old=old, n_neighbors=neighbors)
    pad = tuple(filler.items[: max(0, size - len(own))])
    return own + EvalSuite("filler", pad), old


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory (weights + tokenizer)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--candidates", type=int, default=3, help="ROME edits on the same production (at most 6)")
    ap.add_argument("--items", type=int, default=1000, help="suite size per candidate")
    ap.add_argument("--policy", default=str(REPO / "policies" / "default.yaml"))
    args = ap.parse_args()

    import sys

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    from _load import load_model
    from canary_speed import build_suite

    from audits.canary import ScoreCache, compare, measure
    from audits.gates import evaluate
    from editors import EditContext, FactEdit, get_editor, validate_method_config
    from editors.changes import tensor_sha256
    from govern.policy import load_policy

    model, tok = load_model(args.model, None, args.device)
    policy = load_policy(args.policy)
    plan = policy.canary.plan()
    gates = list(policy.gates_for("edit"))
    filler = build_suite()
    rome = get_editor("rome")
    config = validate_method_config("rome", policy.methods.get("rome", {}))
    digest = tensor_sha256(next(model.parameters()))
    ctx = EditContext(cache_dir=REPO / ".govern" / "cache", model_digest=digest, config=config)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    cache = ScoreCache()
    rows = []
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, policy {Path(args.policy).name}, "
          f"{len(gates)} gates")
    for n, (subject, prompt, target) in enumerate(FACTS[: args.candidates], 1):
        suite, old = suite_for(model, tok, subject, prompt, target, filler, args.items, policy.canary.neighbors)
        t = time.perf_counter()
        change = rome.compute(model, tok, [FactEdit(subject=subject, prompt=prompt, target_new=target,
                                                    target_old=old)], ctx)
        edit_s = time.perf_counter() - t
        timings, decisions, snaps = {}, {}, {}
        for mode in ("without cache", "with cache"):
            sync()
            t = time.perf_counter()
            prod = cache.measure(model, tok, suite, "production") if mode == "with cache" else measure(model, tok, suite)
            with change.trial(model):
                cand = measure(model, tok, suite)
            report = compare(suite, prod, cand, tok)
            results = evaluate(gates, report.metrics, report.scores, plan)
            sync()
            timings[mode] = time.perf_counter() - t
            decisions[mode] = [(r["gate"], r["result"]) for r in results]
            snaps[mode] = report.scores
        same = decisions["without cache"] == decisions["with cache"] and snaps["without cache"] == snaps["with cache"]
        outcome = ", ".join(f"{g.split(' ')[0]}:{res}" for g, res in decisions["with cache"])
        rows.append((n, f"{subject} ->{target}", len(suite), edit_s, timings["without cache"], timings["with cache"], same,
                     outcome))
        print(f"  candidate {n} ({subject} ->{target}): {len(suite)} items, edit {edit_s:.1f} s, "
              f"without {timings['without cache']:.1f} s, with {timings['with cache']:.1f} s, identical {same}")

    print()
    print("| candidate | edit | items | without cache, s | with cache, s | ratio | same numbers and decisions | gates |")
    print("|---|---|---:|---:|---:|---:|---|---|")
    for n, what, items, _edit, a, b, same, outcome in rows:
        print(f"| {n} | {what} | {items} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {'yes' if same else 'NO'} | {outcome} |")
    if len(rows) > 1:
        later = rows[1:]
        a = sum(r[4] for r in later) / len(later)
        b = sum(r[5] for r in later) / len(later)
        print(f"| 2..{len(rows)} mean | | | {a:.1f} | {b:.1f} | {a / b:.2f}x | "
              f"{'yes' if all(r[6] for r in rows) else 'NO'} | |")
    print(f"cache: {cache.hits} item hits, {cache.misses} misses")
    if not all(r[6] for r in rows):
        raise SystemExit("the production cache changed a number or a decision")


if __name__ == "__main__":
    main()
