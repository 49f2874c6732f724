"""`--dtype` for the worker: validated at the CLI in one line, resolved for the device, and used for the weights."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from conftest import TEST_POLICY
from govern.cli import app
from govern.domain import parse_request
from govern.errors import InputError
from govern.policy import load_policy
from govern.worker import Worker, resolve_dtype


@pytest.mark.parametrize("command", [["worker"], ["apply", "--policy", "p.yaml"], ["rollback", "r1", "--as", "a",
                                                                                    "--reason", "x"]])
def test_bad_dtype_is_refused_in_one_line(command, tmp_path, monkeypatch):
    monkeypatch.setenv("GOVERN_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(app, [*command, "--dtype", "float64"])
    assert res.exit_code == 2
    text = " ".join(res.output.replace("│", " ").split())  # the CLI draws its error in a box
    assert "Invalid value for '--dtype'" in text and "'float64' is not one of 'auto', 'float32', 'bfloat16', 'float16'" in text
    assert not (tmp_path / "home").exists()  # refused before anything was opened or created


def test_resolve_dtype():
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(InputError, match="dtype 'half' is not one of auto, float32, bfloat16, float16"):
        resolve_dtype("half", "cpu")


def test_worker_edits_in_bfloat16(gov, tmp_path):
    policy = tmp_path / "p.yaml"
    policy.write_text(TEST_POLICY)
    rid = gov.submit([parse_request({"subject": "Zorblat", "prompt": "The capital of Zorblat is", "target": " Paris"})],
                     "alice")[0]
    assert gov.admit(rid, load_policy(policy)).value == "admitted"
    w = Worker(gov, "tiny", dtype="bfloat16")
    assert w.dtype == "bfloat16"
    w.run_until_idle({rid})
    r = gov.get_request(rid)
    assert r.state == "promoted", r.error
    loaded = w.executor.host.loaded  # type: ignore[attr-defined]  # LocalExecutor's host
    assert loaded is not None and next(loaded.model.parameters()).dtype == torch.bfloat16
