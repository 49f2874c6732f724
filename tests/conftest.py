"""Shared fixtures: real tiny models built offline, real SQLite and MLflow stores under tmp_path.

* `tiny_llama_dir` / `tiny_gpt2_dir`: random-initialised (seeded) Llama and GPT-2
  models with a byte-level BPE tokenizer trained here on the shipped corpus.
  Real transformers models; they make plumbing tests fast.
* `gov`: a fresh `.govern` home with the tiny Llama registered as "tiny".
* `smollm2_gov` (slow tests): a home with the real SmolLM2 registered; the
  converted checkpoint and statistics live in a session-wide shared cache.
* `db_url` (parametrised ``sqlite`` / ``postgresql``): an empty database of each
  backend. PostgreSQL needs ``GOVERN_TEST_PG_URL`` (``export
  GOVERN_TEST_PG_URL=$(bash scripts/postgres.sh)``); without it those cases skip,
  except in CI (``CI=true`` or ``GOVERN_REQUIRE_POSTGRES=1``, as
  .ci/run sets), where they fail. Each test gets a new database.
  `backend_gov`: the `gov` home with its database on that backend.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_CACHE = Path(os.environ.get("GOVERN_TEST_CACHE", REPO / ".govern" / "cache"))


@pytest.fixture(autouse=True, scope="session")
def _shared_cache_env():
    os.environ["GOVERN_SHARED_CACHE"] = str(SHARED_CACHE)
    os.environ["MLFLOW_LOGGING_LEVEL"] = "WARNING"
    yield


def _tokenizer(directory: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from editors.stats import corpus_texts

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(corpus_texts(), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|endoftext|>")
    tok.save_pretrained(str(directory))
    return tok


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("tiny-llama")
    tok = _tokenizer(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return d


def build_gpt2(d: Path, *, n_positions: int = 512, n_layer: int = 4, seed: int = 0, n_embd: int = 64, n_head: int = 4,
               initializer_range: float = 0.02) -> Path:
    """A seeded, random GPT-2 with the test tokenizer, saved to `d` (a real transformers checkpoint)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer(d)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_positions=n_positions,
                     initializer_range=initializer_range, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                     bos_token_id=tok.bos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(str(d))
    return d


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return build_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


def load_dir(d: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(d)).eval()
    return model, AutoTokenizer.from_pretrained(str(d))


@pytest.fixture
def tiny_llama(tiny_llama_dir):
    return load_dir(tiny_llama_dir)


@pytest.fixture
def tiny_gpt2(tiny_gpt2_dir):
    return load_dir(tiny_gpt2_dir)


@pytest.fixture
def home(tmp_path):
    from govern.home import Home

    return Home(tmp_path / "home")


@pytest.fixture
def gov(home, tiny_llama_dir):
    from govern.service import Govern

    g = Govern(home)
    g.add_model("tiny", str(tiny_llama_dir), actor="admin", log=lambda _m: None)
    return g


def postgres_base_url() -> str:
    """The PostgreSQL server the tests may create databases on (skip, or fail in CI, without one)."""
    url = os.environ.get("GOVERN_TEST_PG_URL")
    if not url:
        if os.environ.get("CI", "").lower() == "true" or os.environ.get("GOVERN_REQUIRE_POSTGRES") == "1":
            pytest.fail("GOVERN_TEST_PG_URL is unset in CI: .ci/run starts PostgreSQL with scripts/postgres.sh")
        pytest.skip("GOVERN_TEST_PG_URL is unset; `export GOVERN_TEST_PG_URL=$(bash scripts/postgres.sh)` runs it")
    return url


def new_postgres_database(base: str):
    """Create a uniquely named database on the server of `base`; returns (its URL, a function that drops it)."""
    from sqlalchemy import create_engine, text

    name = f"govern_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.split("?", 1)[0].rsplit("/", 1)[0] + "/" + name, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        (tmp_path / "db").mkdir()
        yield f"sqlite:///{tmp_path / 'db' / 'govern.db'}"
        return
    url, drop = new_postgres_database(postgres_base_url())
    yield url
    drop()


@pytest.fixture
def backend_gov(db_url, home, tiny_llama_dir, monkeypatch):
    """The `gov` home (tiny Llama as "tiny") with its database on each backend (MLflow stays on SQLite)."""
    from govern.service import Govern

    monkeypatch.setenv("GOVERN_DB_URL", db_url)
    g = Govern(home)
    g.add_model("tiny", str(tiny_llama_dir), actor="admin", log=lambda _m: None)
    return g


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory):
    """A home with the real SmolLM2 registered (conversion once per shared cache)."""
    from govern.home import Home
    from govern.service import Govern

    os.environ["GOVERN_SHARED_CACHE"] = str(SHARED_CACHE)
    home = Home(tmp_path_factory.mktemp("smollm2") / "home")
    Govern(home).ensure_default_model(log=lambda _m: None)
    return home


@pytest.fixture(scope="session")
def smollm2_loaded(smollm2_home):
    from govern.service import Govern

    loaded = Govern(smollm2_home).materialise("smollm2")
    return loaded.model, loaded.tokenizer


TEST_POLICY = """
version: 1
name: test
admission:
  allowed_methods: {edit: [rome]}
  max_active_edits_per_model: 5
risk:
  default_tier: low
  tiers:
    low: {approvers: 0, auto_approve: true}
    two: {approvers: 2, auto_approve: false}
  rules:
    - {tier: two, pattern: "(?i)review me"}
canary:
  gates:  # the tiny models are untrained: these gates check the plumbing, not edit quality
    - {metric: drawdown, op: "<=", threshold: 1.0}
    - {metric: paraphrase, op: ">=", threshold: 0.0, when_missing: skip}
methods:
  rome: {stats_tokens: 2000, context_prefixes: 2, steps: 8}
"""


@pytest.fixture
def policy_file(tmp_path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(TEST_POLICY)
    return p
