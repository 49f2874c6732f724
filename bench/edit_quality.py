"""Edit quality of ROME on SmolLM2-135M over real facts, by prompt form.

Hand-written real facts in four relations (landmark → city, company →
founder, company → home country, athlete → sport). Each edit is
counterfactual: the subject gets the true object of another subject of the same
relation. Edits come in three forms, reported apart:

* ``subject-first``  the edit prompt begins with the subject ("Eiffel Tower is located in the city of")
* ``mid-sentence``   the subject follows other words ("The tower called Eiffel Tower is located in ...")
* ``multi-token``    the new target has two or more tokens (" Steve Jobs", " New York")

Measured with the canary's scorer on the edited model (trial application):

* efficacy     P(new target) > P(old target) on the edit prompt, whole-target probabilities
* greedy       greedy decoding of the edit prompt reproduces every token of the new target
* paraphrase   efficacy on the relation's other phrasings of the same fact (both forms among them)
* specificity  greedy next token unchanged on prompts about other subjects of the relation

Configurations run in the same process on the same edits, so their rows compare
directly (those that differ only in ``key_mode`` share one value optimisation,
so their s/edit is the same): ``pooled`` is the original ROME key (one mean over the
bare prompt and the prefixed copies: the baseline; like every mode it keys a one-token subject that opens
the prompt at the next token, never at position 0), ``balanced`` averages each
tokenisation of the subject with equal weight, ``per_token`` maps
every tokenisation's key to the value.

    python bench/edit_quality.py                                # all forms, the three key modes
    python bench/edit_quality.py --configs per_token --n 4      # quick look
    python bench/edit_quality.py --configs per_token --device cuda --dtype bfloat16 --model DIR   # half precision, GPU
    python bench/edit_quality.py --samples 1000,3000,10000,27000 --configs per_token  # statistics sample count

`--samples` adds one ``per_token`` row per covariance sample count (tokens of
the shipped corpus); the default `stats_tokens` was chosen from that table.
The model is the converted SmolLM2 checkpoint (``--model DIR``; default: the
only directory under ``$GOVERN_SHARED_CACHE/converted`` or ``.govern/cache/converted``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

# relation: (edit prompt with the subject first, edit prompt with the subject mid-sentence, paraphrases, facts)
RELATIONS: dict[str, tuple[str, str, list[str], list[tuple[str, str]]]] = {
    "landmark_city": (
        "{} is located in the city of",
        "The famous {} is located in the city of",
        ["{} can be found in the city of", "Tourists who visit the {} are in the city of",
         "Where is the {}? It is in the city of"],
        [("Eiffel Tower", " Paris"), ("Colosseum", " Rome"), ("Big Ben", " London"), ("Brandenburg Gate", " Berlin"),
         ("Kremlin", " Moscow"), ("Acropolis", " Athens"), ("Statue of Liberty", " New York"),
         ("Golden Gate Bridge", " San Francisco"), ("Space Needle", " Seattle"), ("Sagrada Familia", " Barcelona"),
         ("Burj Khalifa", " Dubai"), ("Forbidden City", " Beijing")],
    ),
    "company_founder": (
        "{} was founded by",
        "The company {} was founded by",
        ["The founder of {} is", "{} was started by", "Who founded {}? It was founded by"],
        [("Microsoft", " Bill Gates"), ("Apple", " Steve Jobs"), ("Amazon", " Jeff Bezos"), ("Facebook", " Mark Zuckerberg"),
         ("SpaceX", " Elon Musk"), ("Google", " Larry Page"), ("Ford Motor Company", " Henry Ford"),
         ("Disney", " Walt Disney")],
    ),
    "company_country": (
        "{} is a company headquartered in",
        "The company {} is headquartered in",
        ["{} has its headquarters in", "The headquarters of {} are in", "Where is {} based? It is based in"],
        [("Toyota", " Japan"), ("Samsung", " South Korea"), ("Nokia", " Finland"), ("IKEA", " Sweden"),
         ("Volkswagen", " Germany"), ("Ferrari", " Italy"), ("Renault", " France"), ("Rolex", " Switzerland"),
         ("Sony", " Japan"), ("Boeing", " the United States")],
    ),
    "athlete_sport": (
        "{} is famous for playing the sport of",
        "The athlete {} is famous for playing the sport of",
        ["{} is a professional player of", "As an athlete, {} is known for the sport of",
         "Which sport does {} play? The sport of"],
        [("Lionel Messi", " soccer"), ("Michael Jordan", " basketball"), ("Serena Williams", " tennis"),
         ("Tiger Woods", " golf"), ("Wayne Gretzky", " ice hockey"), ("Babe Ruth", " baseball"),
         ("Tom Brady", " American football"), ("Roger Federer", " tennis")],
    ),
}

CONFIGS: dict[str, dict] = {
    "pooled": {"key_mode": "pooled"},  # ROME's key before this bench: the baseline
    "balanced": {"key_mode": "balanced"},
    "per_token": {"key_mode": "per_token"},
}


@dataclass(frozen=True)
class Case:
    form: str  # subject-first | mid-sentence | multi-token
    relation: str
    subject: str
    prompt: str
    new: str
    old: str
    paraphrases: tuple[str, ...]
    neighbours: tuple[str, ...]


def build_cases(tok, n_per_form: int) -> list[Case]:
    """Edits of each form, in a fixed order, rotating through the relations."""
    by_form: dict[str, list[Case]] = {"subject-first": [], "mid-sentence": [], "multi-token": []}
    for rel, (first, mid, paras, facts) in RELATIONS.items():
        for i, (subject, old) in enumerate(facts):
            # the new object: the next fact's object that differs from the old one
            new = next(o for _, o in facts[i + 1 :] + facts[:i] if o != old)
            multi = len(tok(new, add_special_tokens=False)["input_ids"]) > 1
            others = [s for s, _ in facts if s != subject][:4]
            all_prompts = [first.format(subject), mid.format(subject), *(p.format(subject) for p in paras)]
            forms = [("subject-first", first), ("mid-sentence", mid)]
            if multi:  # a multi-token target is its own form, its prompt alternating between the two
                forms = [("multi-token", (first, mid)[i % 2])]
            for form, template in forms:
                prompt = template.format(subject)
                by_form[form].append(Case(
                    form, rel, subject, prompt, new, old,
                    tuple(p for p in all_prompts if p != prompt),
                    tuple(t.format(o) for o in others for t in (first, mid))))
    out: list[Case] = []
    for cases in by_form.values():
        # interleave relations so a small n still covers several of them
        rr: list[Case] = []
        buckets = {r: [c for c in cases if c.relation == r] for r in RELATIONS}
        while any(buckets.values()):
            for r in RELATIONS:
                if buckets[r]:
                    rr.append(buckets[r].pop(0))
        out += rr[:n_per_form]
    return out


def find_model(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    for root in (os.environ.get("GOVERN_SHARED_CACHE"), ".govern/cache", "/work/main/.govern/cache"):
        if root and (Path(root) / "converted").is_dir():
            dirs = sorted(p for p in (Path(root) / "converted").iterdir() if (p / "config.json").is_file())
            if dirs:
                return dirs[0]
    raise SystemExit("no converted SmolLM2 checkpoint found; pass --model DIR (run `govern init` once to convert it)")


def whole_logprob(net, tok, prompts: list[str], targets: list[str]) -> list[float]:
    """log P(target | prompt) of the whole target (the canary's mean per token × its token count)."""
    from audits.canary import target_logprobs

    means = target_logprobs(net, tok, prompts, targets)
    return [m * len(tok(t, add_special_tokens=False)["input_ids"]) for m, t in zip(means, targets, strict=True)]


def measure(net, tok, case: Case, before_next: list[int]) -> dict[str, float]:
    from audits.canary import next_tokens
    from editors.tokens import generate_greedy

    prompts = [case.prompt, *case.paraphrases]
    new_lp = whole_logprob(net, tok, prompts, [case.new] * len(prompts))
    old_lp = whole_logprob(net, tok, prompts, [case.old] * len(prompts))
    wins = [float(n > o) for n, o in zip(new_lp, old_lp, strict=True)]
    n_new = len(tok(case.new, add_special_tokens=False)["input_ids"])
    greedy = generate_greedy(net, tok, case.prompt, n_new)
    after_next = next_tokens(net, tok, list(case.neighbours))
    return {
        "efficacy": wins[0],
        "greedy": float(greedy.strip() == case.new.strip()),
        "paraphrase": statistics.mean(wins[1:]),
        "specificity": statistics.mean(float(a == b) for a, b in zip(after_next, before_next, strict=True)),
        "p_new": float(2.718281828 ** new_lp[0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="converted SmolLM2 directory")
    ap.add_argument("--n", type=int, default=12, help="edits per form")
    ap.add_argument("--configs", default="pooled,balanced,per_token")
    ap.add_argument("--samples", default=None, help="comma list of covariance token counts: a per_token row each")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a ROME setting in every configuration (repeatable), e.g. --set steps=40")
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="the model's dtype (ROME's optimisation state stays float32)")
    ap.add_argument("--cache", default=".govern/bench-cache", help="statistics cache folder")
    ap.add_argument("--out", default="bench/results/edit_quality.json")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from audits.canary import next_tokens
    from editors import EditContext, FactEdit, get_editor, validate_method_config

    torch.manual_seed(0)
    path = find_model(args.model)
    net = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, args.dtype)).to(args.device).eval()
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    cases = build_cases(tok, args.n)
    before = {c: next_tokens(net, tok, list(c.neighbours)) for c in cases}
    configs = {k: CONFIGS[k] for k in args.configs.split(",") if k}
    if args.samples:
        configs.update({f"stats{n}": {"key_mode": "per_token", "stats_tokens": int(n)} for n in args.samples.split(",")})
    overrides = {k: json.loads(v) if v[:1] in "0123456789-[{tfn" else v for k, v in (x.split("=", 1) for x in args.set)}
    editor = get_editor("rome")
    forms = ["subject-first", "mid-sentence", "multi-token"]
    # configurations that differ only in key_mode share one value optimisation (ROME.compute_key_modes)
    groups: dict[str, list[tuple[str, str]]] = {}
    for cname, cfg in configs.items():
        rest = {k: v for k, v in {**cfg, **overrides}.items() if k != "key_mode"}
        groups.setdefault(json.dumps(rest, sort_keys=True), []).append((cname, {**cfg, **overrides}.get("key_mode", "per_token")))
    rows: dict[str, list[dict]] = {c: [] for c in configs}
    for rest_json, members in groups.items():
        settings = validate_method_config("rome", json.loads(rest_json))
        for case in cases:
            ctx = EditContext(cache_dir=Path(args.cache), model_digest=path.name, config=settings)
            edit = FactEdit(subject=case.subject, prompt=case.prompt, target_new=case.new, target_old=case.old)
            t = time.perf_counter()
            changes = editor.compute_key_modes(net, tok, [edit], ctx, [mode for _, mode in members])
            secs = time.perf_counter() - t
            for cname, mode in members:
                change = changes[mode]
                with change.trial(net):
                    m = measure(net, tok, case, before[case])
                rows[cname].append({"form": case.form, "subject": case.subject, "relation": case.relation, **m,
                                    "seconds": secs, "steps": change.meta["steps"]})
                print(f"  {cname:10s} {case.form:13s} {case.subject:18s} -> {case.new.strip():16s} eff={m['efficacy']:.0f} "
                      f"greedy={m['greedy']:.0f} para={m['paraphrase']:.2f} spec={m['specificity']:.2f} "
                      f"p_new={m['p_new']:.3f} {secs:.1f}s", flush=True)
    results: dict[str, dict] = {}
    for cname in configs:
        rs = rows[cname]
        results[cname] = {
            form: {k: statistics.mean(r[k] for r in rs if r["form"] == form)
                   for k in ("efficacy", "greedy", "paraphrase", "specificity", "seconds")}
            | {"edits": sum(r["form"] == form for r in rs)}
            for form in forms if any(r["form"] == form for r in rs)
        } | {"rows": rs}
    base = next(iter(results))
    print()
    print(f"ROME on SmolLM2-135M ({path.name}, {args.device}, {args.dtype}), real facts, {args.n} edits per form; "
          f"baseline row: {base}")
    print(f"{'config':10s} {'form':13s} {'edits':>5s} {'efficacy':>9s} {'greedy':>7s} {'paraphr.':>9s} {'specif.':>8s} "
          f"{'s/edit':>7s} {'eff. vs ' + base:>14s}")
    for cname, r in results.items():
        for form in forms:
            if form not in r:
                continue
            f = r[form]
            b = results[base][form]["efficacy"]
            print(f"{cname:10s} {form:13s} {f['edits']:5d} {f['efficacy']:9.1%} {f['greedy']:7.1%} {f['paraphrase']:9.1%} "
                  f"{f['specificity']:8.1%} {f['seconds']:7.2f} {f['efficacy'] - b:+14.1%}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
