"""EasyEdit's MEMIT hyper-parameter files (``hparams/MEMIT/*.yaml``) as govern MEMIT settings.

Declared in this package's `MethodSpec.imports` so that `govern policy import-hparams` reads them without
anything under ``govern/`` naming the method. Facts about the fields follow EasyEdit's files and the MEMIT
paper (Meng et al., 2023); the conversion is govern's own.
"""

from __future__ import annotations

from typing import Any

# EasyEdit MEMIT field -> govern MEMIT setting
MAPPED: dict[str, str] = {
    "layers": "layers",
    "layer_selection": "(checked: 'all', every listed layer is rewritten)",
    "fact_token": "(checked: govern keys on the subject's last token)",
    "v_num_grad_steps": "steps",
    "v_lr": "lr",
    "v_weight_decay": "weight_decay",
    "clamp_norm_factor": "clamp_norm_factor",
    "kl_factor": "kl_factor",
    "mom2_adjustment": "covariance",
    "mom2_update_weight": "mom2_update_weight",
    "context_template_length_params": "context_prefixes, prefix_tokens",
}


def memit_from_easyedit(data: Any, tools: Any) -> tuple[dict[str, Any], list[str]]:
    """(settings, notes) for govern's ``methods.memit`` from a parsed EasyEdit MEMIT file; `tools` is
    `govern.interop.easyedit.SettingsImport` (the fields MEMIT shares with ROME, and the one-line refusal)."""
    tools.refuse_unknown(MAPPED, "memit")
    out: dict[str, Any] = {}
    notes: list[str] = []
    if "layers" in data:
        layers = data["layers"]
        layers = [layers] if isinstance(layers, int) and not isinstance(layers, bool) else layers
        if (not isinstance(layers, list) or not layers
                or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in layers)):
            raise tools.error(f"layers is {data['layers']!r}; MEMIT rewrites a list of layers, e.g. layers: [4, 5, 6, 7, 8]")
        out["layers"] = sorted(set(layers))
    if "layer_selection" in data and data["layer_selection"] != "all":
        raise tools.error(f"layer_selection {data['layer_selection']!r} does not map: govern rewrites every layer in "
                          "`layers`; use layer_selection: all")
    tools.value_optimisation(out, notes, method="MEMIT", weight_decay_note=(
        "weight_decay: EasyEdit penalises |δ|/|h|², govern |δ|²/|h|², so the same number is not the same strength; "
        "check the edits' locality on the canary"))
    if "mom2_update_weight" in data:
        out["mom2_update_weight"] = tools.number("mom2_update_weight")
        notes.append("mom2_update_weight: the same λ against E[k kᵀ]; govern's covariance comes from stats_corpus "
                     "(stats_tokens tokens), not EasyEdit's mom2_dataset, so the balance can differ")
    tools.statistics_and_module(out, notes)
    return out, notes
