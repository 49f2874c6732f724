"""ROME seconds per edit, govern against EasyEdit, on the same random-weight model, prompts and steps, in one run.

EasyEdit (https://github.com/zjunlp/EasyEdit) is not a dependency and none of its code is in this repository:
point ``--easyedit`` at a checkout of it (an ignored scratch folder). This harness imports only its ROME
modules (``easyeditor.models.rome``): the package ``__init__`` files that pull in every other method and their
dependencies are replaced by empty namespace packages, and two imports that ROME without covariance
statistics never uses (``datasets`` for its statistics corpus, ``matplotlib.style``) get empty stand-ins
when they are not installed. That is a benchmark harness's shortcut, not how govern runs.

Both sides edit the MLP output projection of one layer with the same number of value-optimisation steps
(no early stop: random weights never reach it), twenty generated context prefixes plus the bare prompt, and
no covariance (EasyEdit's shipped ``mom2_adjustment: false`` for both shapes; govern ``covariance:
identity``). A second govern row uses govern's default covariance (statistics and factorisation paid once,
in the warm-up). Models are built by ``bench/gpu_edit.py`` (GPT-2-XL shape in float32, Llama-3-8B shape in
float16 / bfloat16, random weights, an offline tokenizer). Each row: median seconds per edit after one
warm-up edit, peak GPU memory, whether the update is finite and raises the new target.

    python bench/easyedit_side.py --easyedit /path/to/EasyEdit --device cuda
    python bench/easyedit_side.py --easyedit /path/to/EasyEdit --tiny          # tiny shapes on the CPU
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EASYEDIT_SETTINGS = {  # EasyEdit's shipped hparams/ROME/{gpt2-xl,llama3-8b}.yaml, with the layer scaled for --tiny
    "gpt2-xl": {"layer": 17, "tiny_layer": 1, "steps": 20, "v_weight_decay": 0.5, "fp16": False,
                "rewrite_module_tmp": "transformer.h.{}.mlp.c_proj", "layer_module_tmp": "transformer.h.{}",
                "mlp_module_tmp": "transformer.h.{}.mlp", "attn_module_tmp": "transformer.h.{}.attn",
                "ln_f_module": "transformer.ln_f", "lm_head_module": "transformer.wte"},
    "llama3-8b": {"layer": 5, "tiny_layer": 1, "steps": 25, "v_weight_decay": 1e-3, "fp16": True,
                  "rewrite_module_tmp": "model.layers.{}.mlp.down_proj", "layer_module_tmp": "model.layers.{}",
                  "mlp_module_tmp": "model.layers.{}.mlp", "attn_module_tmp": "model.layers.{}.self_attn",
                  "ln_f_module": "model.norm", "lm_head_module": "lm_head"},
}


def import_easyedit_rome(root: Path) -> tuple[Any, Any]:
    """`apply_rome_to_model` and `ROMEHyperParams` from a checkout, without EasyEdit's package-wide imports."""
    pkg = root / "easyeditor"
    if not (pkg / "models" / "rome" / "rome_main.py").is_file():
        raise SystemExit(f"{root} is not an EasyEdit checkout (no easyeditor/models/rome/rome_main.py)")
    for name, path in (("easyeditor", pkg), ("easyeditor.models", pkg / "models"), ("easyeditor.util", pkg / "util")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    for optional in ("datasets", "matplotlib", "matplotlib.style"):
        try:
            importlib.import_module(optional)
        except ImportError:
            stand_in = types.ModuleType(optional)
            stand_in.load_dataset = None  # type: ignore[attr-defined]  # never called without covariance statistics
            stand_in.context = None  # type: ignore[attr-defined]  # imported by compute_v, never used
            stand_in.__path__ = []  # type: ignore[attr-defined]
            sys.modules[optional] = stand_in
    main = importlib.import_module("easyeditor.models.rome.rome_main")
    hp = importlib.import_module("easyeditor.models.rome.rome_hparams")
    return main.apply_rome_to_model, hp.ROMEHyperParams


def easyedit_hparams(cls: Any, shape: str, n_layers: int, tiny: bool, device: str, dtype: str) -> Any:
    s = EASYEDIT_SETTINGS[shape]
    return cls(layers=[s["tiny_layer"] if tiny else s["layer"]], fact_token="subject_last", v_num_grad_steps=s["steps"],
               v_lr=0.5, v_loss_layer=n_layers - 1, v_weight_decay=s["v_weight_decay"], clamp_norm_factor=4,
               kl_factor=0.0625, mom2_adjustment=False, context_template_length_params=[[5, 10], [10, 10]],
               rewrite_module_tmp=s["rewrite_module_tmp"], layer_module_tmp=s["layer_module_tmp"],
               mlp_module_tmp=s["mlp_module_tmp"], attn_module_tmp=s["attn_module_tmp"], ln_f_module=s["ln_f_module"],
               lm_head_module=s["lm_head_module"], mom2_dataset="wikipedia", mom2_n_samples=100000,
               mom2_dtype="float32", alg_name="ROME", device=0 if device.startswith("cuda") else "cpu",
               model_name=f"random-{shape}", stats_dir=tempfile.mkdtemp(), fp16=dtype == "float16")


def time_easyedit(apply_rome: Any, hparams: Any, model: Any, tok: Any, edits: list[Any], device: str) -> dict[str, Any]:
    import torch
    from gpu_edit import peak_gb, peak_reset, sync

    from audits.canary import target_logprobs

    times, gains, finite = [], [], True
    peak_reset(device)
    for i, e in enumerate(edits):
        request = [{"prompt": e.prompt, "subject": e.subject, "target_new": e.target_new}]
        before = target_logprobs(model, tok, [e.prompt], [e.target_new])[0]
        sync(device)
        t = time.perf_counter()
        _, orig = apply_rome(model, tok, request, hparams, copy=False, return_orig_weights=True)
        sync(device)
        if i:  # the first edit is the warm-up (context templates, kernels)
            times.append(time.perf_counter() - t)
        after = target_logprobs(model, tok, [e.prompt], [e.target_new])[0]
        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, w in orig.items():
                finite = finite and bool(torch.isfinite(params[name]).all())
                params[name].copy_(w)
        gains.append(after - before)
    gain = min(gains) if finite else float("-inf")
    return {"s_per_edit": statistics.median(times), "peak_gb": peak_gb(device), "min_gain": gain,
            "finite_effective": finite and gain > 0}


def time_govern(model: Any, tok: Any, edits: list[Any], device: str, steps: int, covariance: str,
                cache: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    from gpu_edit import effective, peak_gb, peak_reset, sync

    from editors import EditContext, get_editor, validate_method_config

    cfg = validate_method_config("rome", {"steps": steps, "early_stop_nll": 0.0, "covariance": covariance,
                                          "context_prefixes": 20, "prefix_tokens": 8, "lr": 0.5, **(extra or {})})
    editor = get_editor("rome")
    ctx = EditContext(cache_dir=cache, model_digest=f"random-{id(model)}-{covariance}", config=cfg)
    times, gain = [], float("inf")
    peak_reset(device)
    for i, e in enumerate(edits):
        sync(device)
        t = time.perf_counter()
        change = editor.compute(model, tok, [e], ctx)
        change.apply(model)  # written into the weights with an undo copy, as EasyEdit's return_orig_weights does
        sync(device)
        if i:
            times.append(time.perf_counter() - t)
        change.revert(model)
        gain = min(gain, effective(model, tok, change, [e]))
    return {"s_per_edit": statistics.median(times), "peak_gb": peak_gb(device), "min_gain": gain,
            "finite_effective": gain > 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--easyedit", required=True, type=Path, help="an EasyEdit checkout (the folder holding easyeditor/)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny shapes (CPU, seconds)")
    ap.add_argument("--edits", type=int, default=4, help="timed edits per row, after one warm-up")
    ap.add_argument("--shapes", default="gpt2-xl,llama3-8b")
    ap.add_argument("--dtypes", default="", help="comma list overriding each shape's dtypes")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a govern rome setting for both govern rows, e.g. --set key_mode=pooled (YAML value)")
    ap.add_argument("--skip-easyedit", action="store_true")
    args = ap.parse_args()
    import yaml

    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}

    sys.path.insert(0, str(REPO / "bench"))
    from gpu_edit import SHAPES, build, facts, tokenizer

    apply_rome, hp_cls = import_easyedit_rome(args.easyedit.resolve())
    work = Path(tempfile.mkdtemp(prefix="easyedit-side-"))
    tok = tokenizer(work / "tok")
    rows = []
    for shape in args.shapes.split(","):
        for dtype in (args.dtypes.split(",") if args.dtypes else SHAPES[shape]["dtypes"]):
            model = build(shape, dtype, args.device, args.tiny, tok)
            n_layers = model.config.num_hidden_layers
            steps = EASYEDIT_SETTINGS[shape]["steps"]
            edits = facts(args.edits + 1)
            hp = easyedit_hparams(hp_cls, shape, n_layers, args.tiny, args.device, dtype)
            try:
                if args.skip_easyedit:
                    raise RuntimeError("skipped")
                ee = time_easyedit(apply_rome, hp, model, tok, edits, args.device)
            except Exception as e:  # noqa: BLE001  # EasyEdit's failure is a row of the table, not the end of the run
                ee = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
            ours = time_govern(model, tok, edits, args.device, steps, "identity", work / "cache", extra)
            cov = time_govern(model, tok, edits, args.device, steps, "second_moment", work / "cache", extra)
            rows.append((shape, dtype, ee, ours, cov))
            print(f"{shape} {dtype}: easyedit {ee}; govern {ours}; govern+cov {cov}", flush=True)
            del model
            if args.device.startswith("cuda"):
                import torch

                torch.cuda.empty_cache()

    def cell(r: dict[str, Any]) -> str:
        if "error" in r:
            return f"failed: {r['error']}"
        mem = "" if r["peak_gb"] is None else f", {r['peak_gb']:.1f} GiB"
        return f"{r['s_per_edit']:.3f} s{mem}, {'finite+effective' if r['finite_effective'] else 'NOT effective'}"

    print("\n| shape | dtype | EasyEdit ROME | govern ROME (identity) | ratio | govern ROME (covariance) | ratio |")
    print("|---|---|---|---|---:|---|---:|")
    for shape, dtype, ee, ours, cov in rows:
        ratio = "" if "error" in ee else f"{ee['s_per_edit'] / ours['s_per_edit']:.1f}x"
        ratio_c = "" if "error" in ee else f"{ee['s_per_edit'] / cov['s_per_edit']:.1f}x"
        print(f"| {shape} | {dtype} | {cell(ee)} | {cell(ours)} | {ratio} | {cell(cov)} | {ratio_c} |")


if __name__ == "__main__":
    main()
