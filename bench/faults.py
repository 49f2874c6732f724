"""SIGKILL trials across every phase, then recovery, then the invariants: all zero.

Each trial starts a real ``govern`` subprocess for one phase — submit, apply,
canary, commit, promote, rollback — on one shared home, and kills it: at a
named fault point (``GOVERN_KILL_AT``, `govern.faults`), when the job reaches
a stage (the canary), or after a random delay. Then recovery runs the way an
operator's would: a worker restart (`Worker.run_until_idle`, which re-claims
the dead process's job and reconciles first) and `govern.reconcile` with no
grace period. After every trial the whole home is checked:

| column | counts |
|---|---|
| lost | acknowledged requests (their id was printed, or the bench submitted them) missing from the database |
| duplicated | requests stored twice, versions listing a change twice, two live MLflow model versions for one version |
| half-applied | production versions that do not materialise bit-exactly (a change file or a manifest mismatch) |
| stuck | requests left admitted / applying / rolling_back, jobs left queued / running |
| mlflow | versions without an MLflow model version, wrong aliases, runs left RUNNING, live orphan runs or |
|        | model versions, orphan change files, a trail that fails `audit verify` |

The model is a tiny Llama built here (random weights, a tokenizer trained on
the shipped corpus) and saved to disk: SmolLM2 is too slow for 100 trials on
two cores. Bounded: every child has a timeout, every wait a deadline.

    PYTHONPATH=. python bench/faults.py --trials 100          # the full run (about 20-40 minutes on 2 busy cores)
    PYTHONPATH=. python bench/faults.py --trials 6 --seed 1   # one trial per phase (tests/govern/test_faults.py)

Exit code 0 only when every count is zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
POLICY = """
version: 1
name: faults
admission:
  allowed_methods: {edit: [rome]}
  max_active_edits_per_model: 10000
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
    one: {approvers: 1, auto_approve: false}
  rules:
    - {tier: one, pattern: "(?i)reviewed"}
canary:
  generate: false  # the bench measures recovery, not edit quality: the smallest canary
  neighbors: 0
  resamples: 100
  gates:  # an untrained tiny model: the gates check the plumbing, not edit quality
    - {metric: drawdown, op: "<=", threshold: 1.0}
    - {metric: paraphrase, op: ">=", threshold: 0.0, when_missing: skip}
methods:
  rome: {stats_tokens: 2000, context_prefixes: 0, steps: 4}
"""
PHASES: dict[str, list[str]] = {
    "submit": ["tx.before_commit", "tx.after_commit", "random"],
    "apply": ["worker.after_claim", "executor.after_change_saved", "random"],
    # killed by the bench when the job shows that stage (published by the heartbeat, so "" means the first one shown)
    "canary": ["stage:canary", "stage:", "random"],
    "commit": ["commit.before_tx", "decision.after_commit", "reconcile.after_run", "reconcile.after_version"],
    "promote": ["tx.before_commit", "decision.after_commit", "random"],
    "rollback": ["tx.before_commit", "decision.after_commit", "reconcile.after_run", "reconcile.after_version", "random"],
}
COLUMNS = ("lost", "duplicated", "half_applied", "stuck", "mlflow")
CHILD_TIMEOUT_S = 600


def build_tiny_llama(d: Path) -> Path:
    """A seeded random Llama (4 layers, width 64) with a byte-level BPE trained on the shipped corpus."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from editors.stats import corpus_texts

    if (d / "config.json").is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus_texts(), trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>")
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


@dataclass
class Trial:
    n: int
    phase: str
    how: str
    rc: int | None = None
    killed: bool = False
    seconds: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, work: Path, seed: int, log: Any = print) -> None:
        from govern.home import Home
        from govern.policy import load_policy
        from govern.service import Govern

        self.log = log
        self.rng = random.Random(seed)
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.home = Home(work / "home")
        self.policy_path = work / "policy.yaml"
        self.policy_path.write_text(POLICY)
        self.policy = load_policy(self.policy_path)
        self.gov = Govern(self.home)
        if not self.gov.single_user():
            self.gov.set_single_user(True, actor="bench")  # the CLI trusts --as: the trials are about faults, not identity
        if not self.gov.list_models():
            self.gov.add_model("tiny", str(build_tiny_llama(work / "tiny-llama")), actor="admin", log=lambda _m: None)
        self.acked: set[str] = set()
        self.subjects = 0
        self.env = {**os.environ, "GOVERN_HOME": str(self.home.root), "PYTHONPATH": str(REPO),
                    "GOVERN_MLFLOW_WAIT_S": "5", "OMP_NUM_THREADS": "1"}

    # -- set-ups (in-process, fast: the bench's worker keeps the model loaded) --------------------------
    def _fact(self, reviewed: bool = False) -> dict[str, Any]:
        self.subjects += 1
        name = f"{'Reviewed' if reviewed else 'Zorb'}{self.subjects:04d}"  # the policy sends "Reviewed..." to a person
        return {"subject": name, "prompt": f"The capital of {name} is", "target": " Paris"}

    def _submit(self, reviewed: bool = False) -> str:
        from govern.domain import parse_request

        rid = self.gov.submit([parse_request(self._fact(reviewed))], "alice", "tiny")[0]
        self.acked.add(rid)
        return rid

    def _worker(self) -> Any:
        from govern.worker import Worker

        if not hasattr(self, "_w"):
            self._w = Worker(self.gov, "tiny", lease_s=30, poll_s=0.2)
        return self._w

    def _promoted(self, reviewed: bool = False) -> str:
        rid = self._submit(reviewed)
        self.gov.admit(rid, self.policy)
        self._worker().run_until_idle({rid})
        return rid

    def setup(self, phase: str) -> tuple[list[str], str | None]:
        """The child's command line for `phase` and the request it acts on."""
        cli = [sys.executable, "-m", "govern.cli"]
        if phase == "submit":
            f = self.work / "req.jsonl"
            f.write_text(json.dumps(self._fact()) + "\n")
            return [*cli, "submit", "--file", str(f), "--as", "alice", "--model", "tiny"], None
        if phase in ("apply", "canary", "commit"):
            return [*cli, "apply", "--policy", str(self.policy_path), "--model", "tiny"], self._submit()
        if phase == "promote":
            rid = self._promoted(reviewed=True)
            if self.gov.get_request(rid).state != "awaiting_review":
                return [], rid
            return [*cli, "review", "approve", rid, "--as", "bob", "--comment", "ok"], rid
        assert phase == "rollback"
        rid = self._promoted()
        with self.gov.store.read() as s:
            m = self.gov.store.get_model(s, "tiny")
            ids = self.gov.store.get_version(s, "tiny", m.production_version or 1).change_ids
            # under newer changes half the time: a rollback job (built, canaried, then committed)
            target = ids[0] if len(ids) > 1 and self.rng.random() < 0.5 else (ids[-1] if ids else None)
            req = self.gov.store.get_change(s, target).request_id if target else None
        if req is None:
            return [], rid
        return [*cli, "rollback", req, "--as", "ops", "--reason", "fault trial"], req

    # -- one trial ---------------------------------------------------------------------------------------
    def run_child(self, cmd: list[str], how: str, rid: str | None) -> tuple[int | None, bool, str]:
        env = dict(self.env)
        if how not in ("random",) and not how.startswith("stage:"):
            env["GOVERN_KILL_AT"] = how
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        killed_by_us = False
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        delay = self.rng.uniform(0.5, 8.0) if how == "random" else None
        start = time.monotonic()
        while proc.poll() is None and time.monotonic() < deadline:
            if delay is not None and time.monotonic() - start > delay:
                proc.send_signal(signal.SIGKILL)
                killed_by_us = True
                break
            if how.startswith("stage:") and rid is not None:
                jobs = self.gov.jobs(rid)
                stage = (jobs[-1].stage or "") if jobs else ""
                if stage not in ("", "claimed") and stage.startswith(how.split(":", 1)[1]):
                    proc.send_signal(signal.SIGKILL)
                    killed_by_us = True
                    break
            time.sleep(0.05)
        if proc.poll() is None and not killed_by_us:
            proc.kill()  # over the bound: counted as a kill of a hung child
            killed_by_us = True
        out, err = proc.communicate(timeout=60)
        if cmd[3:4] == ["submit"]:
            for line in out.splitlines():
                if line.strip().startswith("req-"):
                    self.acked.add(line.split()[0])  # the child acknowledged it: it must not be lost
        return proc.returncode, proc.returncode == -signal.SIGKILL, err[-2000:]

    def recover(self) -> None:
        from govern.reconcile import reconcile

        self._worker().run_until_idle()  # re-claims the dead child's jobs (reconciles first)
        reconcile(self.gov, grace_s=0)

    def trial(self, n: int, phase: str, how: str) -> Trial:
        t = Trial(n, phase, how)
        started = time.perf_counter()
        cmd, rid = self.setup(phase)
        if cmd:
            t.rc, t.killed, err = self.run_child(cmd, how, rid)
            if not t.killed and t.rc not in (0,):
                t.details.append(f"child exited {t.rc}: {err.strip().splitlines()[-1] if err.strip() else ''}")
        self.recover()
        t.counts, details = self.check()
        t.details += details
        t.seconds = time.perf_counter() - started
        return t

    # -- invariants -------------------------------------------------------------------------------------
    def check(self) -> tuple[dict[str, int], list[str]]:
        from sqlmodel import select

        from govern.store import ChangeRow, JobRow, RequestRow, VersionRow

        c: Counter[str] = Counter({k: 0 for k in COLUMNS})
        why: list[str] = []
        gov = self.gov
        with gov.store.read() as s:
            reqs = list(s.exec(select(RequestRow)).all())
            versions = list(s.exec(select(VersionRow).where(VersionRow.model == "tiny")).all())
            changes = list(s.exec(select(ChangeRow)).all())
            jobs = list(s.exec(select(JobRow)).all())
            model = gov.store.get_model(s, "tiny")
        ids = {r.id for r in reqs}
        for rid in sorted(self.acked - ids):
            c["lost"] += 1
            why.append(f"lost: {rid}")
        titles = Counter(r.title for r in reqs)  # every trial's fact has a subject of its own
        for title, k in titles.items():
            if k > 1:
                c["duplicated"] += 1
                why.append(f"duplicated: {title!r} stored {k} times")
        for v in versions:
            if len(set(v.change_ids)) != len(v.change_ids):
                c["duplicated"] += 1
                why.append(f"duplicated: v{v.number} lists a change twice")
        for r in reqs:
            if r.state in ("admitted", "applying", "rolling_back"):
                c["stuck"] += 1
                why.append(f"stuck: {r.id} {r.state}")
        for j in jobs:
            if j.state in ("queued", "running"):
                c["stuck"] += 1
                why.append(f"stuck: job {j.id} {j.state}")
        try:
            gov.materialise("tiny")  # every change file against its digest, the weights against the manifest
        except Exception as e:  # noqa: BLE001 - counted, with the reason
            c["half_applied"] += 1
            why.append(f"half-applied: production v{model.production_version}: {type(e).__name__}: {e}")
        named = {gov.home.resolve(ch.path).resolve() for ch in changes}
        for p in gov.home.changes.iterdir():
            if p.resolve() not in named:
                c["mlflow"] += 1
                why.append(f"orphan change file {p.name}")
        client = gov.registry.client
        mvs = list(client.search_model_versions("name='tiny'"))
        db_mv = {v.mlflow_version for v in versions}
        per_version = Counter(m.tags.get("govern.version") for m in mvs if m.tags.get("govern.version"))
        for num, k in per_version.items():
            if k > 1:
                c["duplicated"] += 1
                why.append(f"duplicated: {k} MLflow model versions for v{num}")
        for v in versions:
            if not v.mlflow_version:
                c["mlflow"] += 1
                why.append(f"mlflow: v{v.number} has no model version")
        for m in mvs:
            if str(m.version) not in db_mv:
                c["mlflow"] += 1
                why.append(f"mlflow: orphan model version {m.version}")
        prod = next((v for v in versions if v.number == model.production_version), None)
        aliases = gov.registry.aliases("tiny")
        if prod is None or aliases.get("production") != prod.mlflow_version:
            c["mlflow"] += 1
            why.append(f"mlflow: production alias {aliases.get('production')} != v{model.production_version}")
        cand = next((v for v in versions if v.number == model.candidate_version), None)
        if (cand.mlflow_version if cand else None) != aliases.get("candidate"):
            c["mlflow"] += 1
            why.append("mlflow: candidate alias wrong")
        keep_runs = {m.run_id for m in mvs} | {r.mlflow_run_id for r in reqs if r.mlflow_run_id}
        for run in client.search_runs([gov.registry.experiment_id], max_results=10000):
            if run.info.status == "RUNNING":
                c["mlflow"] += 1
                why.append(f"mlflow: run {run.info.run_id} left RUNNING")
            elif run.info.run_id not in keep_runs:
                c["mlflow"] += 1
                why.append(f"mlflow: orphan run {run.info.run_id}")
        res = gov.audit_verify()
        if not res.ok:
            c["mlflow"] += 1
            why.append(f"trail: {res.reason}")
        return dict(c), why


def plan(trials: int, seed: int) -> list[tuple[str, str]]:
    """Round-robin over the phases, each phase cycling its kill points (the order shuffled by `seed`)."""
    rng = random.Random(seed)
    names = list(PHASES)
    cursor = {p: rng.randrange(len(PHASES[p])) for p in names}
    out = []
    for i in range(trials):
        phase = names[i % len(names)]
        out.append((phase, PHASES[phase][cursor[phase] % len(PHASES[phase])]))
        cursor[phase] += 1
    return out


def table(trials: list[Trial]) -> str:
    rows = defaultdict(list)
    for t in trials:
        rows[t.phase].append(t)
    head = f"| phase | trials | killed | {' | '.join(COLUMNS)} | seconds/trial |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for phase in [*PHASES, "all"]:
        ts = trials if phase == "all" else rows.get(phase, [])
        if not ts:
            continue
        sums = {k: sum(t.counts.get(k, 0) for t in ts) for k in COLUMNS}
        lines.append(f"| {phase} | {len(ts)} | {sum(t.killed for t in ts)} | "
                     + " | ".join(str(sums[k]) for k in COLUMNS)
                     + f" | {sum(t.seconds for t in ts) / len(ts):.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=None, help="working folder (default: a new temporary one)")
    ap.add_argument("--json", type=Path, default=None, help="also write the trials as JSON here")
    args = ap.parse_args(argv)
    if args.trials < 1:
        ap.error("--trials must be at least 1")
    work = args.work or Path(tempfile.mkdtemp(prefix="govern-faults-"))
    os.environ.setdefault("GOVERN_SHARED_CACHE", str(work / "shared-cache"))
    bench = Bench(work, args.seed)
    done: list[Trial] = []
    for n, (phase, how) in enumerate(plan(args.trials, args.seed), start=1):
        t = bench.trial(n, phase, how)
        done.append(t)
        bad = sum(t.counts.values())
        print(f"trial {n:3d} {phase:8s} {how:30s} rc={t.rc} killed={t.killed} {t.seconds:5.1f}s"
              + (f"  PROBLEMS: {'; '.join(t.details[:4])}" if bad else ""), flush=True)
        if args.json:
            args.json.write_text(json.dumps([t.__dict__ for t in done], indent=2))  # partial results survive a stop
        if n % 10 == 0 and n < args.trials:
            print(table(done), flush=True)
    print()
    print(f"{len(done)} trials, {sum(t.killed for t in done)} SIGKILLs landed; counts after recovery (all must be 0):")
    print(table(done))
    return 0 if all(sum(t.counts.values()) == 0 for t in done) else 1


if __name__ == "__main__":
    sys.exit(main())
