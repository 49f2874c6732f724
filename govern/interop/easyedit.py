"""EasyEdit interop: its hyper-parameter files as method settings, its data records as edit requests.

EasyEdit (Wang et al., 2024, "EasyEdit: An Easy-to-use Knowledge Editing
Framework for Large Language Models", https://github.com/zjunlp/EasyEdit) keeps
one YAML file of hyper-parameters per method and model (``hparams/ROME/gpt2-xl.yaml``)
and reads the edit datasets of the papers it reproduces. This module reads both,
so a team moving from EasyEdit keeps its files:

* **hyper-parameters** — `hparams_settings` maps an EasyEdit file onto the
  settings of a registered govern method (ROME: `editors.methods.rome.config`)
  and validates them with `editors.validate_method_config`. Every field of the
  file is either mapped (`_ROME_MAPPED`), ignored because govern takes it from
  elsewhere (`_IGNORED`: the model, device, module names, dtype), or refused
  with one line naming the field. Where govern's setting means something a
  little different, a note says so (`ImportedSettings.notes`). `govern policy
  import-hparams FILE` prints the result as a policy ``methods:`` block.
* **records** — `foreign_request` turns one CounterFact record (Meng et al.,
  2022, "Locating and Editing Factual Associations in GPT": ``requested_rewrite``,
  ``paraphrase_prompts``, ``neighborhood_prompts``), one zsRE record as MEND and
  EasyEdit ship it (Mitchell et al., 2022: ``src``, ``alt``, ``answers``,
  ``rephrase``, ``loc``, ``loc_ans``, ``subject``) or one EasyEdit editor record
  (``prompt``, ``subject``, ``target_new``, ``ground_truth``, ``rephrase_prompt``,
  ``locality_prompt``) into govern's edit request (`govern.kinds.edit`). A field
  that does not map is refused, naming the record and the field; a request file
  is all or nothing (`govern.domain.load_request_file`), so bad input changes
  nothing.

Torch-free: reading a request file must stay fast. Only the check of a
hyper-parameter file's module name imports the layer maps (and torch).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from govern.errors import InputError

# ---------------------------------------------------------------- hyper-parameters

# EasyEdit field -> why govern does not need it (harmless to carry)
_IGNORED: dict[str, str] = {
    "alg_name": "it chose the method",
    "model_name": "govern edits the registered model named in the request",
    "device": "the worker's --device decides",
    "model_parallel": "the worker decides placement",
    "fp16": "the worker's model dtype decides",
    "stats_dir": "statistics live in govern's cache",
    "max_length": "EasyEdit's evaluation length; govern's canary has its own",
    "batch_size": "one request is one batch",
    "mom2_dtype": "govern accumulates the statistics in float64",
    "rewrite_module_tmp": "govern's layer map names the module (checked: it must be one a layer map edits)",
    "layer_module_tmp": "govern's layer map names the blocks",
    "mlp_module_tmp": "govern's layer map names the MLP",
    "attn_module_tmp": "govern's layer map names the attention",
    "ln_f_module": "govern's layer map runs the model's own final norm",
    "lm_head_module": "govern uses the model's own output embedding",
    "v_loss_layer": "govern takes the target loss at the model's output (EasyEdit's files name the last layer)",
    "mom2_dataset": "statistics come from stats_corpus (the shipped corpus by default), not a hub dataset",
    "mom2_n_samples": "it counts dataset records; govern counts tokens: set stats_tokens yourself",
}

# EasyEdit ROME field -> govern ROME setting (the conversion is in `_rome_settings`)
_ROME_MAPPED: dict[str, str] = {
    "layers": "layer",
    "fact_token": "(checked: govern's ROME keys on the subject's last token)",
    "v_num_grad_steps": "steps",
    "v_lr": "lr",
    "v_weight_decay": "weight_decay",
    "clamp_norm_factor": "clamp_norm_factor",
    "kl_factor": "kl_factor",
    "mom2_adjustment": "covariance",
    "context_template_length_params": "context_prefixes, prefix_tokens",
}


@dataclass(frozen=True)
class ImportedSettings:
    """A govern method's settings read from an EasyEdit hyper-parameter file."""

    source: str  # the file, as given
    alg_name: str  # EasyEdit's name ("ROME")
    method: str  # govern's method name ("rome")
    settings: dict[str, Any]  # validated by editors.validate_method_config(method, settings)
    notes: list[str] = field(default_factory=list)  # where govern's meaning differs, or a field was left out

    def policy_yaml(self) -> str:
        """A policy ``methods:`` block holding these settings, with the notes as comments."""
        import yaml

        head = [f"# from EasyEdit {self.alg_name} hyper-parameters {self.source} (govern policy import-hparams)"]
        head += [f"# note: {n}" for n in self.notes]
        body = yaml.safe_dump({"methods": {self.method: self.settings}}, sort_keys=False)
        return "\n".join(head) + "\n" + body


def load_hparams(path: str | Path) -> ImportedSettings:
    """Read an EasyEdit hyper-parameter YAML file; InputError (one line) when it cannot be used as is."""
    from govern.validation import parse_yaml, read_regular_file

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise InputError(f"hyper-parameter file {p} does not exist; give an EasyEdit file such as hparams/ROME/gpt2-xl.yaml")
    # a regular file (no link followed), at most 1 MB, 32 levels and 200,000 values (aliases expanded)
    data = parse_yaml(read_regular_file(p, "hyper-parameter file", 1 << 20), f"hyper-parameter file {p.name}")
    return hparams_settings(data, str(path))


def hparams_settings(data: object, source: str = "hyper-parameters") -> ImportedSettings:
    """Map EasyEdit hyper-parameters (the parsed YAML) onto a govern method's validated settings."""
    from editors import available_methods, validate_method_config

    if not isinstance(data, dict) or not data:
        raise InputError(f"{source}: expected an EasyEdit hyper-parameter mapping (alg_name, layers, v_lr, ...)")
    alg = data.get("alg_name")
    if not isinstance(alg, str) or not alg:
        raise InputError(f"{source}: alg_name is missing; EasyEdit files name their method, e.g. alg_name: ROME")
    from editors.registry import settings_importers

    mappers: dict[str, tuple[str, Any]] = {"ROME": ("rome", _rome_settings)}
    # other methods declare their own mapping in their package (MethodSpec.imports): govern names none of them
    for foreign, (name, mapper) in settings_importers("easyedit").items():
        mappers.setdefault(foreign, (name, _from_method(mapper)))
    if alg.upper() not in mappers:
        registered = ", ".join(available_methods())
        hint = (f"govern has a method {alg.lower()!r} but no EasyEdit mapping for it yet: declare one in its "
                "MethodSpec (imports=(('easyedit', NAME, mapper),))" if alg.lower() in available_methods()
                else f"govern's methods here: {registered}")
        raise InputError(f"{source}: alg_name {alg!r} cannot be imported (EasyEdit methods govern reads: "
                         f"{', '.join(sorted(mappers))}); {hint}")
    method, mapper = mappers[alg.upper()]
    settings, notes = mapper(data, source)
    validate_method_config(method, settings)  # MethodConfigError names the bad setting and the valid ones
    return ImportedSettings(source=source, alg_name=alg, method=method, settings=settings, notes=notes)


class SettingsImport:
    """The helpers a method's EasyEdit mapper (`MethodSpec.imports`) uses: shared parsing, one-line errors, and the
    fields every EasyEdit file may carry that govern ignores."""

    ignored = _IGNORED

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data, self.source = data, source

    def error(self, message: str) -> InputError:
        return InputError(f"{self.source}: {message}")

    def number(self, key: str, *, integer: bool = False) -> float:
        return _number(self.data, key, self.source, integer=integer)

    def context_templates(self) -> tuple[int, int, str | None]:
        """(context_prefixes, prefix_tokens, note) from ``context_template_length_params``."""
        return _context_templates(self.data["context_template_length_params"], self.source)

    def check_module(self) -> str:
        """A note naming the layer maps whose MLP output ``rewrite_module_tmp`` is; InputError when none is."""
        return _check_module(self.data["rewrite_module_tmp"], self.source)

    def refuse_unknown(self, mapped: Mapping[str, str], method: str, *, checked_later: tuple[str, ...] = ()) -> None:
        """One line naming the first field that neither maps nor is ignored (`checked_later`: refused by the
        mapper itself, with a message of its own)."""
        unknown = [k for k in self.data if k not in mapped and k not in _IGNORED and k not in checked_later]
        if unknown:
            raise self.error(f"field {unknown[0]!r} does not map onto govern's {method} settings; mapped fields: "
                             f"{', '.join(mapped)}; ignored: {', '.join(_IGNORED)}. Remove it or set the govern "
                             f"setting in the policy's methods.{method}")

    def value_optimisation(self, out: dict[str, Any], notes: list[str], *, method: str, weight_decay_note: str) -> None:
        """The locate-then-edit fields of the value optimisation: ``fact_token`` (checked), ``v_num_grad_steps``,
        ``v_lr``, ``clamp_norm_factor``, ``kl_factor``, ``v_weight_decay`` (noted: `weight_decay_note`)."""
        data = self.data
        if "fact_token" in data and data["fact_token"] != "subject_last":
            raise self.error(f"fact_token {data['fact_token']!r} does not map: govern's {method} takes the key at the "
                             "subject's last token; use fact_token: subject_last")
        if "v_num_grad_steps" in data:
            out["steps"] = self.number("v_num_grad_steps", integer=True)
        for src, dst in (("v_lr", "lr"), ("clamp_norm_factor", "clamp_norm_factor"), ("kl_factor", "kl_factor"),
                         ("v_weight_decay", "weight_decay")):
            if src in data:
                out[dst] = self.number(src)
        if "v_weight_decay" in data:
            notes.append(weight_decay_note)

    def statistics_and_module(self, out: dict[str, Any], notes: list[str]) -> None:
        """The fields every locate-then-edit method shares after the optimisation: ``mom2_adjustment`` (→ covariance),
        ``context_template_length_params`` (→ prefixes) and ``rewrite_module_tmp`` (checked against the layer maps)."""
        data = self.data
        if "mom2_adjustment" in data:
            adjust = data["mom2_adjustment"]
            if not isinstance(adjust, bool):
                raise self.error(f"mom2_adjustment is {adjust!r}; it must be true or false")
            out["covariance"] = "second_moment" if adjust else "identity"
            if not adjust:
                notes.append("mom2_adjustment: false means no covariance (covariance: identity, worse locality); the "
                             "policy must set admission.allow_identity_covariance: true, or change it to second_moment")
        if "context_template_length_params" in data:
            out["context_prefixes"], out["prefix_tokens"], note = self.context_templates()
            if note:
                notes.append(note)
        if "rewrite_module_tmp" in data:
            notes.append(self.check_module())


def _from_method(mapper: Any) -> Any:
    def convert(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
        return mapper(data, SettingsImport(data, source))

    return convert


def _number(data: Mapping[str, Any], key: str, source: str, *, integer: bool = False) -> float:
    v = data[key]
    if isinstance(v, str):  # PyYAML reads "5e-1" (no dot) as a string; EasyEdit converts it the same way
        try:
            v = float(v)
        except ValueError:
            raise InputError(f"{source}: {key} is {v!r}, not a number") from None
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise InputError(f"{source}: {key} is {v!r}, not a finite number")
    if integer:
        if v != int(v):
            raise InputError(f"{source}: {key} is {v!r}; it must be a whole number")
        return int(v)
    return float(v)


def _rome_settings(data: Mapping[str, Any], source: str) -> tuple[dict[str, Any], list[str]]:
    tools = SettingsImport(data, source)
    tools.refuse_unknown(_ROME_MAPPED, "rome", checked_later=("mom2_update_weight",))
    if "mom2_update_weight" in data:
        raise tools.error("field 'mom2_update_weight' belongs to a batch method (it weighs the covariance against the "
                          "new keys); ROME has no such setting: remove it, or import a batch method's file")
    out: dict[str, Any] = {}
    notes: list[str] = []

    if "layers" in data:
        layers = data["layers"]
        layers = [layers] if isinstance(layers, int) and not isinstance(layers, bool) else layers
        if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], int) or isinstance(layers[0], bool):
            raise tools.error(f"layers is {data['layers']!r}; ROME rewrites one layer, e.g. layers: [5] "
                              "(several layers are a batch method's)")
        out["layer"] = layers[0]
    tools.value_optimisation(out, notes, method="ROME", weight_decay_note=(
        "weight_decay: EasyEdit penalises |δ|/|v|², govern |δ|²/|v|², so the same number is not the same strength; "
        "check the edit's locality on the canary"))
    tools.statistics_and_module(out, notes)
    return out, notes


def _context_templates(value: object, source: str) -> tuple[int, int, str | None]:
    """EasyEdit's ``[[length, count], ...]`` as govern's (count, one length): the count-weighted mean length."""
    pairs = value if isinstance(value, list) else None
    if not pairs or not all(isinstance(p, list | tuple) and len(p) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                                 and x >= 0 for x in p) for p in pairs):
        raise InputError(f"{source}: context_template_length_params is {value!r}; expected [[length, count], ...] "
                         "such as [[5, 10], [10, 10]]")
    count = sum(n for _, n in pairs)
    if count == 0:
        return 0, 8, None
    length = max(1, round(sum(t * n for t, n in pairs) / count))
    if len({t for t, n in pairs if n}) == 1:
        return count, length, None
    return count, length, (f"context_template_length_params {value!r}: govern generates prefixes of one length, so "
                           f"{count} prefixes of {length} tokens (the count-weighted mean)")


def _check_module(template: object, source: str) -> str:
    from editors.layers import FAMILIES  # torch: only when a hyper-parameter file is read

    if not isinstance(template, str) or template.count("{}") != 1:
        raise InputError(f"{source}: rewrite_module_tmp is {template!r}; expected a module path with one {{}} for the "
                         "layer, e.g. model.layers.{}.mlp.down_proj")
    ours = template.replace("{}", "{layer}")
    families = sorted(name for name, lm in FAMILIES.items() if lm.mlp_out == ours)
    if not families:
        known = sorted({lm.mlp_out.replace("{layer}", "{}") for lm in FAMILIES.values()})
        raise InputError(f"{source}: rewrite_module_tmp {template!r} is a module no govern layer map edits (they edit: "
                         f"{', '.join(known)}); add the family's entry to FAMILIES in editors/layers.py first")
    return f"rewrite_module_tmp {template!r} is the MLP output projection of govern's {', '.join(families)} layer maps"


# ---------------------------------------------------------------- records

RecordFormat = Literal["counterfact", "zsre", "easyedit"]
FORMAT_NAMES: dict[RecordFormat, str] = {"counterfact": "CounterFact", "zsre": "zsRE", "easyedit": "EasyEdit"}


@dataclass(frozen=True)
class ForeignRequest:
    """A govern edit request (plain data, validated by the caller) made from another tool's record."""

    data: dict[str, Any]
    where: str  # the record's place, with its format and id: "cf.json item 3 (CounterFact case_id 17)"
    renamed: dict[str, str]  # govern field -> the record's field it came from, for error messages

    def explain(self, message: str) -> str:
        """`message` (about govern's fields, prefixed with `where`) with the record's own field names added."""
        rest = message.removeprefix(self.where + ": ")
        loc = rest.split(":", 1)[0]
        head = loc.split(".", 1)[0]
        if head in self.renamed and rest != message:
            return f"{message} (govern's {head} is this record's {self.renamed[head]})"
        return message


def record_format(record: object) -> RecordFormat | None:
    """Which foreign format `record` is in, or None for govern's own request format."""
    if not isinstance(record, dict):
        return None
    if "requested_rewrite" in record:
        return "counterfact"
    if "src" in record or "alt" in record:
        return "zsre"
    if "target_new" in record:
        return "easyedit"
    return None


def foreign_request(record: object, where: str, envelope: Iterable[str]) -> ForeignRequest | None:
    """The govern edit request of a CounterFact, zsRE or EasyEdit record; None when `record` is govern's own.

    `envelope` names the request fields every kind shares (model, submitted_by,
    justification, ...): a record may carry them and they pass through.
    InputError names the record and the field that does not map.
    """
    fmt = record_format(record)
    if fmt is None or not isinstance(record, dict):
        return None
    envelope = tuple(envelope)
    kept = {k: record[k] for k in envelope if k in record}
    convert = {"counterfact": _counterfact, "zsre": _zsre, "easyedit": _easyedit}[fmt]
    data, label, renamed = convert({k: v for k, v in record.items() if k not in envelope}, where)
    data = {"kind": "edit", **data, **kept}
    if "justification" not in kept and label:
        data["justification"] = f"imported {label}"
    return ForeignRequest(data=data, where=f"{where} ({label})" if label else where, renamed=renamed)


def _fields(record: Mapping[str, Any], used: Iterable[str], ignored: Iterable[str], where: str, what: str,
            prefix: str = "") -> None:
    used, ignored = tuple(used), tuple(ignored)
    for k in record:
        if k not in used and k not in ignored:
            raise InputError(f"{where}: {what} field {prefix + k!r} does not map onto a govern edit request; "
                             f"{what} fields read: {', '.join(prefix + u for u in used)}"
                             + (f" (ignored: {', '.join(ignored)})" if ignored else "") + ". Remove it")


def _text(value: object, where: str, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}: {name} is {value!r}; it must be a non-empty string")
    return value


def _texts(value: object, where: str, name: str, *, key: str | None = None) -> list[str]:
    """A string or a list of strings (or, with `key`, of mappings holding one under `key`)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise InputError(f"{where}: {name} is {type(value).__name__}; it must be a string or a list of strings")
    out = []
    for i, item in enumerate(items):
        if key is not None and isinstance(item, dict) and key in item:
            item = item[key]
        out.append(_text(item, where, f"{name}[{i}]"))
    return out


def _answer(value: object, where: str, name: str) -> str:
    """CounterFact's ``{"str": ..., "id": ...}`` or a plain string."""
    if isinstance(value, dict):
        _fields(value, ("str",), ("id",), where, "CounterFact", prefix=f"{name}.")
        if "str" not in value:
            raise InputError(f"{where}: {name} has no 'str'; write it as {{\"str\": \"English\"}}")
        value = value["str"]
    return _text(value, where, name)


_CF_TOP = ("requested_rewrite", "paraphrase_prompts", "neighborhood_prompts")
_CF_TOP_IGNORED = ("case_id", "pararel_idx", "attribute_prompts", "generation_prompts", "dependancy_generation_prompts")
_CF_REWRITE = ("prompt", "subject", "target_new", "target_true", "relation_id")


def _counterfact(rec: dict[str, Any], where: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    label = "CounterFact" + (f" case_id {rec['case_id']}" if "case_id" in rec else "")
    where = f"{where} ({label})"
    _fields(rec, _CF_TOP, _CF_TOP_IGNORED, where, "CounterFact")
    rw = rec["requested_rewrite"]
    if not isinstance(rw, dict):
        raise InputError(f"{where}: requested_rewrite must be a mapping with prompt, subject, target_new")
    _fields(rw, _CF_REWRITE, (), where, "CounterFact", prefix="requested_rewrite.")
    for k in ("prompt", "subject", "target_new"):
        if k not in rw:
            raise InputError(f"{where}: requested_rewrite.{k} is missing")
    template = _text(rw["prompt"], where, "requested_rewrite.prompt")
    subject = _text(rw["subject"], where, "requested_rewrite.subject")
    if template.count("{}") != 1:
        raise InputError(f"{where}: requested_rewrite.prompt {template!r} must hold one {{}} where the subject goes, "
                         "e.g. \"The mother tongue of {} is\"")
    fact: dict[str, Any] = {"subject": subject, "prompt": template.replace("{}", subject),
                            "target": _answer(rw["target_new"], where, "requested_rewrite.target_new")}
    if "target_true" in rw:
        fact["target_old"] = _answer(rw["target_true"], where, "requested_rewrite.target_true")
    if "relation_id" in rw:
        fact["relation"] = _text(rw["relation_id"], where, "requested_rewrite.relation_id")
    if "paraphrase_prompts" in rec:
        fact["paraphrases"] = _texts(rec["paraphrase_prompts"], where, "paraphrase_prompts")
    if "neighborhood_prompts" in rec:
        fact["neighbors"] = _texts(rec["neighborhood_prompts"], where, "neighborhood_prompts", key="prompt")
    renamed = {"subject": "requested_rewrite.subject", "prompt": "requested_rewrite.prompt",
               "target": "requested_rewrite.target_new", "target_old": "requested_rewrite.target_true",
               "relation": "requested_rewrite.relation_id", "paraphrases": "paraphrase_prompts",
               "neighbors": "neighborhood_prompts"}
    return fact, label, renamed


_ZSRE = ("subject", "src", "alt", "answers", "rephrase", "loc")
_ZSRE_IGNORED = ("loc_ans", "pred", "cond", "case_id")  # loc_ans: the canary compares with production's own answer


def _zsre(rec: dict[str, Any], where: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    label = "zsRE" + (f" case_id {rec['case_id']}" if "case_id" in rec else "")
    where = f"{where} ({label})"
    _fields(rec, _ZSRE, _ZSRE_IGNORED, where, "zsRE")
    for k in ("src", "alt", "subject"):
        if k not in rec:
            hint = " (govern needs the subject as written in src)" if k == "subject" else ""
            raise InputError(f"{where}: zsRE field {k!r} is missing{hint}")
    fact: dict[str, Any] = {"subject": _text(rec["subject"], where, "subject"), "prompt": _text(rec["src"], where, "src"),
                            "target": _text(rec["alt"], where, "alt")}
    if "answers" in rec:
        answers = _texts(rec["answers"], where, "answers")
        if answers:
            fact["target_old"] = answers[0]
    if "rephrase" in rec:
        fact["paraphrases"] = _texts(rec["rephrase"], where, "rephrase")
    if "loc" in rec:
        fact["neighbors"] = _texts(rec["loc"], where, "loc")
    renamed = {"prompt": "src", "target": "alt", "target_old": "answers[0]", "paraphrases": "rephrase", "neighbors": "loc"}
    return fact, label, renamed


_EASYEDIT = ("prompt", "subject", "target_new", "ground_truth", "rephrase_prompt", "locality_prompt")
_EASYEDIT_IGNORED = ("locality_ground_truth", "case_id")


def _easyedit(rec: dict[str, Any], where: str) -> tuple[dict[str, Any], str, dict[str, str]]:
    label = "EasyEdit" + (f" case_id {rec['case_id']}" if "case_id" in rec else "")
    where = f"{where} ({label})"
    _fields(rec, _EASYEDIT, _EASYEDIT_IGNORED, where, "EasyEdit")
    for k in ("prompt", "subject", "target_new"):
        if k not in rec:
            raise InputError(f"{where}: EasyEdit field {k!r} is missing")
    fact: dict[str, Any] = {"subject": _text(rec["subject"], where, "subject"),
                            "prompt": _text(rec["prompt"], where, "prompt"),
                            "target": _text(rec["target_new"], where, "target_new")}
    if "ground_truth" in rec:
        truth = _texts(rec["ground_truth"], where, "ground_truth")
        if truth:
            fact["target_old"] = truth[0]
    if "rephrase_prompt" in rec:
        fact["paraphrases"] = _texts(rec["rephrase_prompt"], where, "rephrase_prompt")
    if "locality_prompt" in rec:
        fact["neighbors"] = _texts(rec["locality_prompt"], where, "locality_prompt")
    renamed = {"target": "target_new", "target_old": "ground_truth", "paraphrases": "rephrase_prompt",
               "neighbors": "locality_prompt"}
    return fact, label, renamed
