"""`command`: run a command after each promotion and rollback, e.g. to make a server reload.

The command is an argument list (no shell unless you name one: ``[sh, -c, "..."]``),
run with the environment plus

    GOVERN_MODEL        the model's name
    GOVERN_VERSION      the version now served (a number)
    GOVERN_ALIAS        the alias it serves (production)
    GOVERN_TRIGGER      promotion, rollback or retry
    GOVERN_EXPORT_PATH  the export this hook asked for (``export: hf|peft``), else the one an
                        earlier hook of the same run wrote (e.g. a directory's ``current``), else empty

It runs in its own process group, bounded by ``timeout_s``: past it the whole
group is killed and the run fails. A non-zero exit fails it too, with the tail
of its output in the audit trail.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from govern.deploy.base import Delivery, Outcome, TargetSpec, register_target
from govern.errors import GovernError
from govern.export import export_version, verify_export

OUTPUT_TAIL = 2000  # characters of the command's output kept in the trail


class CommandFailed(GovernError):
    """The deploy command exited non-zero or ran past its timeout."""


class CommandConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    run: list[str] = Field(min_length=1, description="argument list, e.g. [sh, -c, 'curl -X POST localhost:8000/reload']")
    timeout_s: float = Field(60.0, gt=0, le=3600, allow_inf_nan=False, description="kill the command after this long")
    export: Literal["none", "hf", "peft"] = Field("none", description="export the version first and pass its path")
    export_dir: str | None = Field(
        None, description="where that export goes (<export_dir>/<n>); default: the home's exports/<model>/")
    cwd: str | None = Field(None, description="working directory; default: the current one")


class CommandTarget:
    def __init__(self, config: CommandConfig) -> None:
        self.config = config

    def deliver(self, delivery: Delivery) -> Outcome:
        path = delivery.last_export
        if self.config.export != "none":
            path = delivery.exports.get(self.config.export) or self._export(delivery)
        env = {**os.environ, "GOVERN_MODEL": delivery.model, "GOVERN_VERSION": str(delivery.version.number),
               "GOVERN_ALIAS": delivery.alias, "GOVERN_TRIGGER": delivery.trigger, "GOVERN_EXPORT_PATH": path}
        rc, output = run_bounded(self.config.run, env, self.config.timeout_s, self.config.cwd)
        if rc is None:
            raise CommandFailed(f"{self.config.run[0]} ran past its timeout of {self.config.timeout_s:g}s and was killed; "
                                f"output: {output[-500:]!r}")
        if rc != 0:
            raise CommandFailed(f"{self.config.run[0]} exited with {rc}; output: {output[-500:]!r}")
        return Outcome({"returncode": rc, "output": output[-OUTPUT_TAIL:], "export_path": path},
                       export_path=path if self.config.export != "none" else None)

    def _export(self, delivery: Delivery) -> str:
        fmt = self.config.export
        default = delivery.gov.home.root / "exports" / delivery.model
        root = Path(self.config.export_dir).expanduser() if self.config.export_dir else default
        dest = root / f"{delivery.version.number}-{fmt}"
        if not (dest.is_dir() and (dest / "govern-export.json").is_file() and verify_export(dest).ok):
            export_version(delivery.version, delivery.model, fmt, dest, force=True, host=delivery.host(), stage=delivery.stage)
        delivery.exports[fmt] = str(dest)
        return str(dest)


def run_bounded(argv: list[str], env: dict[str, str], timeout_s: float, cwd: str | None = None) -> tuple[int | None, str]:
    """Run `argv` in a new process group; (returncode, output) or (None, output) when it was killed at the timeout."""
    try:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, text=True, errors="replace")
    except OSError as e:
        raise CommandFailed(f"cannot run {argv[0]!r}: {e}; give an executable on PATH or an absolute path") from None
    try:
        out, _ = proc.communicate(timeout=timeout_s)
        return proc.returncode, out or ""
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):  # it exited between the timeout and the kill
            os.killpg(proc.pid, signal.SIGKILL)  # the command's own group: it and whatever it started
        out, _ = proc.communicate()
        return None, out or ""


register_target(TargetSpec("command", CommandConfig, CommandTarget, "run a command with GOVERN_* in its environment"))
