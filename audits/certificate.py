"""The change certificate: one self-contained record of why a change was allowed.

Fields follow the DMM Gov paper's certificate (F1-F7):

| field | content |
|---|---|
| F1 target and evidence | what changes (subject, prompt, old -> new answer), who asked, why, evidence links |
| F2 time window | valid from / until, what happens at expiry |
| F3 method and constraints | update method, hyper-parameters, edited module and layer, policy and risk tier |
| F4 verification | the edit's own metrics (efficacy, paraphrase, freshness, target probability) and their gates |
| F5 regression | paired metrics: production vs candidate, difference, bootstrap CI, effect size, p; relative gates, corrected p |
| F6 rollback point and impact surface | parent version, tensors touched (shape, update norm, sha256 before/after), undo command |
| F7 audit | version ids, MLflow run and model version, the approval chain, the request's audit events and the chain head |

`build` takes the request's typed evidence (`audits.evidence.Evidence`) and
plain data about the request, change and versions (gathered by the service), and
returns the certificate as a dict with a ``digest``: the sha256 of its
canonical JSON without that key, so a copy can be checked
(:func:`verify_digest`). `render` writes ``certificate.json``,
``certificate.md``, ``certificate.html`` and the plots (matplotlib PNGs) to a
folder. Nothing here reads the database or the model.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
from pathlib import Path
from typing import Any

from audits.evidence import Evidence

SCHEMA = "govern.certificate/1"
VERIFICATION = ("efficacy", "paraphrase", "freshness", "outdated", "target_prob")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def digest_of(cert: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in cert.items() if k != "digest"})).hexdigest()


def verify_digest(cert: dict[str, Any]) -> bool:
    return cert.get("digest") == digest_of(cert)


def build(*, request: dict[str, Any], evidence: Evidence | None, change: dict[str, Any] | None,
          versions: dict[str, Any], reviews: list[dict[str, Any]], events: list[dict[str, Any]],
          policy: dict[str, Any] | None, mlflow: dict[str, Any], issued_at: str) -> dict[str, Any]:
    """Assemble F1-F7 from the request's stored records.

    `request` holds the envelope (id, state, model, kind, method, title, submitted_by, ...) and
    ``what``: the kind's (field, value) description of the change.
    """
    delta = change
    gates = [g.model_dump() for g in evidence.gates] if evidence else []
    metrics = evidence.metrics if evidence else {}
    rows = [r.model_dump() for r in evidence.report.rows] if evidence else []
    method_cfg = ((policy or {}).get("methods") or {}).get(request.get("method"), {})
    cert: dict[str, Any] = {
        "schema": SCHEMA,
        "issued_at": issued_at,
        "request": request["id"],
        "state": request["state"],
        "F1_target_and_evidence": {
            "model": request["model"], "kind": request.get("kind"), "title": request.get("title"),
            "what": request.get("what", []), "resolved": evidence.resolved if evidence else {},
            "submitted_by": request["submitted_by"],
            "submitted_at": request.get("created_at"), "justification": request.get("justification"),
            "evidence": request.get("evidence") or [],
        },
        "F2_time_window": {
            "valid_from": request.get("valid_from"), "valid_until": request.get("valid_until"),
            "on_expiry": ((policy or {}).get("validity") or {}).get("on_expiry", "rollback"),
        },
        "F3_method_and_constraints": {
            "method": request.get("method"), "hyperparameters": method_cfg,
            "module": (delta or {}).get("module"), "layer": (delta or {}).get("layer"),
            "covariance": (delta or {}).get("covariance"),
            "policy": (policy or {}).get("name"), "tier": request.get("tier"),
            "admission": (policy or {}).get("admission"),
            "test_plan": evidence.plan if evidence else None,
        },
        "F4_verification": {
            "metrics": {k: metrics.get(k) for k in VERIFICATION if k in metrics},
            "gates": [g for g in gates if g.get("metric") in VERIFICATION],
            "evidence_rows": [r for r in rows if r["slice"] in ("target", "paraphrase", "fresh")],
        },
        "F5_regression": {
            "suite": evidence.report.suite if evidence else None,
            "paired": evidence.stats if evidence else {},
            "gates": [g for g in gates if g.get("metric") not in VERIFICATION],
            "drawdown": metrics.get("drawdown"),
            "ppl_production": evidence.report.ppl_production if evidence else None,
            "ppl_candidate": evidence.report.ppl_candidate if evidence else None,
            "failed_items": [r for r in rows
                             if not r["ok"] and r["slice"] not in ("target", "paraphrase", "fresh", "retention")][:50],
            "passed": evidence.passed if evidence else None,
        },
        "F6_rollback_point_and_impact": {
            "parent_version": versions.get("parent"), "candidate_version": versions.get("candidate"),
            "production_version_now": versions.get("production_now"),
            "change": {"id": (delta or {}).get("id"), "kind": (delta or {}).get("kind"), "digest": (delta or {}).get("digest"),
                       "size_bytes": (delta or {}).get("size_bytes")},
            "tensors": (delta or {}).get("tensors", []),
            "rollback_command": f"govern rollback {request['id']} --reason '...' --as USER",
        },
        "F7_audit": {
            "mlflow": mlflow,
            "approvals": reviews,
            "events": events,
            "chain_head": events[-1]["hash"] if events else None,
        },
    }
    cert["digest"] = digest_of(cert)
    return cert


# --------------------------------------------------------------------------- rendering


def _fmt(v: Any, nd: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.{nd}g}"
    return str(v)


def plot_probabilities(cert: dict[str, Any], path: Path) -> Path | None:
    """Grouped bars: p(new) and p(old) before/after on the edit prompt and its paraphrases."""
    rows = [r for r in cert["F4_verification"]["evidence_rows"] if r.get("p_answer_before") is not None]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [("edit: " if r["slice"] == "target" else "para: ") + _short(r["prompt"], 34) for r in rows]
    series = [("p(old) before", "p_foil_before", "#9ecae1"), ("p(old) after", "p_foil_after", "#3182bd"),
              ("p(new) before", "p_answer_before", "#fdae6b"), ("p(new) after", "p_answer_after", "#e6550d")]
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.6), dpi=110)
    h = 0.8 / len(series)
    for k, (name, key, color) in enumerate(series):
        ax.barh([i + k * h for i in range(len(rows))], [r[key] for r in rows], height=h, color=color, label=name)
    ax.set_yticks([i + 1.5 * h for i in range(len(rows))], labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability (mean per answer token)")
    f1 = cert["F1_target_and_evidence"]
    ax.set_title(str(f1["title"]), fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_regression(cert: dict[str, Any], path: Path) -> Path | None:
    """Forest plot: candidate - production per paired metric with its CI and, where gated, the margin."""
    paired = {k: v for k, v in cert["F5_regression"]["paired"].items() if v.get("ci") and k not in VERIFICATION}
    if not paired:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gates = [g for g in cert["F5_regression"]["gates"] + cert["F4_verification"]["gates"] if g.get("kind") == "relative"]
    margins = {g["metric"]: g.get("margin") for g in gates}
    verdicts = {g["metric"]: g.get("result") for g in gates}
    colours = {"pass": "#2ca25f", "fail": "#de2d26", "insufficient": "#e6a100"}  # the gate's own test, not this CI
    names = list(paired)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.4), dpi=110)
    for i, name in enumerate(names):
        v = paired[name]
        lo, hi = v["ci"]
        color = colours.get(str(verdicts.get(name)), "#808080")  # grey: reported, not gated
        ax.plot([lo, hi], [i, i], color=color, lw=2)
        ax.plot([v["diff"]], [i], "o", color=color)
        if margins.get(name) is not None:
            ax.plot([-margins[name]], [i], "|", color="black", ms=14)
    ax.axvline(0, color="grey", lw=0.8, ls="--")
    ax.set_yticks(range(len(names)), [f"{n} (n={paired[n]['n']})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidate - production (95% bootstrap CI; | = margin; colour = the gate's verdict: "
                  "green passed, red worse, amber not enough evidence)", fontsize=7)
    ax.set_title("Paired regression results", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _short(s: str, n: int) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def to_markdown(cert: dict[str, Any], images: dict[str, str]) -> str:
    f1, f2, f3 = cert["F1_target_and_evidence"], cert["F2_time_window"], cert["F3_method_and_constraints"]
    f4, f5, f6, f7 = cert["F4_verification"], cert["F5_regression"], cert["F6_rollback_point_and_impact"], cert["F7_audit"]
    out = [
        f"# Change certificate — {cert['request']}",
        "",
        f"State **{cert['state']}**, issued {cert['issued_at']}. Digest `{cert['digest']}` "
        "(sha256 of the canonical JSON without this field; `govern certificate --verify FILE` checks it).",
        "",
        "## F1 Target and evidence",
        f"- model `{f1['model']}`; {f1['kind']} request: **{f1['title']}**",
        *[f"- {k}: {v}" for k, v in f1["what"]],
        f"- submitted by {f1['submitted_by']} at {f1['submitted_at']}; justification: {f1['justification'] or '—'}",
        f"- evidence: {', '.join(f1['evidence']) or '—'}",
        "",
        "## F2 Time window",
        f"- valid from {f2['valid_from'] or 'its promotion'} until {f2['valid_until'] or 'no end date'}; "
        f"at expiry: {f2['on_expiry']}",
        "",
        "## F3 Method and constraints",
        f"- method `{f3['method']}` on `{f3['module']}` (layer {f3['layer']}), covariance {f3['covariance']}",
        f"- policy `{f3['policy']}`, risk tier `{f3['tier']}`",
        f"- hyper-parameters: {', '.join(f'{k}={v}' for k, v in (f3['hyperparameters'] or {}).items())}",
        f"- tests: {_fmt((f3['test_plan'] or {}).get('test'))}, correction {_fmt((f3['test_plan'] or {}).get('correction'))}, "
        f"alpha {_fmt((f3['test_plan'] or {}).get('alpha'))}, {_fmt((f3['test_plan'] or {}).get('resamples'))} resamples, "
        f"seed {_fmt((f3['test_plan'] or {}).get('seed'))}",
        "",
        "## F4 Verification",
        "| metric | value |", "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in f4["metrics"].items()],
        "",
        *_gate_table(f4["gates"]),
        "",
        "| slice | prompt | p(new) before → after | p(old) before → after | pass |", "|---|---|---|---|---|",
        *[f"| {r['slice']} | {_short(r['prompt'], 60)} | {_fmt(r['p_answer_before'], 3)} → {_fmt(r['p_answer_after'], 3)} "
          f"| {_fmt(r['p_foil_before'], 3)} → {_fmt(r['p_foil_after'], 3)} | {_fmt(r['ok'])} |"
          for r in f4["evidence_rows"] if r.get("p_answer_before") is not None],
        *[f"| {r['slice']} | {_short(r['prompt'], 60)} | {_short(str(r.get('before')), 40)!r} → "
          f"{_short(str(r.get('after')), 40)!r} | | {_fmt(r['ok'])} |"
          for r in f4["evidence_rows"] if r.get("p_answer_before") is None],
    ]
    if images.get("probabilities"):
        out += ["", f"![probabilities]({images['probabilities']})"]
    suite = f5.get("suite") or {}
    out += [
        "",
        "## F5 Regression",
        f"Suite `{suite.get('name')}`: {suite.get('items')} items "
        f"({', '.join(f'{k} {v}' for k, v in (suite.get('slices') or {}).items())}). "
        f"Perplexity {_fmt(f5['ppl_production'])} → {_fmt(f5['ppl_candidate'])} (drawdown {_fmt(f5['drawdown'])}).",
        "",
        "| metric | n | production | candidate | diff | 95% CI | effect d_z | p (two-sided) |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {k} | {v.get('n')} | {_fmt(v.get('mean_prod'))} | {_fmt(v.get('mean_cand'))} | {_fmt(v.get('diff'))} | "
          f"{_fmt(v['ci'][0]) + ' .. ' + _fmt(v['ci'][1]) if v.get('ci') else 'n/a'} | {_fmt(v.get('effect_size'))} | "
          f"{_fmt(v.get('p_two_sided'))} |"
          for k, v in f5["paired"].items()],
        "",
        *_gate_table(f5["gates"]),
    ]
    if f5["failed_items"]:
        out += ["", "Items that got worse:", "", "| slice | prompt | before | after |", "|---|---|---|---|",
                *[f"| {r['slice']} | {_short(r['prompt'], 60)} | {_short(str(r.get('before')), 40)!r} | "
                  f"{_short(str(r.get('after')), 40)!r} |"
                  for r in f5["failed_items"]]]
    if images.get("regression"):
        out += ["", f"![regression]({images['regression']})"]
    out += [
        "",
        "## F6 Rollback point and impact surface",
        f"- parent (rollback point) v{f6['parent_version']}, candidate v{f6['candidate_version']}, "
        f"production now v{f6['production_version_now']}",
        f"- change `{f6['change']['id']}` ({f6['change']['kind']}, {f6['change']['size_bytes']} bytes) "
        f"sha256 `{f6['change']['digest']}`",
        "",
        "| tensor | shape | update norm | weight norm | sha256 before | sha256 after |", "|---|---|---|---|---|---|",
        *[f"| `{t.get('name')}` | {t.get('shape')} | {_fmt(t.get('update_norm'))} | {_fmt(t.get('weight_norm'))} | "
          f"`{str(t.get('sha256_before'))[:16]}…` | `{str(t.get('sha256_after'))[:16]}…` |" for t in f6["tensors"]],
        "",
        f"- undo: `{f6['rollback_command']}`",
        "",
        "## F7 Audit",
        f"- MLflow: run `{f7['mlflow'].get('run_id')}`, registered model `{f7['mlflow'].get('model')}` "
        f"version {f7['mlflow'].get('version')}",
        f"- approvals: {_approvals(f7['approvals'])}",
        f"- audit chain head `{f7['chain_head']}`",
        "",
        "| seq | at | actor | event | hash |", "|---|---|---|---|---|",
        *[f"| {e['seq']} | {e['ts']} | {e['actor']} | {e['action']} | `{e['hash'][:16]}…` |" for e in f7["events"]],
        "",
    ]
    return "\n".join(out)


def _approvals(reviews: list[dict[str, Any]]) -> str:
    text = "; ".join(f"{r['reviewer']} {r['decision']} ({r['comment']}) at {r['at']}" for r in reviews)
    return text or "none (policy auto-approval, or not reviewed yet)"


def _gate_table(gates: list[dict[str, Any]]) -> list[str]:
    if not gates:
        return []
    def needed(g: dict[str, Any]) -> str:
        return str(g["n_needed"]) if g.get("result") == "insufficient" and g.get("n_needed") else ""

    return ["| gate | value | result | items needed | why |", "|---|---|---|---|---|",
            *[f"| {g['gate']} | {_fmt(g.get('value'))} | **{g['result']}** | {needed(g)} | {g.get('why', '')} |" for g in gates]]


def to_html(markdown_text: str, title: str) -> str:
    """A small, dependency-free Markdown subset to HTML (headings, lists, tables, images, code)."""
    def inline(s: str) -> str:
        s = html.escape(s, quote=False)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        s = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)
        return s

    body: list[str] = []
    lines = markdown_text.splitlines()
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("# "):
            body.append(f"<h1>{inline(ln[2:])}</h1>")
        elif ln.startswith("## "):
            body.append(f"<h2>{inline(ln[3:])}</h2>")
        elif ln.startswith("!["):
            m = re.match(r"!\[([^\]]*)\]\(([^)]+)\)", ln)
            if m:
                body.append(f'<p><img alt="{html.escape(m.group(1))}" src="{html.escape(m.group(2))}"></p>')
        elif ln.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, data = rows[0], [r for r in rows[2:]]
            body.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in head) + "</tr>"
                        + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in r) + "</tr>" for r in data) + "</table>")
            continue
        elif ln.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            body.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif ln.strip():
            body.append(f"<p>{inline(ln)}</p>")
        i += 1
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.6em 0;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
             "th{background:#f3f3f3}code{font-size:12px;background:#f6f6f6}img{max-width:100%}h2{border-bottom:1px solid #ddd}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def render(cert: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write certificate.json/.md/.html and the PNG plots into `out_dir`; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    images: dict[str, str] = {}
    for name, fn in (("probabilities", plot_probabilities), ("regression", plot_regression)):
        p = fn(cert, out / f"{name}.png")
        if p is not None:
            paths[name], images[name] = p, p.name
    paths["json"] = out / "certificate.json"
    paths["json"].write_text(json.dumps(cert, indent=2, default=str), encoding="utf-8")
    md = to_markdown(cert, images)
    paths["md"] = out / "certificate.md"
    paths["md"].write_text(md, encoding="utf-8")
    paths["html"] = out / "certificate.html"
    paths["html"].write_text(to_html(md, f"Change certificate {cert['request']}"), encoding="utf-8")
    return paths
