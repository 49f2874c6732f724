"""Milliseconds to switch production between two adjacent versions: `ModelHost.switch` against reloading from disk.

Two versions of SmolLM2 that differ by one rank-one change (a ROME-sized
``A Bᵀ`` on a middle layer's ``down_proj``, random factors with the norm of a
real edit — the arithmetic is what is timed, not the edit's quality):

* **switch** — one host keeps the model loaded and moves it with
  `ModelHost.switch`: revert the change bit-exactly from the in-memory copy (or
  apply it: sha256 check, float64 ``addmm``, cast, undo copy), then check the
  touched tensor against the version's manifest;
* **reload** — a fresh host per switch: load the pinned checkpoint from disk
  (every file's sha256 checked, as govern does) and materialise the version.

Both end bit-identical (checked). Run:

    python bench/switch.py                      # the converted SmolLM2 under $GOVERN_SHARED_CACHE or .govern/cache
    python bench/switch.py --model DIR --switches 40 --reloads 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def find_checkpoint() -> Path:
    roots = [Path(os.environ["GOVERN_SHARED_CACHE"])] if os.environ.get("GOVERN_SHARED_CACHE") else []
    roots += [REPO / ".govern" / "cache", Path.cwd() / ".govern" / "cache"]
    for root in roots:
        for d in sorted((root / "converted").glob("*")):
            if (d / "model.safetensors").is_file():
                return d
    raise SystemExit("no converted SmolLM2 checkpoint found; run `govern demo` once, or pass --model DIR")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="checkpoint directory (default: the converted SmolLM2)")
    ap.add_argument("--layer", type=int, default=6, help="block whose MLP down_proj the change touches")
    ap.add_argument("--switches", type=int, default=40, help="timed switches (alternating between the two versions)")
    ap.add_argument("--reloads", type=int, default=4, help="timed reloads")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))

    import torch

    from editors.changes import LowRankUpdate, tensor_sha256
    from govern.host import BaseRef, ChangeRef, ModelHost, VersionRef
    from govern.models import digest_of, pin_files

    path = args.model or find_checkpoint()
    files = pin_files(path)
    base = BaseRef(name="bench", path=str(path), files=files, digest=digest_of(files))
    v1 = VersionRef(base=base, number=1)

    host = ModelHost()
    t = time.perf_counter()
    loaded = host.switch(v1)
    first_load = time.perf_counter() - t
    params = dict(loaded.model.named_parameters())
    name = f"model.layers.{args.layer}.mlp.down_proj.weight"
    w = params[name]  # (out, in) = (576, 1536) for SmolLM2
    g = torch.Generator().manual_seed(0)
    a = torch.randn(w.shape[0], 1, generator=g)  # (out, 1)
    b = torch.randn(w.shape[1], 1, generator=g)  # (in, 1)
    scale = 0.05 * float(w.detach().norm()) / float(a.norm() * b.norm())  # ‖ΔW‖ ≈ 5% of ‖W‖, like a clamped ROME edit
    change = LowRankUpdate.build(loaded.model, "bench", {name: (a * scale, b)})
    with tempfile.TemporaryDirectory() as d:
        file = change.save(Path(d) / "change.safetensors")
        after = w.detach().clone().double().addmm_(change.factors[name][0].double(), change.factors[name][1].double().T)
        manifest2 = {name: tensor_sha256(after.to(w.dtype))}
        v2 = VersionRef(base=base, number=2, manifest=manifest2,
                        changes=(ChangeRef(id="change-bench", kind=change.kind, digest=change.digest, path=str(file)),))
        v1m = VersionRef(base=base, number=1, manifest={name: tensor_sha256(w)})

        host.switch(v2)  # warm-up: reads and checks the change file once (a host keeps loaded changes)
        host.switch(v1m)
        switch_ms = []
        for i in range(args.switches):
            target = v2 if i % 2 == 0 else v1m
            t = time.perf_counter()
            host.switch(target)
            switch_ms.append(1000 * (time.perf_counter() - t))
        reload_ms = []
        for i in range(args.reloads):
            target = v2 if i % 2 == 0 else v1m
            t = time.perf_counter()
            ModelHost().switch(target)
            reload_ms.append(1000 * (time.perf_counter() - t))

        host.switch(v2)
        fresh = ModelHost().switch(v2)
        exact = all(torch.equal(p, q) for p, q in zip(host.loaded.model.state_dict().values(),  # type: ignore[union-attr]  # switch() just loaded it
                                                       fresh.model.state_dict().values(), strict=True))

    med_s, med_r = statistics.median(switch_ms), statistics.median(reload_ms)
    print(f"SmolLM2 {path.name}: two versions differing by one rank-one change on {name} {tuple(w.shape)}; "
          f"torch threads {torch.get_num_threads()}; first load {first_load:.2f}s")
    print("| method | runs | median ms | min ms | max ms | vs switch |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| ModelHost.switch (revert/apply) | {len(switch_ms)} | {med_s:.1f} | {min(switch_ms):.1f} | "
          f"{max(switch_ms):.1f} | 1× |")
    print(f"| reload from disk + materialise | {len(reload_ms)} | {med_r:.0f} | {min(reload_ms):.0f} | {max(reload_ms):.0f} | "
          f"{med_r / med_s:.0f}× |")
    print(f"switched weights bit-identical to a reload: {exact}; target ≤ 50 ms per switch: "
          f"{'met' if med_s <= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
