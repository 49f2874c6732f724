"""Edit quality of MEMIT on SmolLM2-135M over real facts: a batch, and a long run of sequential edits.

Facts are real (the `countryinfo` package): countries' capitals, asked
mid-sentence ("The capital of X is"), and provinces' countries, asked subject-first
("Ontario is a province of"), interleaved; some targets are several tokens
(" Andorra la Vella"). Edits are counterfactual, CounterFact-style: a country gets
another country's capital, a province another country; the old answer is the
real one. A third of the countries (53), spread over the alphabet, are never edited. Measures:

* efficacy      P(new) > P(old) (mean per-token log-probability) on the edit prompt; per form in the batch table
* paraphrase    the same on "The capital city of X is" / "The region of X is part of"
* specificity   greedy next token unchanged on the capital prompts of held-out countries (never edited)
* neighbourhood CounterFact's score on those prompts: P(true capital) > P(an edit's new target)
* drawdown      relative perplexity change on the shipped general text (audits/data/general.txt)

Two experiments, each in one process on the same facts so the figures compare:

* ``batch``: one MEMIT request of --n facts, with a table per form (subject-first, mid-sentence,
  multi-token) (the issue's aim: efficacy ≥ 90%, specificity ≥ 85% at 100);
* ``sequential``: --n single-fact MEMIT edits applied one after another, with the
  AlphaEdit null-space projection (``projection: always``) and without it
  (``never``); every --every edits: efficacy of the first --first edits, of all
  edits so far, specificity and drawdown. The curve is plotted to --plot.

    python bench/memit_quality.py batch --n 100
    python bench/memit_quality.py batch --n 100 --sweep mom2_update_weight=2000,10000,50000   # a row per value
    python bench/memit_quality.py sequential --n 100 --every 10
    python bench/memit_quality.py sequential --n 1000 --every 100 --device cuda   # the issue's 1,000 (GPU)
    python bench/memit_quality.py plot --out bench/measured/memit_sequential.json --plot bench/memit_sequential.png

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


def load(device: str, dtype: str, model_dir: str | None = None) -> tuple[Any, Any, str, Path]:
    """SmolLM2 on `device`: from a converted checkpoint folder (`--model`, no database or MLflow needed, as on a
    GPU host) or through a scratch govern home (converted once into the shared cache)."""
    if model_dir:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).to(device).eval()
        return net, AutoTokenizer.from_pretrained(model_dir), Path(model_dir).name, Path(model_dir).parent / "bench-cache"
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
        self.true_caps = [" " + cap for _, cap in held_out]
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

    def neighbourhood(self, facts: list[Any]) -> float:
        """CounterFact's neighbourhood score: on held-out capital prompts the true capital still beats the edits'
        new targets (each held-out prompt against the new target of one edit, round-robin)."""
        caps = [f for f in facts if f.prompt.startswith("The capital of")]  # same relation as the held-out prompts
        if not caps:
            return float("nan")
        news = [caps[i % len(caps)].target_new for i in range(len(self.neighbours))]
        return self.prefers(self.neighbours, self.true_caps, news)

    def drawdown(self) -> float:
        from audits.canary import perplexity

        return perplexity(self.net, self.tok, self.text) / self.base_ppl - 1


def provinces(countries_: set[str]) -> list[tuple[str, str]]:
    """(province, country): real first-level regions from `countryinfo`, ASCII, unique names that are not countries."""
    import countryinfo

    seen: dict[str, set[str]] = {}
    for c in countryinfo.all_countries():
        try:
            name, provs = c.name(), c.provinces() or []
        except Exception:  # noqa: BLE001 - some entries lack provinces
            continue
        if not (isinstance(name, str) and name in countries_):
            continue
        for prov in provs:
            if isinstance(prov, str) and prov.isascii() and prov[:1].isupper() and 3 <= len(prov) <= 30:
                seen.setdefault(prov.strip(), set()).add(name)
    return sorted((p, next(iter(cs))) for p, cs in seen.items() if len(cs) == 1 and p not in countries_)


def edits_for(pairs: list[tuple[str, str]], n: int) -> tuple[list[Any], list[tuple[str, str]], list[str]]:
    """`n` counterfactual edits of real facts, held-out countries, and each edit's paraphrase prompt.

    Two relations and two prompt forms, interleaved so any prefix of the list mixes them:
    mid-sentence "The capital of X is" → another country's capital, and subject-first
    "X is a province of" → another country (multi-token targets such as " Andorra la Vella" included).
    The held-out countries are never edited (their capital prompts measure specificity).
    """
    from editors import FactEdit

    held_out = pairs[::3][:60]  # spread over the alphabet
    rest = [p for p in pairs if p not in held_out]
    names = sorted({c for c, _ in pairs})
    provs = provinces(set(names))
    caps = [c for _, c in rest]
    facts, paraphrases = [], []
    capital_facts = []
    for i, (name, cap) in enumerate(rest):
        new = caps[(i + 7) % len(caps)]
        if new != cap:
            capital_facts.append((FactEdit(subject=name, prompt=f"The capital of {name} is", target_new=" " + new,
                                           target_old=" " + cap), f"The capital city of {name} is"))
    province_facts = []
    for i, (prov, country) in enumerate(provs):
        new = names[(names.index(country) + 11 + i % 5) % len(names)]
        if new != country:
            province_facts.append((FactEdit(subject=prov, prompt=f"{prov} is a province of", target_new=" " + new,
                                            target_old=" " + country), f"The region of {prov} is part of"))
    mixed = [f for pair in zip(capital_facts, province_facts, strict=False) for f in pair]
    mixed += province_facts[len(capital_facts):]
    if len(mixed) < n:
        raise SystemExit(f"only {len(mixed)} facts available; at most --n {len(mixed)}")
    for fact, para in mixed[:n]:
        facts.append(fact)
        paraphrases.append(para)
    return facts, held_out, paraphrases


def score_facts(s: Scorer, facts: list[Any], paraphrases: list[str]) -> dict[str, float]:
    new, old = [f.target_new for f in facts], [f.target_old for f in facts]
    return {"efficacy": s.prefers([f.prompt for f in facts], new, old),
            "paraphrase": s.prefers(paraphrases[: len(facts)], new, old)}


def score_forms(s: Scorer, facts: list[Any], paraphrases: list[str]) -> dict[str, dict[str, float]]:
    """Efficacy and paraphrase per prompt form: subject-first, mid-sentence, multi-token targets."""
    forms = {"subject-first": [i for i, f in enumerate(facts) if f.prompt.startswith(f.subject)],
             "mid-sentence": [i for i, f in enumerate(facts) if not f.prompt.startswith(f.subject)],
             "multi-token": [i for i, f in enumerate(facts) if len(s.tok(f.target_new, add_special_tokens=False)
                                                                   ["input_ids"]) > 1]}
    return {k: {**score_facts(s, [facts[i] for i in ix], [paraphrases[i] for i in ix]), "n": len(ix)}
            for k, ix in forms.items() if ix}


def setting_value(text: str) -> Any:
    """A --set / --sweep value: JSON where it looks like a number, list, object, bool or null; else the string."""
    return json.loads(text) if text[:1] in "0123456789-[{tfn" else text


def sweep_settings(settings: dict[str, Any], sweep: str | None) -> list[dict[str, Any]]:
    """One settings dict per value of ``--sweep KEY=v1,v2,...`` (just `settings` without a sweep)."""
    if not sweep:
        return [settings]
    key, _, values = sweep.partition("=")
    if not key or not values:
        raise SystemExit(f"--sweep {sweep!r}: write KEY=v1,v2,..., e.g. --sweep mom2_update_weight=2000,10000")
    return [{**settings, key: setting_value(v)} for v in values.split(",")]


def run_batch(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    """A batch of --n facts per settings row (one row, or one per --sweep value), on the same facts and model."""
    from editors import EditContext, get_editor, validate_method_config

    net, tok, digest, cache = load(args.device, args.dtype, args.model)
    facts, held_out, paras = edits_for(countries(), args.n)
    s = Scorer(net, tok, held_out)
    before = {**score_facts(s, facts, paras), "neighbourhood": s.neighbourhood(facts)}
    rows = []
    for cfg in sweep_settings(settings, args.sweep):
        ctx = EditContext(cache_dir=cache, model_digest=digest, config=validate_method_config("memit", cfg))
        t = time.perf_counter()
        change = get_editor("memit").compute(net, tok, facts, ctx)
        secs = time.perf_counter() - t
        with change.trial(net):
            after = {**score_facts(s, facts, paras), "specificity": s.specificity(), "drawdown": s.drawdown(),
                     "neighbourhood": s.neighbourhood(facts), "forms": score_forms(s, facts, paras)}
        rows.append({"facts": len(facts), "before": before, **after, "seconds": round(secs, 1),
                     "steps": change.meta["steps"], "converged": change.meta["converged_facts"],
                     "layers": change.meta["layers"],
                     "update_norms": [round(t["update_norm"], 4) for t in change.tensor_summaries()], "settings": cfg})
        if args.out:  # partial results survive a run cut short
            Path(args.out).write_text(json.dumps({"rows": rows, "partial": True}, indent=2))
    swept = args.sweep.partition("=")[0] if args.sweep else None
    print(f"\nMEMIT batch of {len(facts)} real-fact edits on SmolLM2-135M ({args.device}, {args.dtype}), "
          f"layers {rows[0]['layers']}; before the edit: efficacy {before['efficacy']:.1%}, "
          f"neighbourhood {before['neighbourhood']:.1%}")
    print(f"{(swept or 'settings'):>20s} {'efficacy':>9s} {'paraphr.':>9s} {'specif.':>9s} {'neighb.':>9s} "
          f"{'drawdown':>9s} {'steps':>6s} {'seconds':>8s}")
    for r in rows:
        label = str(r["settings"].get(swept)) if swept else "defaults" if not settings else "--set"
        print(f"{label:>20s} {r['efficacy']:9.1%} {r['paraphrase']:9.1%} {r['specificity']:9.1%} "
              f"{r['neighbourhood']:9.1%} {r['drawdown']:+9.4f} {r['steps']:6d} {r['seconds']:8.1f}")
    print(f"\n{'form':14s} {'edits':>6s} " + " ".join(f"{'eff. ' + str(r['settings'].get(swept, ''))[:8]:>14s}"
                                                    for r in rows))
    for form in rows[0]["forms"]:
        print(f"{form:14s} {rows[0]['forms'][form]['n']:6d} "
              + " ".join(f"{r['forms'][form]['efficacy']:14.1%}" for r in rows))
    return rows[0] if len(rows) == 1 else {"rows": rows, "sweep": args.sweep}


def run_sequential(args: argparse.Namespace, settings: dict[str, Any]) -> dict[str, Any]:
    from editors import EditContext, PriorChange, get_editor, validate_method_config
    from editors.projection import keys_path_for

    net, tok, digest, cache = load(args.device, args.dtype, args.model)
    facts, held_out, paras = edits_for(countries(), args.n)
    s = Scorer(net, tok, held_out)
    editor = get_editor("memit")
    curves: dict[str, list[dict[str, Any]]] = {}
    for mode in args.modes.split(","):
        work = Path(tempfile.mkdtemp(prefix=f"memit-seq-{mode}-"))
        cfg = validate_method_config("memit", {**settings, "projection": mode})
        history: list[Any] = []
        curve = []
        t0 = time.perf_counter()
        edit_s = score_s = 0.0
        try:
            for i, fact in enumerate(facts, 1):
                te = time.perf_counter()
                cid = f"c{i:05d}"
                ctx = EditContext(cache_dir=cache, model_digest=digest, config=cfg, history=tuple(history),
                                  keys_path=keys_path_for(work / f"{cid}.safetensors"))
                change = editor.compute(net, tok, [fact], ctx)
                path = change.save(work / f"{cid}.safetensors")
                change.apply(net, strict=False, undo=False)
                history.append(PriorChange(id=cid, kind=change.kind, digest=change.digest, path=path))
                edit_s += time.perf_counter() - te
                if i % args.every == 0 or i == len(facts):
                    ts = time.perf_counter()
                    first = score_facts(s, facts[: min(args.first, i)], paras)
                    allf = score_facts(s, facts[:i], paras)
                    point = {"edits": i, "first_efficacy": first["efficacy"], "efficacy": allf["efficacy"],
                             "paraphrase": allf["paraphrase"], "specificity": s.specificity(), "drawdown": s.drawdown(),
                             "seconds": round(time.perf_counter() - t0, 1)}
                    score_s += time.perf_counter() - ts
                    point.update(edit_s_mean=round(edit_s / i, 3), score_s_total=round(score_s, 1))
                    curve.append(point)
                    if args.out:  # partial results survive a run cut short (a time limit on a GPU host)
                        Path(args.out).write_text(json.dumps({"curves": {**curves, mode: curve}, "settings": settings,
                                                              "n": args.n, "first": args.first, "partial": True}))
                    print(f"  {mode:7s} {i:5d} edits: first-{min(args.first, i)} efficacy {point['first_efficacy']:.1%}, "
                          f"all {point['efficacy']:.1%}, paraphrase {point['paraphrase']:.1%}, specificity "
                          f"{point['specificity']:.1%}, drawdown {point['drawdown']:+.4f} ({point['seconds']:.0f}s: "
                          f"{point['edit_s_mean']:.2f} s per edit, scoring {point['score_s_total']:.0f}s)", flush=True)
        finally:  # the next mode starts from the base: a fresh load, exact
            net, tok, digest, cache = load(args.device, args.dtype, args.model)
            s.net, s.tok = net, tok
        curves[mode] = curve
    print(f"\nMEMIT sequential single edits on SmolLM2-135M ({args.device}, {args.dtype}); efficacy of the first "
          f"{args.first} edits, of all edits so far, specificity on {len(held_out)} held-out countries, drawdown")
    print(f"{'mode':8s} {'edits':>6s} {'first eff.':>10s} {'all eff.':>9s} {'paraphr.':>9s} {'specif.':>9s} {'drawdown':>9s}")
    for mode, curve in curves.items():
        for p in curve:
            print(f"{mode:8s} {p['edits']:6d} {p['first_efficacy']:10.1%} {p['efficacy']:9.1%} {p['paraphrase']:9.1%} "
                  f"{p['specificity']:9.1%} {p['drawdown']:+9.4f}")
    return {"curves": curves, "settings": settings, "n": args.n, "first": args.first}


def plot(curves: dict[str, list[dict[str, Any]]], path: Path, first: int, note: str = "") -> None:
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
    fig.suptitle("MEMIT sequential single edits on SmolLM2-135M (bench/memit_quality.py)" + (f"\n{note}" if note else ""),
                 fontsize=10 if note else 12)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=["batch", "sequential", "plot"],
                    help="plot: draw the curve of an earlier sequential run's JSON (--out) again")
    ap.add_argument("--n", type=int, default=100, help="facts in the batch / sequential edits")
    ap.add_argument("--every", type=int, default=10, help="sequential: measure every this many edits")
    ap.add_argument("--first", type=int, default=100, help="sequential: efficacy of the first this many edits")
    ap.add_argument("--modes", default="always,never", help="sequential: projection modes to compare")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="converted SmolLM2 folder (default: convert through a scratch home)")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a MEMIT setting (repeatable), e.g. --set layers=[4,5,6]")
    ap.add_argument("--sweep", default=None, metavar="KEY=V1,V2",
                    help="batch: one row per value of a MEMIT setting, e.g. --sweep mom2_update_weight=2000,10000")
    ap.add_argument("--plot", default="bench/memit_sequential.png", help="sequential: where the curve goes")
    ap.add_argument("--out", default=None, help="JSON results (default: bench/results/memit_<experiment>.json)")
    args = ap.parse_args()
    settings = {**FAST, **{k: setting_value(v) for k, v in (x.split("=", 1) for x in args.set)}}
    if args.experiment == "plot":
        saved = json.loads(Path(args.out or "bench/results/memit_sequential.json").read_text())
        plot(saved["curves"], Path(args.plot), saved.get("first", args.first), saved.get("note", ""))
        return
    result = run_batch(args, settings) if args.experiment == "batch" else run_sequential(args, settings)
    out = Path(args.out or f"bench/results/memit_{args.experiment}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=lambda x: None if isinstance(x, float) and math.isnan(x) else x))
    print(f"written {out}")
    if args.experiment == "sequential" and args.plot:  # after the JSON: a host without matplotlib keeps the figures
        plot(result["curves"], Path(args.plot), args.first)


if __name__ == "__main__":
    main()
