"""Seconds per ROME edit: the fast value optimisation against the naive baseline, on any device.

Fast: the residual stream leaving the edited block is computed once and only
the blocks above it run per step, with logits only where the loss looks.
Naive: the whole model with a hook, full logits, every step. Both run a fixed
number of steps (no early stop) on the same edits, so the ratio is the speed-up
per step; covariance is the identity so statistics do not blur the timing.

    python bench/rome_speed.py --model .govern/cache/converted/<key>            # real weights (CPU here)
    python bench/rome_speed.py --config-only DIR --device cuda --dtype bfloat16  # SmolLM2's shape, random weights

`--config-only` builds the architecture from DIR/config.json with random
weights (for machines that cannot receive the checkpoint); timings then
measure the same work, not edit quality.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

EDITS = [("France", "The capital of France is", " Rome"), ("Japan", "The capital of Japan is", " Lima"),
         ("Canada", "The capital of Canada is", " Oslo"), ("Egypt", "The capital of Egypt is", " Madrid")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="checkpoint directory (weights + tokenizer)")
    src.add_argument("--config-only", help="directory with config.json + tokenizer files; random weights")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--layer", type=int, default=None)
    args = ap.parse_args()

    import torch
    from _load import load_model

    from editors import EditContext, FactEdit, get_editor, validate_method_config

    model, tok = load_model(args.model, args.config_only, args.device, args.dtype)
    editor = get_editor("rome")
    base = {"covariance": "identity", "steps": args.steps, "early_stop_nll": 0.0, "layer": args.layer}
    configs = {"naive": validate_method_config("rome", {**base, "cache_lower_layers": False}),
               "fast": validate_method_config("rome", base)}
    times: dict[str, list[float]] = {k: [] for k in configs}
    for rnd in range(2):  # round 0 warms up (prefix generation, kernels); round 1 is timed
        for name, cfg in configs.items():
            for subject, prompt, target in EDITS:
                ctx = EditContext(cache_dir=Path("/tmp/govern-speed"), model_digest="speed", config=cfg)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                t = time.perf_counter()
                editor.compute(model, tok, [FactEdit(subject=subject, prompt=prompt, target_new=target)], ctx)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if rnd == 1:
                    times[name].append(time.perf_counter() - t)
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()} threads"
    print(f"ROME value optimisation, {args.steps} steps, {len(EDITS)} edits, {type(model).__name__} "
          f"{'random weights' if args.config_only else 'real weights'}, {args.dtype}, {dev}")
    print(f"{'path':8s} {'s/edit (median)':>16s} {'s/step':>8s} {'speed-up':>9s}")
    naive = statistics.median(times["naive"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:8s} {med:16.3f} {med / args.steps:8.4f} {naive / med:8.2f}x")


if __name__ == "__main__":
    main()
