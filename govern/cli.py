"""`govern`: the command line. Every command calls `govern.service.Govern`.

Heavy libraries (torch, transformers, mlflow) are imported inside the commands
that need them, and so is the service layer (sqlmodel and pydantic: half a
second), so `govern --help` answers at once. Any `GovernError` (and a
user-caused editor error) is printed as one line, ``error: ...``, exit code 2.

Commands that need a role get their actor from `_acting` (the identity block
below): the user of the API token in ``$GOVERN_TOKEN`` or ``--token-file``,
checked by `govern.auth.Acting` exactly as the UI checks a signed-in user;
``--as NAME`` alone counts only in single-user mode (see `govern/auth.py`).

`COMMAND_PERMISSIONS` lists every command with the permission it needs (`govern.auth.PERMISSIONS` maps it
to roles); ``None`` marks the commands that act on nothing: reads of the home (whoever can open its database
reads it anyway), checks of a file, and the demo in its own fresh home. A test holds the table and the
commands to each other.

One module of about 400 lines on purpose: each command is a thin typer wrapper
over one `Govern` call, and the whole command table reads in one place.
"""

from __future__ import annotations

import errno
import os
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from govern.auth import Acting, Permission
    from govern.service import Govern

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Govern what your deployed language model knows: "
                       "submit, admit, edit, canary, approve, promote, roll back, audit.")
model_app = typer.Typer(no_args_is_help=True, help="Register and list governed models.")
review_app = typer.Typer(no_args_is_help=True, help="Approve or reject a request awaiting review.")
audit_app = typer.Typer(no_args_is_help=True, help="Export and verify the tamper-evident audit trail.")
submit_app = typer.Typer(help="Submit change requests (flags for one edit, or --file for many).")
user_app = typer.Typer(no_args_is_help=True, help="Users who may sign in to the UI, and their roles.")
token_app = typer.Typer(no_args_is_help=True, help="API tokens: how the CLI knows who acts (admins create and revoke them).")
auth_app = typer.Typer(no_args_is_help=True, help="Who acts on this home: the presented token, single-user mode.")
policy_app = typer.Typer(no_args_is_help=True, help="Register the policies pipelines may run; bring other tools' "
                                                    "settings into a policy.")
app.add_typer(model_app, name="model")
app.add_typer(review_app, name="review")
app.add_typer(audit_app, name="audit")
app.add_typer(submit_app, name="submit")
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
app.add_typer(auth_app, name="auth")
app.add_typer(policy_app, name="policy")

Actor = Annotated[str | None, typer.Option(
    "--as", help="who is acting: must name your token's user; without a token only in single-user mode")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="governed model; optional when only one is registered")]


class Dtype(StrEnum):
    """The weights' dtype on a worker (`govern.worker.DTYPE_CHOICES`)."""

    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


DtypeOpt = Annotated[Dtype, typer.Option(
    help="weights' dtype on the worker; auto: float32 on the CPU, bfloat16 on CUDA (float16 without bf16)")]


MAX_SECONDS = 366 * 86400.0  # a year: bounds every seconds option (an infinity, or a sleep past time_t)
MAX_ERROR_CHARS = 1000  # an error line quoting a megabyte argument is cut here


COMMAND_PERMISSIONS: dict[str, str | None] = {
    "model add": "manage_models", "model list": None,
    "submit": "submit", "submit edit": "submit", "apply": "submit",
    "policy import-hparams": None,  # a file in, a policy block out: touches no home
    "policy register": "manage_policies", "policy unregister": "manage_policies", "policy list": None,
    "review approve": "review", "review reject": "review",
    "status": None, "history": None, "ask": None,  # reads
    "rollback": "rollback",
    "certificate": "certify",  # --verify FILE alone only checks a file: no role
    "monitor": "operate", "reconcile": "operate", "worker": "operate",
    "ui": "operate",  # for its background workers; the app signs each user in itself (--no-worker: no role)
    "export": "operate",  # --verify DIR alone only checks a folder: no role
    "audit export": "audit", "audit verify": "audit",
    "user add": "manage_users",  # the first admin of a home without users needs none (the bootstrap)
    "user roles": "manage_users", "user list": "manage_users",
    "token create": "manage_users", "token list": "manage_users", "token revoke": "manage_users",
    "auth single-user": "manage_users",  # on a home without users: anyone, once (the bootstrap)
    "auth status": None,  # says who the presented token is; refusals are audited
    "demo": None,  # in-process, in its own fresh home
}


def _gov() -> Govern:
    from govern.service import Govern

    return Govern()


# ---------------------------------------------------------------- identity (auth): who acts, for every command that needs a role
_TOKEN_FILE: dict[str, Path | None] = {"path": None}


@app.callback()
def _root(token_file: Annotated[Path | None, typer.Option(
        "--token-file", envvar="GOVERN_TOKEN_FILE",
        help="file holding your API token (yours, mode 600); or put the token in $GOVERN_TOKEN")] = None) -> None:
    """Govern what your deployed language model knows."""
    _TOKEN_FILE["path"] = token_file


def _presented_token() -> str | None:
    """The API token of this call: ``$GOVERN_TOKEN``, else the token file (which must be private)."""
    from govern.auth import read_token_file

    env = os.environ.get("GOVERN_TOKEN", "").strip()
    if env:
        return env
    path = _TOKEN_FILE["path"]
    return read_token_file(path) if path else None


def _credentials() -> dict[str, str]:
    """How a child `govern` process (a background worker) presents this call's identity: the token's source."""
    env = os.environ.get("GOVERN_TOKEN", "").strip()
    if env:
        return {"GOVERN_TOKEN": env}
    path = _TOKEN_FILE["path"]
    return {"GOVERN_TOKEN_FILE": str(Path(path).resolve())} if path else {}


def _identify(gov: Govern, as_name: str | None, default: str | None = None) -> tuple[Acting, str] | None:
    """Who acts, with how they were identified ("token" or "single_user"); None when nobody was (no token, and
    not single-user mode). A refused token is audited. No permission is checked here: `_acting` does."""
    from govern.auth import ROLES, Acting, Principal, check_name
    from govern.text import identity

    token = _presented_token()
    if token is not None:
        p = gov.authenticate_token(token)
        if as_name and identity(as_name) != p.name:
            raise _input_error(f"--as {as_name!r} does not match the token's user {p.name!r}; "
                               "drop --as (the token says who you are)")
        return Acting(gov, p.name), "token"
    if gov.single_user():
        if not (as_name or default):
            raise _input_error("who is acting? pass --as NAME (this home is in single-user mode)")
        name = check_name(as_name or default or "")
        return Acting(gov, name, Principal(name, ROLES, method="single_user")), "single_user"
    return None


def _acting(gov: Govern, permission: Permission, as_name: str | None, default: str | None = None) -> Acting:
    """The user acting in this command, checked for `permission` by the same `Acting` as the UI.

    A token names the user (``--as``, if given, must agree). Without a token, ``--as`` (or `default`) is taken
    on trust only in single-user mode. A refused token and a missing role are audited.
    """
    from govern.auth import denied
    from govern.errors import PermissionDenied

    found = _identify(gov, as_name, default)
    if found is not None:
        acting, method = found
    elif not gov.has_users():
        raise PermissionDenied("this home has no users yet: create the first admin with `govern user add NAME "
                               "--role admin` (it prints their API token), or, for a one-person home, "
                               "`govern auth single-user on`")
    else:
        raise PermissionDenied("who are you? put your API token in $GOVERN_TOKEN (or pass --token-file FILE); "
                               "an admin creates one with `govern token create --user NAME`")
    p = acting.principal
    if not p.can(permission):
        gov.note(p.name, "auth.denied", permission, {"roles": list(p.roles), "method": method})
        raise denied(p, permission)
    if method == "token" and "admin" in p.roles:
        _warn_if_admin_tokens_lapse(gov)
    return acting


def _warn_if_admin_tokens_lapse(gov: Govern) -> None:
    """On stderr, for admins: every usable admin token expires soon, after which no one could add tokens or models."""
    lapse = gov.admin_tokens_lapse()
    if lapse is not None:
        typer.echo(f"warning: every usable admin API token expires by {lapse:%Y-%m-%d %H:%M} UTC; after that nobody can "
                   "create tokens, users, models or policies: create one that lasts (`govern token create --user NAME "
                   "--expires 90d`, or never) before then", err=True)


def _print_token(token: str) -> None:
    """The token on its own stdout line (for `> file`), the warning on stderr."""
    typer.echo("API token (shown once; keep it where only you can read it: chmod 600):", err=True)
    typer.echo(token)


def _console() -> Console:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # logs and CI: wide enough for the summary tables
        console = Console(width=160)
    return console


# ---------------------------------------------------------------- models
@model_app.command("add")
def model_add(name: str, path: str, actor: Actor = None,
              gguf_file: Annotated[str | None, typer.Option(help="GGUF file name inside PATH")] = None,
              allow_pickle: Annotated[bool, typer.Option(
                  help="accept pickle weights (pytorch_model.bin), which can run code when loaded")] = False) -> None:
    """Register a transformers causal LM from a local directory (or a hub id where reachable); admins only."""
    gov = _gov()
    row = _acting(gov, "manage_models", actor, "admin").add_model(name, path, gguf_file=gguf_file,
                                                                  allow_pickle=allow_pickle)
    typer.echo(f"registered {row.name} ({row.family}) v1 = production, base sha256 {row.base_digest[:12]}")


@model_app.command("list")
def model_list() -> None:
    """List governed models and their production versions."""
    gov = _gov()
    for m in gov.list_models():
        typer.echo(f"{m.name}\t{m.family}\tproduction v{m.production_version}\t{m.source}")


# ---------------------------------------------------------------- submit
@submit_app.callback(invoke_without_command=True)
def submit(ctx: typer.Context,
           file: Annotated[Path | None, typer.Option("--file", "-f", help="JSONL or YAML file of requests")] = None,
           actor: Actor = None,
           model: ModelOpt = None) -> None:
    """Submit requests from a file: `govern submit --file requests.jsonl` (as the user of $GOVERN_TOKEN)."""
    if ctx.invoked_subcommand is not None:
        return
    if file is None:
        raise typer.BadParameter("give --file FILE, or use `govern submit edit ...`")
    from govern.domain import load_request_file

    reqs = load_request_file(file)
    gov = _gov()
    for rid in _acting(gov, "submit", actor).submit_requests(reqs, model):
        typer.echo(rid)


@submit_app.command("edit")
def submit_edit(
    subject: Annotated[str, typer.Option(help="entity whose fact changes, as written in the prompt")],
    prompt: Annotated[str, typer.Option(help="unfinished sentence that names the subject")],
    target: Annotated[str, typer.Option(help="the new answer, e.g. ' Rome'")],
    actor: Actor = None,
    model: ModelOpt = None,
    target_old: Annotated[str | None, typer.Option(help="the answer being replaced (default: the model's)")] = None,
    paraphrase: Annotated[list[str] | None, typer.Option(help="a rephrased prompt (repeatable)")] = None,
    neighbor: Annotated[list[str] | None, typer.Option(help="an unrelated prompt that must not change (repeatable)")] = None,
    method: Annotated[str, typer.Option(help="update method")] = "rome",
    justification: Annotated[str | None, typer.Option(help="why this change")] = None,
) -> None:
    """Submit one fact edit."""
    from govern.domain import parse_request

    req = parse_request({"subject": subject, "prompt": prompt, "target": target, "target_old": target_old,
                         "paraphrases": paraphrase or [], "neighbors": neighbor or [], "method": method,
                         "justification": justification, "model": model}, "request")
    gov = _gov()
    for rid in _acting(gov, "submit", actor).submit_requests([req], model):
        typer.echo(rid)


# ---------------------------------------------------------------- policy
@policy_app.command("import-hparams")
def policy_import_hparams(
    file: Annotated[Path, typer.Argument(help="EasyEdit hyper-parameter YAML, e.g. hparams/ROME/gpt2-xl.yaml")],
    output: Annotated[Path | None, typer.Option("-o", "--output", help="write the block here instead of printing it")] = None,
) -> None:
    """Turn an EasyEdit ROME hyper-parameter file into a policy `methods:` block; notes are comments in it."""
    from govern.interop.easyedit import load_hparams

    imported = load_hparams(file)
    text = imported.policy_yaml()
    if output is None:
        typer.echo(text, nl=False)  # the notes are comments in the block
        return
    output.write_text(text, encoding="utf-8")
    typer.echo(f"wrote methods.{imported.method} ({len(imported.settings)} settings) to {output}")
    for note in imported.notes:
        typer.echo(f"note: {note}", err=True)


@policy_app.command("register")
def policy_register(file: Annotated[Path, typer.Argument(help="policy YAML")], actor: Actor = None) -> None:
    """Let requesters' `govern apply` run this policy (matched by its settings' sha256); admins only."""
    from govern.policy import load_policy

    pol = load_policy(file)
    gov = _gov()
    row = _acting(gov, "manage_policies", actor, "admin").register_policy(pol)
    typer.echo(f"registered policy {row.name} (sha256 {row.digest[:12]}): `govern apply --policy {file}` may run it")


@policy_app.command("unregister")
def policy_unregister(file: Annotated[Path, typer.Argument(help="policy YAML")], actor: Actor = None) -> None:
    """Stop requesters' `govern apply` from running this policy; admins only."""
    from govern.policy import load_policy

    pol = load_policy(file)
    gov = _gov()
    _acting(gov, "manage_policies", actor, "admin").unregister_policy(pol)
    typer.echo(f"unregistered policy {pol.name} (sha256 {pol.digest[:12]})")


@policy_app.command("list")
def policy_list() -> None:
    """Policies registered for `govern apply`: name, sha256, who registered it and when."""
    for r in _gov().registered_policies():
        typer.echo(f"{r.name}\t{r.digest[:12]}\t{r.by}\t{r.at[:19]}")


# ---------------------------------------------------------------- apply
@app.command()
def apply(
    policy: Annotated[Path, typer.Option(help="policy YAML, e.g. policies/default.yaml")],
    file: Annotated[Path | None, typer.Argument(help="optional JSONL/YAML file of requests to submit first")] = None,
    actor: Actor = None,
    model: ModelOpt = None,
    device: Annotated[str, typer.Option(help="torch device for an in-process worker")] = "cpu",
    dtype: DtypeOpt = Dtype.float32,
) -> None:
    """Take pending requests through the whole loop; exit 0 only if each reached the state the policy allows.

    Needs a user who may submit (a pipeline's token: `govern user add ci --role requester --token-only`), and,
    unless they are an admin, a policy an admin registered (`govern policy register FILE`)."""
    from govern.pipeline import run_pipeline
    from govern.policy import load_policy

    pol = load_policy(policy)
    gov = _gov()
    acting = _acting(gov, "submit", actor, "pipeline")
    who = acting.name
    acting.require_registered_policy(pol, policy, "apply")
    code = run_pipeline(gov, pol, file, actor=who, model=model, device=device, console=_console(),
                        dtype=dtype.value)
    raise typer.Exit(code)


# ---------------------------------------------------------------- review
@review_app.command("approve")
def review_approve(request_id: str, comment: Annotated[str, typer.Option(help="required")], actor: Actor = None) -> None:
    """Approve a request (never your own)."""
    gov = _gov()
    state = _acting(gov, "review", actor).review(request_id, "approve", comment)
    typer.echo(f"{request_id}: {state.value}")


@review_app.command("reject")
def review_reject(request_id: str, comment: Annotated[str, typer.Option(help="required")], actor: Actor = None) -> None:
    """Reject a request; its candidate is discarded."""
    gov = _gov()
    state = _acting(gov, "review", actor).review(request_id, "reject", comment)
    typer.echo(f"{request_id}: {state.value}")


# ---------------------------------------------------------------- views
@app.command()
def status(request_id: Annotated[str | None, typer.Argument()] = None, model: ModelOpt = None) -> None:
    """Show all requests, or one request with its canary, reviews and events."""
    from govern.views import show_request, show_requests

    gov = _gov()
    if request_id:
        show_request(gov, request_id, _console())
    else:
        show_requests(gov, model, _console())


@app.command()
def history(model: ModelOpt = None) -> None:
    """Versions of a model: which is production, what each changed."""
    from govern.views import show_history

    show_history(_gov(), model, _console())


@app.command()
def ask(prompt: str, model: ModelOpt = None,
        max_new_tokens: Annotated[int, typer.Option(min=1, max=512)] = 24) -> None:
    """Generate with the production version."""
    from govern.text import printable

    version, text = _gov().ask(model, prompt, max_new_tokens)
    typer.echo(f"[v{version}] {prompt}{printable(text)}")  # a generated escape sequence never reaches the terminal


@app.command()
def rollback(target: Annotated[str, typer.Argument(help="request id or version number")],
             reason: Annotated[str, typer.Option(help="required")],
             actor: Actor = None,
             cascade: Annotated[bool, typer.Option(help="take newer changes above it off too and recompute them, "
                                                         "instead of re-applying them")] = False,
             device: Annotated[str, typer.Option(help="where to build the version without the change")] = "cpu",
             dtype: DtypeOpt = Dtype.float32) -> None:
    """Take a change out of production: the newest exactly (bit for bit); one under newer changes by building and
    canarying the version without it (the newer ones re-applied) before it becomes production."""
    gov = _gov()
    res = _acting(gov, "rollback", actor).rollback(target, reason, cascade=cascade)
    if res.job_id is not None and res.request_id:
        from govern.worker import Worker, live_workers

        typer.echo(f"{res.model}: {res.request_id} sits under newer changes; building production v{res.from_version} "
                   f"without it and running its canary (job {res.job_id})")
        if live_workers(gov, res.model):
            typer.echo("a worker serves this model; it runs the job (`govern status " + res.request_id + "` shows it)")
            return
        Worker(gov, res.model, device=device, dtype=dtype.value).run_until_idle({res.request_id})
        r = gov.get_request(res.request_id)
        done = gov.rollback_result(res.request_id) or {}
        if r.state != "rolled_back":
            raise _input_error(f"the rollback of {r.id} was refused; production is unchanged: {done.get('error')}")
        with gov.store.read() as s:
            now = gov.store.get_model(s, res.model).production_version
        typer.echo(f"{res.model}: production v{res.from_version} -> v{now} (request {r.id} rolled back; "
                   "the changes above it re-applied and canaried)")
        return
    typer.echo(f"{res.model}: production v{res.from_version} -> v{res.to_version}"
               + (f" (request {res.request_id} rolled back)" if res.request_id else "")
               + (f"; re-queued {', '.join(res.rebased)}" if res.rebased else ""))
    for t in res.tensors:
        typer.echo(f"  {t['name']}: sha256 {t['sha256_now'][:16]} == before-change {t['sha256_before_change'][:16]}: "
                   f"{t['equal']}")


# ---------------------------------------------------------------- certificate and monitoring
@app.command()
def certificate(
    request_id: Annotated[str | None, typer.Argument(help="request id")] = None,
    out: Annotated[Path | None, typer.Option(help="folder for certificate.json/.md/.html and plots")] = None,
    verify: Annotated[Path | None, typer.Option(help="check a certificate.json's digest instead")] = None,
    actor: Actor = None,
) -> None:
    """Write a change's certificate (F1-F7: evidence, window, method, verification, regression, rollback point, audit)."""
    if verify is not None:
        from audits.certificate import verify_digest
        from govern.validation import parse_json, read_regular_file

        # a regular file (no link followed), bounded in size and depth: one error line, never a RecursionError
        cert = parse_json(read_regular_file(verify, "certificate", 64 << 20), f"certificate {verify}",
                          max_depth=64, max_nodes=10_000_000)
        if not isinstance(cert, dict) or not verify_digest(cert):
            typer.echo(f"FAILED: {verify} does not match its digest (edited after it was issued?)")
            raise typer.Exit(1)
        typer.echo(f"ok: {verify} matches its digest {cert['digest'][:16]}")
        return
    if not request_id:
        from govern.errors import InputError

        raise InputError("name a request id (see `govern status`), or pass --verify FILE")
    gov = _gov()
    who = _acting(gov, "certify", actor, "auditor").name
    paths = gov.issue_certificate(request_id, out, log=out is None, actor=who)
    for kind, p in paths.items():
        typer.echo(f"{kind:14} {p}")


@app.command()
def monitor(
    policy: Annotated[Path, typer.Option(help="policy whose rollback_triggers apply")] = Path("policies/default.yaml"),
    every: Annotated[str | None, typer.Option(help="repeat every DURATION (30s, 10m, 1h); default: check once")] = None,
    model: ModelOpt = None,
    actor: Actor = None,
) -> None:
    """Re-check production: roll back expired changes and changes that breach a rollback trigger; promote due ones.

    Needs the service or admin role (`govern user add monitor --role service --token-only`)."""
    from govern.monitor import parse_every, run
    from govern.policy import load_policy

    period = parse_every(every) if every is not None else None
    pol = load_policy(policy)
    gov = _gov()
    _acting(gov, "operate", actor, "monitor").require_registered_policy(pol, policy, "monitor")
    models = [gov.resolve_model(model)] if model else [m.name for m in gov.list_models()] or [gov.resolve_model(None)]
    try:
        checks = run(gov, pol, models, period, log=lambda m: typer.echo(m))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    for c in checks:
        state = "BREACH" if c.breached else "ok"
        trig = ", ".join(f"{t['gate']}: {t['result']}" for t in c.triggers) or "no triggers"
        typer.echo(f"{c.model}: production v{c.production_before} -> v{c.production_after}; {state} ({trig})")
        for a in c.actions:
            typer.echo(f"  {a}")


@app.command()
def reconcile(model: ModelOpt = None,
              grace: Annotated[float, typer.Option(min=0.0, max=MAX_SECONDS,
                                                   help="collect orphans older than this many seconds")] = 600.0,
              actor: Actor = None) -> None:
    """Bring MLflow (runs, model versions, aliases, anchors) and certificates in line with the database; collect orphans.

    Needs the service or admin role (it deletes orphan files and MLflow entries)."""
    from govern.reconcile import reconcile as run_reconcile

    gov = _gov()
    _acting(gov, "operate", actor, "operator")
    run_reconcile(gov, gov.resolve_model(model) if model else None, grace_s=grace, log=lambda m: typer.echo(m))


# ---------------------------------------------------------------- export (serving)
@app.command()
def export(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="directory to write (must not exist or be empty)")] = None,
    model: ModelOpt = None,
    version: Annotated[int | None, typer.Option("--version", min=1, help="version number (default: production)")] = None,
    alias: Annotated[str | None, typer.Option("--alias", help="production or candidate")] = None,
    fmt: Annotated[str, typer.Option("--format", help="hf (merged checkpoint) or peft (LoRA adapter over the base)")] = "hf",
    force: Annotated[bool, typer.Option(help="replace a non-empty OUTPUT whole")] = False,
    verify: Annotated[Path | None, typer.Option("--verify", help="re-check an export against its govern-export.json")] = None,
    actor: Actor = None,
) -> None:
    """Export a version for serving (merged HF checkpoint or PEFT adapter, with a manifest), or --verify one.

    Exporting needs the service or admin role and is audited under that user (`version.exported`)."""
    from govern.export import export as run_export
    from govern.export import verify_export

    if verify is not None:
        res = verify_export(verify)
        if not res.ok:
            typer.echo(f"FAILED: {res.directory / str(res.first_bad)}: {res.reason}", err=True)
            raise typer.Exit(1)
        typer.echo(f"ok: {res.directory}: {res.files} files match {res.directory / 'govern-export.json'}")
        return
    if output is None:
        raise _input_error("give -o DIR to export to, or --verify DIR")
    gov = _gov()
    who = _acting(gov, "operate", actor, "operator").name
    m = run_export(gov, model, fmt, output, number=version, alias=alias, force=force, actor=who)
    typer.echo(f"exported {m.model} v{m.version} ({m.format}, {len(m.changes)} changes, {len(m.files)} files) to {output}")


# ---------------------------------------------------------------- audit
@audit_app.command("export")
def audit_export(output: Annotated[Path, typer.Option("-o", "--output", help="file to write")],
                 fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
                 since: Annotated[str | None, typer.Option(help="only events at or after this date (ISO 8601)")] = None,
                 actor: Actor = None) -> None:
    """Export the audit trail (with a sealed footer) to a file; auditors and admins, and audited (audit.exported)."""
    start = None
    if since:
        try:
            start = datetime.fromisoformat(since)
        except ValueError:
            raise _input_error(f"--since {since!r} is not a date; use e.g. 2026-11-23 or 2026-11-23T10:00:00+00:00") from None
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
    gov = _gov()
    n = _acting(gov, "audit", actor, "auditor").audit_export(output, fmt, start)
    typer.echo(f"exported {n} events to {output}")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[Path | None, typer.Argument(help="export file; default: the live database trail")] = None,
    actor: Actor = None,
) -> None:
    """Verify the hash chain; names the first bad event. Exit 1 when it fails (auditors and admins)."""
    gov = _gov()
    res = _acting(gov, "audit", actor, "auditor").audit_verify(file)
    if res.ok:
        typer.echo(f"ok: {res.count} events, head {str(res.head_hash)[:16]}")
        return
    typer.echo(f"FAILED: first bad event {res.first_bad_seq}: {res.reason}", err=True)
    raise typer.Exit(1)


# ---------------------------------------------------------------- users, ui
@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[list[str], typer.Option("--role", "-r", help="requester, reviewer, approver, auditor or admin (repeatable)")],
    email: Annotated[str | None, typer.Option(help="e-mail an OIDC sign-in maps to this user")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin",
                                                 help="read the password from the first line of stdin")] = False,
    token_only: Annotated[bool, typer.Option("--token-only", help="no UI sign-in: an account that uses API tokens "
                                             "(a pipeline); prints its first token")] = False,
    actor: Actor = None,
) -> None:
    """Create a user: a password for local sign-in (prompted, or --password-stdin) and/or --email for OIDC.

    On a home without users this creates the first admin, needs no token, and prints the admin's API token."""
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif email is None and not token_only:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    gov = _gov()
    token = None
    if _presented_token() is None and not gov.has_users():
        row, token = gov.bootstrap_admin(name, role, password=password, email=email, token_only=token_only)
    else:
        acting = _acting(gov, "manage_users", actor, "admin")
        row = acting.add_user(name, role, password=password, email=email, token_only=token_only)
        if token_only:
            token, _ = acting.create_token(row.name, _default_lifetime())
    how = " and ".join(x for x in ("password" if password is not None else "", f"OIDC as {row.email}" if row.email else "",
                                   "API token" if token_only else "") if x)
    typer.echo(f"user {row.name}: {', '.join(row.role_list)} (sign-in: {how})", err=token is not None)  # token alone on stdout
    if token:
        _print_token(token)
    if token and gov.single_user():  # the first admin of a home someone switched to single-user mode before
        typer.echo("warning: this home is in single-user mode: --as NAME is trusted without a token; turn it off "
                   "with `govern auth single-user off` (as this admin) to make every command present a token", err=True)


@user_app.command("roles")
def user_roles(name: str,
               role: Annotated[list[str], typer.Option("--role", "-r", help="the user's new roles (repeatable)")],
               actor: Actor = None) -> None:
    """Replace a user's roles (effective at their next action); admins only."""
    gov = _gov()
    row = _acting(gov, "manage_users", actor, "admin").set_roles(name, role)
    typer.echo(f"user {row.name}: {', '.join(row.role_list)}")


@user_app.command("list")
def user_list(actor: Actor = None) -> None:
    """List users, their roles and how they sign in; admins only."""
    gov = _gov()
    for u in _acting(gov, "manage_users", actor, "admin").list_users():
        how = ",".join(x for x in ("password" if u.password_hash else "", "oidc" if u.email else "") if x) or "token"
        typer.echo(f"{u.name}\t{','.join(u.role_list)}\t{u.email or '-'}\t{how}")


def _default_lifetime() -> timedelta:
    from govern.services.users import DEFAULT_TOKEN_LIFETIME

    return DEFAULT_TOKEN_LIFETIME


@token_app.command("create")
def token_create(user: Annotated[str, typer.Option(help="whose token")],
                 expires: Annotated[str, typer.Option(help="lifetime: 30d, 12h, 2w ... or never")] = "90d",
                 actor: Actor = None) -> None:
    """Create an API token for a user and print it once (only its sha256 is kept); admins only."""
    from govern.auth import parse_expiry

    lifetime = parse_expiry(expires)
    gov = _gov()
    token, row = _acting(gov, "manage_users", actor, "admin").create_token(user, lifetime)
    until = f"{row.expires_at:%Y-%m-%d %H:%M} UTC" if row.expires_at else "never"
    typer.echo(f"token {row.id} for {row.user}, expires {until}", err=True)
    _print_token(token)


@token_app.command("list")
def token_list(user: Annotated[str | None, typer.Option(help="only this user's tokens")] = None,
               actor: Actor = None) -> None:
    """List tokens (id, user, created, expires, state); never the secrets. Admins only."""
    from govern.store import as_utc, now

    gov = _gov()
    for t in _acting(gov, "manage_users", actor, "admin").list_tokens(user):
        state = ("revoked" if t.revoked_at else
                 "expired" if t.expires_at and as_utc(t.expires_at) <= now() else "active")
        until = f"{as_utc(t.expires_at):%Y-%m-%d}" if t.expires_at else "never"
        typer.echo(f"{t.id}\t{t.user}\t{as_utc(t.created_at):%Y-%m-%d}\t{until}\t{state}")


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="the token's id (`govern token list`)")],
                 actor: Actor = None) -> None:
    """Revoke a token at once; admins only."""
    gov = _gov()
    row = _acting(gov, "manage_users", actor, "admin").revoke_token(token_id)
    typer.echo(f"token {row.id} of {row.user} revoked")


@auth_app.command("single-user")
def auth_single_user(state: Annotated[str, typer.Argument(help="on or off")], actor: Actor = None) -> None:
    """Trust --as without a token on this home (one person, or a demo), or stop; recorded in the trail.

    Admins only, except on a home without users."""
    if state not in ("on", "off"):
        raise _input_error(f"say on or off, not {state!r}")
    gov = _gov()
    if _presented_token() is None and not gov.has_users():
        from govern.auth import check_name

        changed = gov.set_single_user(state == "on", actor=check_name(actor or "admin"), bootstrap=True)
    else:
        changed = _acting(gov, "manage_users", actor, "admin").set_single_user(state == "on")
    if not changed:
        typer.echo(f"single-user mode is {state} already (nothing recorded)")
        return
    typer.echo(f"single-user mode {state}" + (": --as NAME is trusted without a token; every action is recorded "
                                              "under that name" if state == "on" else ""))


@auth_app.command("status")
def auth_status() -> None:
    """Single-user mode, and whose token this shell presents (exit 2 if it is refused)."""
    gov = _gov()
    typer.echo(f"single-user mode: {'on' if gov.single_user() else 'off'}")
    token = _presented_token()
    if token is None:
        typer.echo("token: none presented (set GOVERN_TOKEN or --token-file)")
        return
    p = gov.authenticate_token(token)
    typer.echo(f"token: {p.name} ({', '.join(p.roles) or 'no role'})")
    if "admin" in p.roles:
        _warn_if_admin_tokens_lapse(gov)


@app.command()
def ui(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8501,
    policy: Annotated[Path, typer.Option(
        help="admission policy for requests submitted in the UI")] = Path("policies/default.yaml"),
    worker: Annotated[bool, typer.Option("--worker/--no-worker", help="run a background `govern worker` per model")] = True,
    device: Annotated[str, typer.Option(help="torch device for the background worker")] = "cpu",
    actor: Actor = None,
) -> None:
    """Start the reviewer app (Streamlit) and a background worker; Ctrl-C stops both.

    The app signs each user in itself; its background workers need the service or admin role of the user who
    starts it (their token is handed to the workers, never to the app)."""
    from govern.auth import Acting, Principal
    from govern.policy import load_policy
    from govern.uiserver import check_listen, resolve_policy, serve

    check_listen(host, port)  # an address it cannot listen on is one line, before anything is vetted or started
    pol = load_policy(resolve_policy(policy))  # a bad policy is one error line before anything starts
    gov = _gov()
    credentials: dict[str, str] = {}
    if worker and gov.list_models():
        acting = _acting(gov, "operate", actor, "worker")
        credentials = _credentials()
    else:  # no workers: no role needed, but the admission policy is still vetted for whoever starts it
        found = _identify(gov, actor, "ui")
        acting = found[0] if found else Acting(gov, "(anonymous)", Principal("(anonymous)", (), method="none"))
    acting.require_registered_policy(pol, policy, "ui")
    raise typer.Exit(serve(host=host, port=port, policy=policy, worker=worker, device=device, credentials=credentials,
                           policy_sha256=pol.digest))


# ---------------------------------------------------------------- worker, demo
@app.command()
def worker(model: ModelOpt = None,
           device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda:0")] = "cpu",
           dtype: DtypeOpt = Dtype.float32,
           lease: Annotated[float, typer.Option(
               min=1.0, max=3600.0, help="lease seconds (1-3600); a dead worker's job is re-claimed after it")] = 60.0,
           stop_after: Annotated[float | None, typer.Option(
               min=0.0, max=MAX_SECONDS, help="exit after this many seconds")] = None,
           actor: Actor = None) -> None:
    """Serve apply jobs for one model, keeping it loaded between jobs.

    Needs the service or admin role (`govern user add worker --role service --token-only`)."""
    from govern.worker import Worker

    gov = _gov()
    _acting(gov, "operate", actor, "worker")
    name = gov.resolve_model(model)
    w = Worker(gov, name, device=device, dtype=dtype.value, lease_s=lease,
               progress=lambda rid, stage, frac: typer.echo(f"{rid} {stage} {frac:.0%}"))
    typer.echo(f"worker for {name} on {device} ({w.dtype}); lease {lease:g}s (Ctrl-C to stop)")
    try:
        w.run_forever(stop_after)
    except KeyboardInterrupt:
        typer.echo("stopped")


@app.command()
def demo(keep: Annotated[bool, typer.Option(help="keep the demo's .govern home instead of a fresh one")] = False) -> None:
    """End to end on SmolLM2: edits through the loop, answers before/after, one rollback."""
    from govern.demo import run_demo

    raise typer.Exit(run_demo(_console(), fresh=not keep))


def _input_error(msg: str) -> Exception:
    from govern.errors import InputError

    return InputError(msg)


def main() -> None:
    from govern.errors import GovernError

    try:
        app()
    except GovernError as e:  # one root: editor, suite and trail errors included
        msg = str(e)
        if len(msg) > MAX_ERROR_CHARS:
            msg = f"{msg[:MAX_ERROR_CHARS]}… ({len(msg) - MAX_ERROR_CHARS:,} more characters)"
        typer.echo(f"error: {msg}", err=True)
        sys.exit(2)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        typer.echo(f"error: no space left on device ({e.filename or 'writing'}); free space and run the command "
                   "again — each write is a transaction or an atomic rename, so nothing was left half-written", err=True)
        sys.exit(2)
    except Exception as e:
        if "disk is full" not in str(e) and "disk I/O error" not in str(e):
            raise
        typer.echo("error: the database could not be written: no space left on device; free space and run the "
                   "command again (the transaction was rolled back, nothing was written)", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
