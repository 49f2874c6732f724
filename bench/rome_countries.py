"""Edit quality and speed of ROME on SmolLM2-135M over real facts (country capitals).

Facts come from the `countryinfo` package; only facts the model already gets
right are edited (counterfactually: country i gets the capital of another
country). Each edit is measured with the canary's own functions:

* efficacy      P(new) > P(old) on "The capital of X is"
* paraphrase    the same on three rephrasings
* specificity   greedy next token unchanged on five other countries' capital prompts
* probe_spec    greedy next token unchanged on the 40 shipped probes
* drawdown      relative perplexity change on the shipped general text

Configurations run in the same process on the same edits, so their ratios are
comparable: the default, covariance from model-sampled text, identity
covariance (no statistics), and the naive optimisation baseline (full forward
pass every step, no early stop) for the speed ratio.

    python bench/rome_countries.py                      # 20 edits, all configurations
    python bench/rome_countries.py --n 5 --configs default,naive
    python bench/rome_countries.py --layers 4,6,8       # layer sweep of the default
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

CONFIGS: dict[str, dict] = {
    "default": {},
    "wd0.5": {"weight_decay": 0.5, "clamp_norm_factor": 4.0},  # the first default, kept for comparison
    "model_stats": {"stats_source": "model", "stats_tokens": 40000},
    "identity": {"covariance": "identity"},
    "naive": {"cache_lower_layers": False, "early_stop_nll": 0.0},
}
# Rephrasings with the subject mid-sentence, as in the edit prompt. A subject that opens the
# sentence ("{}'s capital is") is tokenised differently (no leading space), so its key is another
# vector; ROME does not reach it. That case is measured apart, as `subject_first`.
PARAPHRASES = ["The capital city of {} is", "Which city is the capital of {}? It is",
               "The national capital of {} is", "In {}, the capital city is"]
SUBJECT_FIRST = "{}'s capital is"


def _suite(suite):
    """The request's slices, the probes and retention text; without the refusal generations (not what ROME changes)."""
    from audits.suites import EvalSuite

    return EvalSuite(suite.name, tuple(i for i in suite.items if i.slice != "refusal"))


def known_facts(gov, loaded, limit: int) -> list[tuple[str, str]]:
    """(country, capital) pairs the model answers correctly, sorted by name."""
    import countryinfo

    from audits.canary import next_tokens

    pairs = []
    for c in countryinfo.all_countries():
        try:
            name, cap = c.name(), c.capital()
        except Exception:  # noqa: BLE001 - some entries lack a capital
            continue
        if isinstance(cap, list):
            cap = cap[0] if cap else None
        if (isinstance(name, str) and isinstance(cap, str) and name and cap and name.isascii() and cap.isascii()
                and " " not in name and name[0].isupper()):
            pairs.append((name, cap))
    pairs = sorted(set(pairs))
    tok = loaded.tokenizer
    firsts = next_tokens(loaded.model, tok, [f"The capital of {n} is" for n, _ in pairs])
    keep = []
    for (name, cap), t in zip(pairs, firsts, strict=True):
        if tok.decode([t]).strip() and cap.startswith(tok.decode([t]).strip()) and len(tok.decode([t]).strip()) >= 3:
            keep.append((name, cap))
    return keep[:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="number of edits")
    ap.add_argument("--configs", default="default,wd0.5,model_stats,identity,naive")
    ap.add_argument("--naive-n", type=int, default=5, help="edits for the slow naive baseline")
    ap.add_argument("--layers", default=None, help="comma list: sweep the default config over these layers")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ROME setting in every configuration (repeatable), e.g. --set layer=8")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=JSON",
                    help='add a configuration, e.g. --extra \'wd0.25={"weight_decay": 0.25}\'')
    ap.add_argument("--out", default="bench/results/rome_countries.json")
    args = ap.parse_args()

    import torch

    from audits.canary import compare, measure, target_logprobs
    from audits.suites import for_request
    from editors import EditContext, FactEdit, get_editor, validate_method_config
    from govern.home import Home
    from govern.service import Govern

    torch.manual_seed(0)
    base = Home.discover()
    import os

    os.environ.setdefault("GOVERN_SHARED_CACHE", str(base.cache))
    gov = Govern(Home(base.root / "bench"))
    model = gov.ensure_default_model()
    loaded = gov.materialise(model.name)
    net, tok = loaded.model, loaded.tokenizer
    facts = known_facts(gov, loaded, args.n + 5)
    if len(facts) < args.n + 5:
        raise SystemExit(f"only {len(facts)} known facts; need {args.n + 5}")
    print(f"{len(facts)} capitals the model knows; editing {args.n}")

    edits = []
    for i in range(args.n):
        name, cap = facts[i]
        new_cap = facts[(i + 7) % len(facts)][1]
        others = [facts[(i + k) % len(facts)][0] for k in range(1, 6)]
        edits.append((FactEdit(subject=name, prompt=f"The capital of {name} is", target_new=" " + new_cap, target_old=" " + cap),
                      _suite(for_request(subject=name, prompt=f"The capital of {name} is", target_new=" " + new_cap,
                                         target_old=" " + cap, paraphrases=[p.format(name) for p in PARAPHRASES],
                                         neighbors=[f"The capital of {o} is" for o in others], generate=False))))
    prod_snaps = [measure(net, tok, suite) for _, suite in edits]

    configs = {k: CONFIGS[k] for k in args.configs.split(",")}
    if args.layers:
        configs = {f"layer{L}": {"layer": int(L)} for L in args.layers.split(",")}
    for item in args.extra:
        name, raw = item.split("=", 1)
        configs[name] = json.loads(raw)
    overrides = {k: json.loads(v) if v[:1] in "0123456789-[{tfn" else v for k, v in (x.split("=", 1) for x in args.set)}
    configs = {k: {**v, **overrides} for k, v in configs.items()}
    editor = get_editor("rome")
    results: dict[str, dict] = {}
    for cname, cfg in configs.items():
        n = args.naive_n if cname == "naive" else args.n
        rows = []
        for (edit, suite), prod in list(zip(edits, prod_snaps, strict=True))[:n]:
            ctx = EditContext(cache_dir=gov.home.shared_cache, model_digest=loaded.base_digest,
                              config=validate_method_config("rome", cfg))
            t = time.perf_counter()
            delta = editor.compute(net, tok, [edit], ctx)
            secs = time.perf_counter() - t
            lead = SUBJECT_FIRST.format(edit.subject)
            with delta.trial(net):
                cand = measure(net, tok, suite)
                new_lp, old_lp = target_logprobs(net, tok, [lead, lead], [edit.target_new, edit.target_old])
            m = {**compare(suite, prod, cand, tok).metrics, "subject_first": float(new_lp > old_lp)}
            rows.append({**m, "seconds": secs, "opt_seconds": secs, "steps": delta.meta["steps"], "subject": edit.subject,
                         "layer": delta.meta["layer"], "stats": delta.meta["statistics"].get("cache")})
            print(f"  {cname:12s} {edit.subject:14s} -> {edit.target_new.strip():14s} eff={m['efficacy']:.0f} "
                  f"para={m['paraphrase']:.2f} spec={m['specificity']:.2f} probe={m['probe_specificity']:.2f} "
                  f"dd={m['drawdown']:+.4f} {secs:.1f}s steps={delta.meta['steps']} stats={rows[-1]['stats']}", flush=True)
        # the first edit of a config may pay for statistics (cache miss): report the median time
        results[cname] = {
            "edits": n,
            **{k: statistics.mean(r[k] for r in rows)
               for k in ("efficacy", "paraphrase", "specificity", "probe_specificity", "drawdown", "subject_first")},
            "median_seconds": statistics.median(r["seconds"] for r in rows),
            "mean_steps": statistics.mean(r["steps"] for r in rows),
            "rows": rows,
        }
    base_t = results.get("naive", {}).get("median_seconds")
    print()
    print(f"ROME on SmolLM2-135M-Instruct, {args.n} country-capital edits, torch threads={torch.get_num_threads()}")
    print(f"{'config':12s} {'edits':>5s} {'efficacy':>9s} {'paraphr.':>9s} {'specif.':>9s} {'probes':>9s} {'drawdown':>9s} "
          f"{'subj-1st':>9s} {'s/edit':>7s} {'steps':>6s} {'speedup':>8s}")
    for cname, r in results.items():
        ratio = f"{base_t / r['median_seconds']:.2f}x" if base_t else "-"
        print(f"{cname:12s} {r['edits']:5d} {r['efficacy']:9.1%} {r['paraphrase']:9.1%} {r['specificity']:9.1%} "
              f"{r['probe_specificity']:9.1%} {r['drawdown']:+9.4f} {r['subject_first']:9.1%} {r['median_seconds']:7.2f} "
              f"{r['mean_steps']:6.1f} {ratio:>8s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
