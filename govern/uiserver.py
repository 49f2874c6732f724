"""`govern ui`: the Streamlit app plus one background `govern worker` per registered model.

The app (``ui/app.py``) runs in a Streamlit subprocess; the workers run as
``python -m govern.cli worker`` subprocesses so that applying an edit never
blocks a page. The workers get the credentials of whoever started `govern ui`
(`credentials`: their token or token file, checked by the CLI for the service or
admin role); the Streamlit app gets none, since it signs every user in itself.
All children stop when `govern ui` exits (Ctrl-C, SIGTERM, or — on Linux — its
death, through ``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import FrameType

from govern.errors import InputError, PermissionDenied
from govern.policy import Policy, load_policy
from govern.service import Govern

APP = Path(__file__).resolve().parent.parent / "ui" / "app.py"
SHIPPED_POLICY = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def resolve_policy(policy: Path) -> Path:
    """The policy file; the default name falls back to the shipped one outside the repository."""
    if not policy.is_file() and policy == Path("policies/default.yaml") and SHIPPED_POLICY.is_file():
        return SHIPPED_POLICY
    return policy


CREDENTIALS = ("GOVERN_TOKEN", "GOVERN_TOKEN_FILE")


def check_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address this machine cannot listen on (unknown name, another machine's address,
    a port in use or reserved) before anything starts: Streamlit would otherwise die with a socket traceback."""
    from govern.validation import refuse_controls

    refuse_controls(host, "--host")  # getaddrinfo stops at a NUL that the Streamlit command line would not take
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise InputError(f"--host {host!r} is not an address here ({reason}); use 127.0.0.1 (this machine only), "
                         f"0.0.0.0 (every interface) or a name that resolves to this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: a socket in TIME_WAIT is no obstacle
        try:
            sock.bind(address)
        except OSError as e:
            raise InputError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port, or a --host "
                             f"of this machine") from None


def pinned_policy(path: Path, sha256: str | None) -> Policy:
    """The policy at `path`, refused (one line) unless its digest is `sha256`, the one `govern ui` vetted at start
    (registered, or started by an admin): the file is re-read by the app, and an edit after start must not count."""
    pol = load_policy(path)
    if sha256 and pol.digest != sha256:
        raise PermissionDenied(f"policy file {path} changed since `govern ui` started (sha256 {pol.digest[:12]}, "
                               f"started with {sha256[:12]}); restart `govern ui` to vet the new policy")
    return pol


def serve(*, host: str, port: int, policy: Path, worker: bool, device: str,
          credentials: dict[str, str] | None = None, policy_sha256: str | None = None) -> int:
    policy = resolve_policy(policy)
    pinned_policy(policy, policy_sha256)  # a bad (or since changed) policy is one error line before anything starts
    gov = Govern()
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIALS}
    env.update({"GOVERN_HOME": str(gov.home.root), "GOVERN_UI_POLICY": str(policy.resolve())})
    if policy_sha256:
        env["GOVERN_UI_POLICY_SHA256"] = policy_sha256
    worker_env = {**env, **(credentials or {})}
    children: list[tuple[str, subprocess.Popen]] = []

    def stop(_sig: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        if worker:
            models = [m.name for m in gov.list_models()]
            if not models:
                print("no model is registered yet: no background worker (`govern model add`, then restart `govern ui`)")
            for name in models:
                # a 30 s lease: the heartbeat (every lease/3) publishes stage and progress often enough for the page
                cmd = [sys.executable, "-m", "govern.cli", "worker", "--model", name, "--device", device, "--lease", "30"]
                children.append((f"worker {name}", subprocess.Popen(cmd, env=worker_env, preexec_fn=_die_with_parent)))
        cmd = [sys.executable, "-m", "streamlit", "run", str(APP),
               "--server.address", host, "--server.port", str(port), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
               "--server.runOnSave", "false", "--client.toolbarMode", "minimal", "--global.developmentMode", "false"]
        app = subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)
        children.append(("streamlit", app))
        print(f"govern ui: http://{host}:{port} (home {gov.home.root}, policy {policy}); Ctrl-C stops it", flush=True)
        return app.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for name, p in children:
            if p.poll() is None:  # workers stop cleanly on SIGINT (they unregister); Streamlit on SIGTERM
                p.send_signal(signal.SIGINT if name.startswith("worker") else signal.SIGTERM)
        for _name, p in children:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
