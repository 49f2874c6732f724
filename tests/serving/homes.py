"""Helpers for the serving tests: homes with promoted ROME edits, and `rank_one_boost` edits that flip a tiny model's answer."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

import boost  # noqa: F401 - registers the test-only method rank_one_boost
from conftest import TEST_POLICY

# (subject, target, layer): two edits stack on one module, the third sits on another (its rank is padded)
EDITS = [("Zorblat", " Paris", 1), ("Quintor", " Rome", 1), ("Veltrax", " Lima", 2)]


@dataclass
class Edited:
    gov: object
    model: str
    requests: list[str]
    prompts: list[str]
    tmp: Path


def policy_for_layer(tmp: Path, layer: int) -> Path:
    p = tmp / f"policy-layer{layer}.yaml"
    p.write_text(TEST_POLICY.replace("rome: {stats_tokens: 2000,", f"rome: {{layer: {layer}, stats_tokens: 2000,"))
    return p


def apply_edits(gov, model: str, tmp: Path, edits=EDITS) -> Edited:
    from govern.domain import parse_request
    from govern.pipeline import run_pipeline

    rids, prompts = [], []
    for subject, target, layer in edits:
        prompt = f"The capital of {subject} is"
        [rid] = gov.submit([parse_request({"subject": subject, "prompt": prompt, "target": target, "model": model})], "alice")
        code = run_pipeline(gov, policy_for_layer(tmp, layer), None, actor="pipeline", model=model, device="cpu",
                            console=Console(file=io.StringIO(), width=200))
        assert code == 0 and gov.get_request(rid).state == "promoted", gov.get_request(rid).error
        rids.append(rid)
        prompts.append(prompt)
    return Edited(gov, model, rids, prompts, tmp)


def edited_home(tmp_path_factory, name: str, model_dir: Path) -> Edited:
    """A fresh home with `model_dir` registered as `name` and the three ROME edits of `EDITS` promoted."""
    from govern.home import Home
    from govern.service import Govern

    tmp = tmp_path_factory.mktemp(f"serving-{name}")
    gov = Govern(Home(tmp / "home"))
    gov.add_model(name, str(model_dir), actor="admin", log=lambda _m: None)
    gov.set_single_user(True, actor="admin")  # `govern export` through the CLI needs a role: these tests are about serving
    return apply_edits(gov, name, tmp)

BOOST_POLICY_METHODS = ("allowed_methods: {edit: [rome]}", "allowed_methods: {edit: [rome, rank_one_boost]}")


def boost_policy(tmp: Path) -> Path:
    p = tmp / "policy-boost.yaml"
    p.write_text(TEST_POLICY.replace(*BOOST_POLICY_METHODS))
    return p


def boost_edit(gov, model: str, tmp: Path, subject: str, target: str, policy: Path | None = None) -> str:
    """Submit and apply one `rank_one_boost` edit (it flips the tiny model's answer); returns the request id."""
    from govern.domain import parse_request
    from govern.pipeline import run_pipeline

    policy = policy or boost_policy(tmp)
    prompt = f"The capital of {subject} is"
    [rid] = gov.submit([parse_request({"subject": subject, "prompt": prompt, "target": target, "model": model,
                                       "method": "rank_one_boost"})], "alice")
    code = run_pipeline(gov, policy, None, actor="pipeline", model=model, device="cpu",
                        console=Console(file=io.StringIO(), width=200))
    assert code == 0 and gov.get_request(rid).state == "promoted", gov.get_request(rid).error
    return rid
