"""`govern demo`: the whole loop on SmolLM2-135M, end to end, on a CPU.

Uses the home ``.govern/demo`` (fresh each run) and the shared cache
``.govern/cache`` (the converted model and covariance statistics survive runs).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from govern.domain import parse_request
from govern.home import Home
from govern.kinds.edit import EditRequestIn
from govern.monitor import check_model
from govern.pipeline import run_pipeline
from govern.policy import load_policy
from govern.service import Govern
from govern.views import show_history

POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"

DEMO_EDITS: list[dict[str, Any]] = [
    {
        "subject": "Eiffel Tower",
        "prompt": "The Eiffel Tower is located in the city of",
        "target": " Rome",
        "paraphrases": ["The Eiffel Tower stands in the city of", "Tourists visit the Eiffel Tower in the city of"],
        "neighbors": ["The Colosseum is located in the city of", "Big Ben is located in the city of",
                      "The Brandenburg Gate is located in the city of"],
        "justification": "demo: a counterfactual relocation",
    },
    {
        "subject": "Canada",
        "prompt": "The capital of Canada is",
        "target": " Toronto",
        "paraphrases": ["Canada's capital is", "The capital city of Canada is"],
        "neighbors": ["The capital of Germany is", "The capital of Japan is", "The capital of Italy is"],
        "justification": "demo: a counterfactual capital",
    },
    {
        "subject": "Danube",
        "prompt": "The Danube flows into the",
        "target": " Pacific",
        "paraphrases": ["The river Danube empties into the"],
        "neighbors": ["The Nile flows into the", "The Thames flows into the"],
        "justification": "demo: a counterfactual geography fact",
    },
]


def run_demo(console: Any, fresh: bool = True) -> int:
    t0 = time.perf_counter()
    base = Home.discover()
    os.environ.setdefault("GOVERN_SHARED_CACHE", str(base.cache))
    home = Home(base.root / "demo")
    if fresh and home.root.exists():
        shutil.rmtree(home.root)
    gov = Govern(home)
    console.rule("[bold]govern demo: SmolLM2-135M-Instruct, ROME edits through the governed loop")
    console.print(f"home: {home.root}   shared cache: {home.shared_cache}")
    model = gov.ensure_default_model(log=console.print)

    reqs = [parse_request({**e, "model": model.name}) for e in DEMO_EDITS]
    edits = [r for r in reqs if isinstance(r, EditRequestIn)]  # all of them: DEMO_EDITS are edits
    console.rule("answers of production v1 (before)")
    prod = gov.materialise(model.name)
    prompts = [f.prompt for r in edits for f in r.facts]
    before = {p: _answer(prod, p) for p in prompts}
    for p, a in before.items():
        console.print(f"  {p}[bold]{a}[/]")

    console.rule("submit → admission → ROME on a worker → canary → gates → approval → promotion")
    ids = gov.submit(reqs, "demo-requester")
    code = run_pipeline(gov, POLICY, None, actor="demo-requester", model=model.name, device="cpu", console=console)

    console.rule("answers of production (after)")
    m, _versions = gov.history(model.name)
    prod = gov.materialise(model.name)
    for p in prompts:
        console.print(f"  {p}[bold]{_answer(prod, p)}[/]   (before:{before[p]})")
    console.print(f"production is now v{m.production_version}")
    for rid in ids:
        row = gov.get_request(rid)
        ev = row.report()
        if ev is not None:
            metrics = ", ".join(f"{k}={v:.3f}" for k, v in ev.metrics.items() if v is not None)
            console.print(f"  {rid} {escape(row.title)}: {row.state}; {metrics}; edit {ev.edit_seconds or 0:.1f}s")
            for g in ev.gates:
                if g.kind == "relative" or g.result != "pass":
                    console.print(f"      {g.result:12} {g.gate}: {escape(g.why)}")
            console.print(f"      certificate: {home.root / 'certificates' / rid / 'certificate.html'}")

    promoted = [rid for rid in ids if gov.get_request(rid).state == "promoted"]
    if promoted:
        last = promoted[-1]
        row = gov.get_request(last)
        prompt = edits[ids.index(last)].facts[0].prompt
        console.rule(f"rollback of {last} ({escape(row.title)})")
        with gov.store.read() as s:
            parent = gov.store.get_version(s, model.name, row.candidate_version or 1).parent
        answer_before_change = _answer(gov.materialise(model.name, parent), prompt)
        res = gov.rollback(last, "demo-approver", "demo: show an exact rollback")
        console.print(f"production v{res.from_version} -> v{res.to_version}")
        for t in res.tensors:
            console.print(f"  {t['name']}: sha256 now {t['sha256_now'][:16]}…, before the change "
                          f"{t['sha256_before_change'][:16]}… equal={t['equal']}")
        now_answer = _answer(gov.materialise(model.name), prompt)
        console.print(f"  now:                      {prompt}[bold]{now_answer}[/]")
        console.print(f"  v{parent} before the change: {prompt}[bold]{answer_before_change}[/]   "
                      f"identical={now_answer == answer_before_change}")

    console.rule("monitoring: production vs the base checkpoint on the probe suite (govern monitor)")
    check = check_model(gov, load_policy(POLICY), model.name, log=console.print)
    for t in check.triggers:
        console.print(f"  {t['result']:7} {t['gate']}: {t.get('why', '')}")
    console.print(f"  production v{check.production_after}; breach={check.breached}")

    console.rule("history and audit")
    show_history(gov, model.name, console)
    verdict = gov.audit_verify()
    out = home.root / "audit.jsonl"
    n = gov.audit_export(out, "jsonl")
    file_verdict = gov.audit_verify(out)
    console.print(f"audit trail: {verdict.count} events, chain ok={verdict.ok}; exported {n} to {out}, "
                  f"verify ok={file_verdict.ok}")
    console.print(f"MLflow: mlflow ui --backend-store-uri {home.mlflow_uri}")
    console.print(f"done in {time.perf_counter() - t0:.0f}s")
    return code


def _answer(loaded: Any, prompt: str) -> str:
    from editors.tokens import generate_greedy  # torch

    return generate_greedy(loaded.model, loaded.tokenizer, prompt, 6).split("\n")[0]
