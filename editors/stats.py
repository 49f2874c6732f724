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
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from editors.capture import mlp_inputs
from editors.errors import StatisticsError
from editors.layers import LayerMap
from editors.tokens import context_length, encode_left_padded

DEFAULT_CORPUS = Path(__file__).parent / "data"  # every corpus*.txt in it
Progress = Callable[[str, float], None]


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
    return list(iter_corpus(path))


def iter_corpus(path: str | Path = DEFAULT_CORPUS) -> Iterator[str]:
    """The paragraphs of `corpus_texts`, streamed file by file and line by line (a corpus of any size)."""
    for f in corpus_files(path):
        block: list[str] = []
        with f.open(encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("#"):
                    continue
                if line.strip():
                    block.append(line)
                elif block:
                    yield " ".join(" ".join(block).split())
                    block = []
        if block:
            yield " ".join(" ".join(block).split())


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
    batch: int | None = None,
    progress: Progress | None = None,
) -> tuple[torch.Tensor, int]:
    """Return (C, count): E[k kᵀ] (float64) over up to `n_tokens` non-padding tokens.

    Keys are the inputs of the MLP output projection at `layer` (dimension =
    the MLP's hidden width). The forward pass stops right after that layer.
    `texts` is consumed lazily, `batch` texts per forward pass (default: 8 on
    the CPU, 64 on an accelerator), and ``Kᵀ K`` is accumulated in float32 on
    the model's device (full-precision fp32 products, TF32 off), whatever the
    model's dtype; only the final mean is float64.
    """
    device = next(model.parameters()).device
    batch = batch or (8 if device.type == "cpu" else 64)
    acc: torch.Tensor | None = None
    count = 0
    length = min(max_len, context_length(model) or max_len)
    with _full_fp32_matmul():
        for chunk in _batches(texts, batch):
            if count >= n_tokens:
                break
            enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=length)
            enc = {k: v.to(device) for k, v in enc.items()}
            keys = mlp_inputs(model, layer_map, layer, **enc)[enc["attention_mask"].bool()].float()  # (N, F)
            keys = keys[: n_tokens - count]
            if acc is None:
                acc = torch.zeros(keys.shape[1], keys.shape[1], dtype=torch.float32, device=device)
            acc.addmm_(keys.T, keys)  # (F, F) += Kᵀ K
            count += keys.shape[0]
            if progress:
                progress("covariance", min(1.0, count / n_tokens))
    if acc is None or count == 0:
        raise StatisticsError("no text to compute statistics from; the corpus is empty")
    return acc.double() / count, count


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for t in texts:
        chunk.append(t)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@contextlib.contextmanager
def _full_fp32_matmul() -> Iterator[None]:
    """Turn TF32 off for the statistics' products on CUDA (restored in `finally`): C is summed over many tokens."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


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
    texts: Iterable[str]
    if source == "model":
        texts = sample_texts(model, tokenizer, n_tokens)
    elif source == "corpus":
        texts = iter_corpus(corpus_path or DEFAULT_CORPUS)
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


@dataclass(frozen=True)
class CovarianceSolver:
    """``(C + λI)⁻¹ X`` from a Cholesky factor kept on the model's device (float64).

    λ = ridge · tr(C) / F, as in `editors.methods.rome.method.rank_one_factors`.
    Factorising costs O(F³) once; each solve is two triangular solves, O(F²)
    per column, so an edit never re-reads C from disk or re-solves it.
    """

    chol: torch.Tensor  # (F, F) lower-triangular, float64, on the model's device
    info: dict

    @classmethod
    def factorise(cls, C: torch.Tensor, ridge: float, device: torch.device | str, info: dict | None = None
                  ) -> CovarianceSolver:
        C64 = C.to(device=device, dtype=torch.float64)
        d = C64.shape[0]
        reg = ridge * torch.trace(C64) / d
        chol, bad = torch.linalg.cholesky_ex(C64 + reg * torch.eye(d, dtype=torch.float64, device=C64.device))
        if int(bad) != 0:
            raise StatisticsError(f"the key covariance of {info.get('layer') if info else 'this layer'} is not positive "
                                  f"definite (ridge {ridge}); raise rome.ridge or estimate it from more tokens "
                                  "(rome.stats_tokens)")
        return cls(chol, dict(info or {}))

    def solve(self, X: torch.Tensor) -> torch.Tensor:
        """(C + λI)⁻¹ X in float64 on the factor's device; X is (F,) or (F, n)."""
        x = X.to(device=self.chol.device, dtype=torch.float64)
        col = x.ndim == 1
        out = torch.cholesky_solve(x[:, None] if col else x, self.chol)  # (F, n)
        return out[:, 0] if col else out


class DeviceCache:
    """One process-wide LRU for the statistics kept on a device: covariances, their factors, preserved bases.

    Bounded by entries and by bytes (``GOVERN_STATS_CACHE_GB``, default 16; a Llama-3-8B-sized covariance is
    14336² float64 = 1.6 GB, so an unbounded cache of a five-layer window per base would grow without end).
    Every method that keeps such tensors goes through `default_cache` so one bound holds for all of them.
    """

    def __init__(self, max_entries: int = 32, max_bytes: int | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes if max_bytes is not None else int(
            float(os.environ.get("GOVERN_STATS_CACHE_GB", "16")) * 2**30)
        self._items: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()

    def get(self, key: tuple) -> Any | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: tuple, value: Any, nbytes: int) -> Any:
        self._items[key] = (value, nbytes)
        self._items.move_to_end(key)
        while len(self._items) > 1 and (len(self._items) > self.max_entries or self.nbytes > self.max_bytes):
            self._items.popitem(last=False)
        return value

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


default_cache = DeviceCache()


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def device_second_moment(
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
    """C of `layer` in float64 on the model's device, through `default_cache` (then the disk cache, then computed).
    Returns (C, provenance); provenance["cache"] is "memory" on a process hit."""
    device = next(model.parameters()).device
    key = ("moment", str(cache_dir), model_digest, layer_map.mlp_out_name(layer), source, str(corpus_path), n_tokens,
           str(device))
    hit = default_cache.get(key)
    if hit is not None:
        return hit[0], {**hit[1], "cache": "memory"}
    C, info = cached_second_moment(cache_dir, model, tokenizer, layer_map, layer, model_digest=model_digest, source=source,
                                   n_tokens=n_tokens, corpus_path=corpus_path, progress=progress)
    C64 = C.to(device=device, dtype=torch.float64)
    default_cache.put(key, (C64, info), _nbytes(C64))
    return C64, info


def cached_solver(
    cache_dir: Path,
    model: nn.Module,
    tokenizer: Any,
    layer_map: LayerMap,
    layer: int,
    *,
    model_digest: str,
    source: str,
    n_tokens: int,
    ridge: float,
    corpus_path: str | Path | None = None,
    progress: Progress | None = None,
) -> tuple[CovarianceSolver, dict]:
    """The factorised covariance of `layer`, from `default_cache` or built from `cached_second_moment`.
    Returns (solver, provenance); provenance["cache"] is "memory" on a process hit."""
    device = next(model.parameters()).device
    key = ("solver", str(cache_dir), model_digest, layer_map.mlp_out_name(layer), source, str(corpus_path), n_tokens,
           ridge, str(device))
    solver = default_cache.get(key)
    if solver is not None:
        return solver, {**solver.info, "cache": "memory"}
    C, info = cached_second_moment(cache_dir, model, tokenizer, layer_map, layer, model_digest=model_digest, source=source,
                                   n_tokens=n_tokens, corpus_path=corpus_path, progress=progress)
    solver = CovarianceSolver.factorise(C, ridge, device, info)
    default_cache.put(key, solver, _nbytes(solver.chol))
    return solver, info


def clear_solver_cache() -> None:
    """Drop every statistic this process holds on a device (covariances, factors, bases; frees their memory)."""
    default_cache.clear()


def first_tokens(tokenizer: Any, texts: Iterable[str], max_tokens: int) -> list[int]:
    """The distinct ids that open a text, as the tokenizer encodes it: the first token of every sentence of `texts`.

    A tokenizer that prepends a BOS token gives that one id (every text then opens with it); one that does not
    (GPT-2, SmolLM2) gives the sentence-initial words in their no-space form ("The", "France"), in order of first
    appearance, at most `max_tokens` of them.
    """
    seen: dict[int, None] = {}
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
            ids = tokenizer(sentence.strip(), add_special_tokens=True)["input_ids"] if sentence.strip() else []
            if ids:
                seen.setdefault(int(ids[0]), None)
                if len(seen) >= max_tokens:
                    return list(seen)
    return list(seen)


@torch.no_grad()
def second_position_keys(model: nn.Module, layer_map: LayerMap, layer: int, first_ids: list[int], second_id: int,
                         batch: int = 512) -> torch.Tensor:
    """(F, m) float32 on the model's device: the key of `layer` at position 1 of the two-token text
    ``[first, second_id]``, for each id in `first_ids` (the forward pass stops at the edited layer)."""
    device = next(model.parameters()).device
    out = []
    for s in range(0, len(first_ids), batch):
        firsts = torch.tensor(first_ids[s : s + batch], dtype=torch.long, device=device)[:, None]  # (b, 1)
        ids = torch.cat([firsts, torch.full_like(firsts, second_id)], 1)  # (b, 2)
        out.append(mlp_inputs(model, layer_map, layer, input_ids=ids, attention_mask=torch.ones_like(ids))[:, 1].float())
    if not out:
        raise StatisticsError("no sentence-initial tokens in the corpus to compute the protected keys from")
    return torch.cat(out).T.contiguous()  # (F, m)


def cached_second_position_keys(model: nn.Module, tokenizer: Any, layer_map: LayerMap, layer: int, second_id: int, *,
                                model_digest: str, corpus_path: str | Path | None = None,
                                max_tokens: int = 1024) -> torch.Tensor:
    """`second_position_keys` after each of the corpus's sentence-initial tokens, kept in `default_cache` (cheap to
    rebuild: one two-token pass per distinct first token, so nothing is written to disk)."""
    device = next(model.parameters()).device
    key = ("second", model_digest, layer_map.mlp_out_name(layer), str(corpus_path), max_tokens, second_id, str(device))
    hit = default_cache.get(key)
    if hit is not None:
        return hit
    firsts = first_tokens(tokenizer, iter_corpus(corpus_path or DEFAULT_CORPUS), max_tokens)
    Z = second_position_keys(model, layer_map, layer, firsts, second_id)
    default_cache.put(key, Z, _nbytes(Z))
    return Z
