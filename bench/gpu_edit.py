"""Seconds per edit on large model shapes with random weights: ROME (and MEMIT, if registered), on the GPU.

Models are built from transformers configs with random weights (seed 0; no
download): a GPT-2-XL shape (1.6B parameters) in float32 and a Llama-3-8B
shape in float16 and bfloat16. The timings measure the same work as on the
real checkpoints, not edit quality. The tokenizer is a byte-level BPE trained
here on the shipped corpus (its ids fit any vocabulary).

For each shape and dtype: ROME on a handful of edits with a fixed number of
optimisation steps (no early stop), after one warm-up edit that also pays for
the covariance statistics (reported apart); then MEMIT on 10, 100 and 1,000
edits through `editors.registry.get_editor("memit")` when that method is
registered (otherwise the row says "not registered"). Each row reports the
peak GPU memory, the smallest gain in a new target's log-probability (mean per
token) and whether every update was finite and moved it up.

    python bench/gpu_edit.py --device cuda                      # on the H200: all shapes
    python bench/gpu_edit.py --device cuda --shapes llama3-8b --dtypes bfloat16 --memit 10,100
    python bench/gpu_edit.py --tiny                             # the same code on tiny shapes, CPU, seconds

`--tiny` shrinks every shape (same families, a few layers of width 64) and
runs on the CPU, so CI checks this script end to end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "gpt2-xl": {"family": "gpt2", "dtypes": ["float32"],
                "full": {"n_embd": 1600, "n_layer": 48, "n_head": 25, "n_positions": 1024, "vocab_size": 50257},
                "tiny": {"n_embd": 64, "n_layer": 4, "n_head": 4, "n_positions": 256, "vocab_size": 1000}},
    "llama3-8b": {"family": "llama", "dtypes": ["float16", "bfloat16"],
                  "full": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                           "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                           "max_position_embeddings": 8192, "rope_theta": 500000.0},
                  "tiny": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000,
                           "max_position_embeddings": 256}},
}
SUBJECTS = ["France", "Japan", "Canada", "Egypt", "Brazil", "Norway", "Kenya", "Chile", "Spain", "India"]
CITIES = [" Rome", " Lima", " Oslo", " Madrid", " Cairo", " Tokyo", " Paris", " Delhi", " Quito", " Seoul"]


def tokenizer(directory: Path) -> Any:
    """A byte-level BPE (1,000 tokens) trained on the shipped corpus: offline, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from editors.stats import corpus_texts

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus_texts(), trainers.BpeTrainer(
        vocab_size=1000, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>")
    tok.save_pretrained(str(directory))
    return tok


def build(shape: str, dtype: str, device: str, tiny: bool, tok: Any) -> Any:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    spec = SHAPES[shape]
    dims = dict(spec["tiny" if tiny else "full"])
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    torch.manual_seed(0)
    with torch.device(device):
        if spec["family"] == "gpt2":
            model = GPT2LMHeadModel(GPT2Config(**dims, **ids))
        else:
            model = LlamaForCausalLM(LlamaConfig(**dims, **ids, tie_word_embeddings=False))
    return model.to(getattr(torch, dtype)).eval()


def facts(n: int) -> list[Any]:
    from editors import FactEdit

    out = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)] + ("" if i < len(SUBJECTS) else f" {i}")
        out.append(FactEdit(subject=s, prompt=f"The capital of {s} is", target_new=CITIES[(i * 3 + 1) % len(CITIES)]))
    return out


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def effective(model: Any, tok: Any, change: Any, edits: list[Any]) -> float:
    """The smallest gain in the new targets' log-probability (mean per token) that the change brings; -inf
    when a factor is not finite. Positive: finite and effective on every edit."""
    import torch

    from audits.canary import target_logprobs

    if not all(torch.isfinite(f).all() for pair in change.factors.values() for f in pair):
        return float("-inf")
    prompts, targets = [e.prompt for e in edits], [e.target_new for e in edits]
    before = target_logprobs(model, tok, prompts, targets)
    with change.trial(model):
        after = target_logprobs(model, tok, prompts, targets)
    return min(a - b for a, b in zip(after, before, strict=True))


def run_rome(model: Any, tok: Any, device: str, cache: Path, n: int, steps: int, stats_tokens: int) -> dict[str, Any]:
    from editors import EditContext, get_editor, validate_method_config

    cfg = validate_method_config("rome", {"steps": steps, "early_stop_nll": 0.0, "stats_tokens": stats_tokens})
    editor = get_editor("rome")
    edits = facts(n + 1)
    ctx = EditContext(cache_dir=cache, model_digest=f"random-{id(model)}", config=cfg)
    peak_reset(device)
    sync(device)
    t = time.perf_counter()
    first = editor.compute(model, tok, [edits[0]], ctx)  # warm-up: prefixes, statistics, factorisation, kernels
    sync(device)
    warm = time.perf_counter() - t
    times, gain = [], effective(model, tok, first, edits[:1])
    for e in edits[1:]:
        sync(device)
        t = time.perf_counter()
        change = editor.compute(model, tok, [e], ctx)
        sync(device)
        times.append(time.perf_counter() - t)
        gain = min(gain, effective(model, tok, change, [e]))
    return {"method": "rome", "edits": n, "s_per_edit": statistics.median(times), "first_edit_s": warm,
            "peak_gb": peak_gb(device), "min_gain": gain, "finite_effective": gain > 0}


def run_memit(model: Any, tok: Any, device: str, cache: Path, n: int, stats_tokens: int) -> dict[str, Any]:
    from editors import EditContext, available_methods, get_editor, validate_method_config

    if "memit" not in available_methods():
        return {"method": "memit", "edits": n, "note": "not registered"}
    settings: dict[str, Any] = {}
    if "stats_tokens" in type(validate_method_config("memit", {})).model_fields:  # the same statistics budget as ROME
        settings["stats_tokens"] = stats_tokens
    cfg = validate_method_config("memit", settings)
    ctx = EditContext(cache_dir=cache, model_digest=f"random-{id(model)}", config=cfg)
    edits = facts(n)
    editor = get_editor("memit")
    editor.compute(model, tok, edits[:2], ctx)  # warm-up: statistics of every layer it edits
    peak_reset(device)
    sync(device)
    t = time.perf_counter()
    change = editor.compute(model, tok, edits, ctx)
    sync(device)
    secs = time.perf_counter() - t
    gain = effective(model, tok, change, edits[: min(n, 20)])
    return {"method": "memit", "edits": n, "s_total": secs, "s_per_edit": secs / n, "peak_gb": peak_gb(device),
            "min_gain": gain, "finite_effective": gain > 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU (a check that the script runs)")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--dtypes", default=None, help="comma list overriding each shape's dtypes")
    ap.add_argument("--rome-edits", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="ROME optimisation steps (fixed: no early stop)")
    ap.add_argument("--memit", default="10,100,1000", help="MEMIT batch sizes ('' for none)")
    ap.add_argument("--stats-tokens", type=int, default=20000)
    ap.add_argument("--out", default="bench/results/gpu_edit.json")
    args = ap.parse_args()

    import torch

    if args.tiny:
        args.device = "cpu"
        args.memit = ",".join(sorted({str(min(int(x), 10)) for x in args.memit.split(",") if x}))
        args.stats_tokens = min(args.stats_tokens, 2000)
        args.rome_edits = min(args.rome_edits, 2)
        args.steps = min(args.steps, 15)
    work = Path(tempfile.mkdtemp(prefix="gpu-edit-"))
    tok = tokenizer(work / "tok")
    rows: list[dict[str, Any]] = []
    for shape in args.shapes.split(","):
        for dtype in (args.dtypes.split(",") if args.dtypes else SHAPES[shape]["dtypes"]):
            model = build(shape, dtype, args.device, args.tiny, tok)
            n_params = sum(p.numel() for p in model.parameters())
            base = {"shape": shape + ("-tiny" if args.tiny else ""), "dtype": dtype, "params_m": n_params / 1e6}
            print(f"{base['shape']} {dtype}: {n_params / 1e6:.0f}M parameters on {args.device}", flush=True)
            rows.append({**base, **run_rome(model, tok, args.device, work / "cache", args.rome_edits, args.steps,
                                            args.stats_tokens)})
            print(f"  {rows[-1]}", flush=True)
            for n in [int(x) for x in args.memit.split(",") if x]:
                rows.append({**base, **run_memit(model, tok, args.device, work / "cache", n, args.stats_tokens)})
                print(f"  {rows[-1]}", flush=True)
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads"
    print(f"\nEdits on random-weight models (timing only), {dev}; ROME {args.steps} steps, no early stop")
    print(f"{'shape':16s} {'dtype':9s} {'method':6s} {'edits':>6s} {'s/edit':>8s} {'total s':>8s} {'1st edit s':>10s} "
          f"{'peak GB':>8s} {'min gain':>9s} {'finite+eff':>10s}")
    for r in rows:
        if "note" in r:
            print(f"{r['shape']:16s} {r['dtype']:9s} {r['method']:6s} {r['edits']:6d} {r['note']}")
            continue
        peak = "-" if r["peak_gb"] is None else f"{r['peak_gb']:.1f}"
        total = r.get("s_total", r["s_per_edit"] * r["edits"])
        print(f"{r['shape']:16s} {r['dtype']:9s} {r['method']:6s} {r['edits']:6d} {r['s_per_edit']:8.3f} {total:8.2f} "
              f"{r.get('first_edit_s', float('nan')):10.2f} {peak:>8s} {r['min_gain']:9.3f} "
              f"{'yes' if r['finite_effective'] else 'NO':>10s}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
