"""Edit quality of MEMIT on SmolLM2-135M over real facts: a batch, and a long run of sequential edits.

Facts are countries and their capitals (the `countryinfo` package, single-word
ASCII names). Edits are counterfactual, CounterFact-style: country i gets the
capital of country i + 7; the old answer is its real capital. Measures:

* efficacy      P(new) > P(old) (mean per-token log-probability) on "The capital of X is"
* paraphrase    the same on "The capital city of X is"
* specificity   greedy next token unchanged on the capital prompts of held-out countries (never edited)
* drawdown      relative perplexity change on the shipped general text (audits/data/general.txt)

Two experiments, each in one process on the same facts so the figures compare:

* ``batch``: one MEMIT request of --n facts (the issue's aim: efficacy ≥ 90%, specificity ≥ 85% at 100);
* ``sequential``: --n single-fact MEMIT edits applied one after another, with the
  AlphaEdit null-space projection (``projection: always``) and without it
  (``never``); every --every edits: efficacy of the first --first edits, of all
  edits so far, specificity and drawdown. The curve is plotted to --plot.

    python bench/memit_quality.py batch --n 100
    python bench/memit_quality.py sequential --n 100 --every 10
    python bench/memit_quality.py sequential --n 1000 --every 100 --device cuda   # the issue's 1,000 (GPU)

Speed is not measured here (bench/ speed scripts do that); seconds are printed for orientation only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

FAST: dict[str, Any] = {}  # the method's defaults; override with --set KEY=VALUE


def countries() -> list[tuple[str, str]]:
    """(country, capital), single-word ASCII names, sorted; the real facts edits replace."""
    import countryinfo

    pairs = set()
    for c in countryinfo.all_countries():
        try:
            name, cap = c.name(), c.capital()
        except Exception:  # noqa: BLE001 - some entries lack a capital
            continue
        if isinstance(cap, list):
            cap = cap[0] if cap else None
        if (isinstance(name, str) and isinstance(cap, str) and name and cap and name.isascii() and cap.isascii()
                and " " not in name and name[0].isupper() and cap != name):
            pairs.add((name, cap))
    return sorted(pairs)


def load(device: str, dtype: str) -> tuple[Any, Any, str, Path]:
    from govern.home import Home
    from govern.service import Govern

    os.environ.setdefault("GOVERN_SHARED_CACHE", str(Home.discover().cache))
    gov = Govern(Home(Path(tempfile.mkdtemp(prefix="memit-bench-")) / "home"))
    model = gov.ensure_default_model(log=lambda _m: None)
    loaded = gov.materialise(model.name)
    import torch

    net = loaded.model.to(device=device, dtype=getattr(torch, dtype))
    return net, loaded.tokenizer, loaded.base_digest, gov.home.shared_cache


class Scorer:
    """Efficacy, paraphrase, specificity and drawdown against the unedited model (pure reads of the model)."""

    def __init__(self, net: Any, tok: Any, held_out: list[tuple[str, str]]) -> None:
        from audits.canary import next_tokens, perplexity
        from audits.suites import DATA

        self.net, self.tok = net, tok
        self.text = "\n\n".join(p for p in (DATA / "general.txt").read_text().split("\n\n") if not p.startswith("#"))
        self.neighbours = [f"The capital of {c} is" for c, _ in held_out]
        self.base_next = next_tokens(net, tok, self.neighbours)
        self.base_ppl = perplexity(net, tok, self.text)

    def prefers(self, prompts: list[str], new: list[str], old: list[str]) -> float:
        from audits.canary import target_logprobs

        if not prompts:
            return float("nan")
        lp = target_logprobs(self.net, self.tok, prompts + prompts, new + old)
        n = len(prompts)
        return sum(a > b for a, b in zip(lp[:n], lp[n:], strict=True)) / n

    def specificity(self) -> float:
        from audits.canary import next_tokens

        now = next_tokens(self.net, self.tok, self.neighbours)
        return sum(a == b for a, b in zip(now, self.base_next, strict=True)) / len(now)

    def drawdown(self) -> float:
        from audits.canary import perplexity

        return perplexity(self.net, self.tok, self.text) / self.base_ppl - 1


def edits_for(pairs: list[tuple[str, str]], n: int) -> tuple[list[Any], list[tuple[str, str]]]:
    from editors import FactEdit

    if len(pairs) < n + 20:
        raise SystemExit(f"only {len(pairs)} countries with a capital; at most --n {len(pairs) - 20}")
    edited, held_out = pairs[:n], pairs[n:]
    caps = [c for _, c in edited]
    facts = []
    for i, (name, cap) in enumerate(edited):
        new = caps[(i + 7) % n] if n > 7 else held_out[i % len(held_out)][1]
        if new == cap:
            new = held_out[i % len(held_out)][1]
        facts.append(FactEdit(subject=name, prompt=f"The capital of {name} is", target_new=" " + new, target_old=" " + cap))
    return facts, held_out[:60]


def score_facts(s: Scorer, facts: list[Any]) -> dict[str, float]:
    return {"efficacy": s.prefers([f.prompt for f in facts], [f.target_new for f in facts], [f.target_old for f in facts]),
            "paraphrase": s.prefers([f"The capital city of {f.subject} is" for f in facts],
                                    [f.target_new for f in facts], [f.target_old for f in facts])}


def run_batch(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    from editors import EditContext, get_editor, validate_method_config

    net, tok, digest, cache = load(args.device, args.dtype)
    facts, held_out = edits_for(countries(), args.n)
    s = Scorer(net, tok, held_out)
    before = score_facts(s, facts)
    ctx = EditContext(cache_dir=cache, model_digest=digest, config=validate_method_config("memit", settings))
    t = time.perf_counter()
    change = get_editor("memit").compute(net, tok, facts, ctx)
    secs = time.perf_counter() - t
    with change.trial(net):
        after = {**score_facts(s, facts), "specificity": s.specificity(), "drawdown": s.drawdown()}
    row = {"facts": len(facts), "before": before, **after, "seconds": round(secs, 1),
           "steps": change.meta["steps"], "converged": change.meta["converged_facts"], "layers": change.meta["layers"],
           "update_norms": [round(t["update_norm"], 4) for t in change.tensor_summaries()], "settings": settings}
    print(f"\nMEMIT batch of {len(facts)} country-capital edits on SmolLM2-135M ({args.device}, {args.dtype}), "
          f"layers {change.meta['layers']}")
    print(f"{'facts':>6s} {'eff. before':>11s} {'efficacy':>9s} {'paraphr.':>9s} {'specif.':>9s} {'drawdown':>9s} "
          f"{'steps':>6s} {'seconds':>8s}")
    print(f"{len(facts):6d} {before['efficacy']:11.1%} {after['efficacy']:9.1%} {after['paraphrase']:9.1%} "
          f"{after['specificity']:9.1%} {after['drawdown']:+9.4f} {row['steps']:6d} {secs:8.1f}")
    return row


def run_sequential(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    from editors import EditContext, PriorChange, get_editor, validate_method_config
    from editors.projection import keys_path_for

    net, tok, digest, cache = load(args.device, args.dtype)
    facts, held_out = edits_for(countries(), args.n)
    s = Scorer(net, tok, held_out)
    editor = get_editor("memit")
    curves: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"memit-seq-{mode}-"))
        cfg = validate_method_config("memit", {**settings, "projection": mode})
        history: list[Any] = []
        curve = []
        t0 = time.perf_counter()
        try:
            for i, fact in enumerate(facts, 1):
                cid = f"c{i:05d}"
                ctx = EditContext(cache_dir=cache, model_digest=digest, config=cfg, history=tuple(history),
                                  keys_path=keys_path_for(work / f"{cid}.safetensors"))
                change = editor.compute(net, tok, [fact], ctx)
                path = change.save(work / f"{cid}.safetensors")
                change.apply(net, strict=False, undo=False)
                history.append(PriorChange(id=cid, kind=change.kind, digest=change.digest, path=path))
                if i % args.every == 0 or i == len(facts):
                    first = score_facts(s, facts[: min(args.first, i)])
                    allf = score_facts(s, facts[:i])
                    point = {"edits": i, "first_efficacy": first["efficacy"], "efficacy": allf["efficacy"],
                             "paraphrase": allf["paraphrase"], "specificity": s.specificity(), "drawdown": s.drawdown(),
                             "seconds": round(time.perf_counter() - t0, 1)}
                    curve.append(point)
                    print(f"  {mode:7s} {i:5d} edits: first-{min(args.first, i)} efficacy {point['first_efficacy']:.1%}, "
                          f"all {point['efficacy']:.1%}, paraphrase {point['paraphrase']:.1%}, specificity "
                          f"{point['specificity']:.1%}, drawdown {point['drawdown']:+.4f} ({point['seconds']:.0f}s)", flush=True)
        finally:  # the next mode starts from the base: a fresh load, exact
            net, tok, digest, cache = load(args.device, args.dtype)
            s.net, s.tok = net, tok
        curves[mode] = curve
    print(f"\nMEMIT sequential single edits on SmolLM2-135M ({args.device}, {args.dtype}); efficacy of the first "
          f"{args.first} edits, of all edits so far, specificity on {len(held_out)} held-out countries, drawdown")
    print(f"{'mode':8s} {'edits':>6s} {'first eff.':>10s} {'all eff.':>9s} {'paraphr.':>9s} {'specif.':>9s} {'drawdown':>9s}")
    for mode, curve in curves.items():
        for p in curve:
            print(f"{mode:8s} {p['edits']:6d} {p['first_efficacy']:10.1%} {p['efficacy']:9.1%} {p['paraphrase']:9.1%} "
                  f"{p['specificity']:9.1%} {p['drawdown']:+9.4f}")
    if args.plot:
        plot(curves, Path(args.plot), args.first)
    return {"curves": curves, "settings": settings, "n": args.n}


def plot(curves: dict[str, list[dict[str, Any]]], path: Path, first: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for mode, curve in curves.items():
        x = [p["edits"] for p in curve]
        label = {"always": "null-space projection", "never": "no projection"}.get(mode, mode)
        axes[0].plot(x, [p["first_efficacy"] for p in curve], marker="o", label=label)
        axes[1].plot(x, [p["specificity"] for p in curve], marker="o", label=label)
        axes[2].plot(x, [100 * p["drawdown"] for p in curve], marker="o", label=label)
    axes[0].set_title(f"efficacy of the first {first} edits")
    axes[1].set_title("specificity (held-out countries)")
    axes[2].set_title("perplexity drawdown, % (general text)")
    for ax in axes:
        ax.set_xlabel("sequential edits")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1.05)
    axes[1].set_ylim(0, 1.05)
    axes[0].legend()
    fig.suptitle("MEMIT sequential single edits on SmolLM2-135M (bench/memit_quality.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["batch", "sequential"])
    ap.add_argument("--n", type=int, default=100, help="facts in the batch / sequential edits")
    ap.add_argument("--every", type=int, default=10, help="sequential: measure every this many edits")
    ap.add_argument("--first", type=int, default=100, help="sequential: efficacy of the first this many edits")
    ap.add_argument("--modes", default="always,never", help="sequential: projection modes to compare")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a MEMIT setting (repeatable), e.g. --set layers=[4,5,6]")
    ap.add_argument("--plot", default="bench/memit_sequential.png", help="sequential: where the curve goes")
    ap.add_argument("--out", default=None, help="JSON results (default: bench/results/memit_<experiment>.json)")
    args = ap.parse_args()
    settings = {**FAST, **{k: json.loads(v) if v[:1] in "0123456789-[{tfn" else v
                           for k, v in (x.split("=", 1) for x in args.set)}}
    result = run_batch(args, settings) if args.experiment == "batch" else run_sequential(args, settings)
    out = Path(args.out or f"bench/results/memit_{args.experiment}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    print(f"written {out}")


if __name__ == "__main__":
    main()
