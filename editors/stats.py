"""Second-moment statistics of an MLP projection's inputs: ``C = E[k kᵀ]``.

ROME (Meng et al., 2022) spreads a rank-one update along ``C⁻¹ k*`` so that
keys which look like typical text are disturbed as little as possible. `C` is
estimated from text passed through the model up to the edited layer.

Two offline text sources (no hub access needed):

* ``corpus``: a plain-text file; the default is ``editors/data/corpus.txt``, a
  CC0 corpus written for this project. Any other file can be configured.
* ``model``: text sampled from the model itself (seeded, so reproducible).

Computing is pure (`second_moment`); caching on disk is separate
(`cached_second_moment`), keyed by the model's weight digest, the layer, the
source and the sample count, so two models or two layers never share a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from editors.errors import StatisticsError
from editors.layers import LayerMap
from editors.tokens import context_length, encode_left_padded

DEFAULT_CORPUS = Path(__file__).parent / "data"  # every corpus*.txt in it
Progress = Callable[[str, float], None]


class _Stop(Exception):
    """Raised from a hook to end a forward pass once the layer of interest ran."""


def corpus_files(path: str | Path = DEFAULT_CORPUS) -> list[Path]:
    """A text file, or every ``corpus*.txt`` of a directory (sorted)."""
    p = Path(path)
    files = sorted(p.glob("corpus*.txt")) if p.is_dir() else [p] if p.is_file() else []
    if not files:
        raise StatisticsError(f"statistics corpus {p} does not exist or holds no corpus*.txt; "
                              "set rome.stats_corpus to a text file")
    return files


def corpus_texts(path: str | Path = DEFAULT_CORPUS) -> list[str]:
    """Paragraphs of the corpus (blank-line separated, '#' comment lines dropped)."""
    paras: list[str] = []
    for f in corpus_files(path):
        lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
        paras += [" ".join(block.split()) for block in "\n".join(lines).split("\n\n")]
    return [t for t in paras if t]


@torch.no_grad()
def sample_texts(model: nn.Module, tokenizer: Any, n_tokens: int, *, seed: int = 0, seq_len: int = 128,
                 batch: int = 16) -> list[str]:
    """Sample about `n_tokens` tokens of text from the model itself (top-k 50, seeded)."""
    device = next(model.parameters()).device
    seq_len = min(seq_len, (context_length(model) or seq_len + 8) - 8)  # a short-context model: leave room for the start word
    gen = torch.Generator(device="cpu").manual_seed(seed)
    starts = ["The", "In", "A", "It", "When", "This", "One", "There", "My", "After", "We", "Many"]
    bos = tokenizer.bos_token_id
    texts: list[str] = []
    produced = 0
    while produced < n_tokens:
        firsts = [starts[int(torch.randint(len(starts), (1,), generator=gen))] for _ in range(batch)]
        enc = encode_left_padded(tokenizer, firsts, device)
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=gen)))
        out = model.generate(  # type: ignore[operator]  # a transformers PreTrainedModel
            **enc, do_sample=True, top_k=50, max_new_tokens=seq_len, pad_token_id=tokenizer.pad_token_id or bos
        )
        for row in out:
            texts.append(tokenizer.decode(row, skip_special_tokens=True))
        produced += out.shape[0] * seq_len
    return texts


@torch.no_grad()
def second_moment(
    model: nn.Module,
    tokenizer: Any,
    layer_map: LayerMap,
    layer: int,
    texts: Iterable[str],
    n_tokens: int,
    *,
    max_len: int = 256,
    batch: int = 8,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int]:
    """Return (C, count): E[k kᵀ] in float64 over up to `n_tokens` non-padding tokens.

    Keys are the inputs of the MLP output projection at `layer` (dimension =
    the MLP's hidden width). The forward pass stops right after that layer.
    """
    module = layer_map.mlp_out_module(model, layer)
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []

    def hook(_mod: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach())
        raise _Stop

    handle = module.register_forward_pre_hook(hook)
    acc: torch.Tensor | None = None
    count = 0
    texts = list(texts)
    try:
        for i in range(0, len(texts), batch):
            if count >= n_tokens:
                break
            enc = tokenizer(texts[i : i + batch], return_tensors="pt", padding=True, truncation=True,
                            max_length=min(max_len, context_length(model) or max_len))
            enc = {k: v.to(device) for k, v in enc.items()}
            captured.clear()
            with contextlib.suppress(_Stop):
                model(**enc, use_cache=False)
            k = captured[0]  # (B, T, F)
            keys = k[enc["attention_mask"].bool()].double()  # (N, F)
            keys = keys[: n_tokens - count]
            acc = keys.T @ keys if acc is None else acc + keys.T @ keys  # (F, F)
            count += keys.shape[0]
            if progress:
                progress("covariance", min(1.0, count / n_tokens))
    finally:
        handle.remove()
    if acc is None or count == 0:
        raise StatisticsError("no text to compute statistics from; the corpus is empty")
    return acc / count, count


def cache_key(model_digest: str, layer_name: str, source: str, n_tokens: int) -> str:
    raw = json.dumps([model_digest, layer_name, source, n_tokens])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cached_second_moment(
    cache_dir: Path,
    model: nn.Module,
    tokenizer: Any,
    layer_map: LayerMap,
    layer: int,
    *,
    model_digest: str,
    source: str,
    n_tokens: int,
    corpus_path: str | Path | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, dict]:
    """Load C from `cache_dir`, or compute and store it. Returns (C, provenance)."""
    from safetensors.torch import load_file, save_file

    layer_name = layer_map.mlp_out_name(layer)
    src_id = source if source == "model" else f"corpus:{_file_digest(corpus_path or DEFAULT_CORPUS)}"
    key = cache_key(model_digest, layer_name, src_id, n_tokens)
    path = Path(cache_dir) / f"{key}.safetensors"
    if path.is_file():
        data = load_file(str(path))
        info = json.loads(Path(str(path) + ".json").read_text())
        return data["C"], {**info, "cache": "hit"}
    if source == "model":
        texts = sample_texts(model, tokenizer, n_tokens)
    elif source == "corpus":
        texts = corpus_texts(corpus_path or DEFAULT_CORPUS)
    else:
        raise StatisticsError(f"unknown statistics source {source!r}; choose 'corpus' or 'model'")
    C, count = second_moment(model, tokenizer, layer_map, layer, texts, n_tokens, progress=progress)
    info = {"kind": "second_moment", "source": src_id, "layer": layer_name, "tokens": count, "requested_tokens": n_tokens,
            "model_digest": model_digest}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"C": C.contiguous()}, str(tmp))
    Path(str(path) + ".json").write_text(json.dumps(info))
    tmp.replace(path)
    return C, {**info, "cache": "miss"}


def _file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    for f in corpus_files(path):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]
