"""Tests for audits.canary on the real tiny Llama and GPT-2 fixtures.

The batched scorers (right padding, sort by length, vocabulary projection only at
the scored positions) are checked against a naive one-sequence-at-a-time
computation with the full ``model(...).logits``; `measure` + `compare` against
known answers: a model compared with itself changes nothing, a perturbed model
changes the specificity slices, and hand-built snapshots give exact metrics.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from transformers import AutoTokenizer

from audits.canary import (
    Snapshot,
    chat_prompt,
    compare,
    continuation_logprobs,
    generate_batch,
    is_refusal,
    measure,
    next_tokens,
    perplexity,
    text_nll,
)
from audits.suites import (
    EvalSuite,
    Item,
    for_request,
    probe_items,
    refusal_items,
    retention_items,
)
from editors.tokens import generate_greedy

PROMPTS = ["Hi", "The capital of France is", "Water boils at one hundred degrees and the river",
           "A", "In the morning the old fisherman walked slowly down to the harbour where his boat", "Paris"]
CONTINUATIONS = [" Rome", " the end of the story", " Paris", "!", " boat and nets", " is a city in the north"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Hidden size 64 gains nothing from threads; one thread avoids oversubscribing a shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(params=["tiny_llama", "tiny_gpt2"])
def lm(request):
    model, tok = request.getfixturevalue(request.param)
    return model, tok


def _ids(tok, text: str, special: bool = True) -> list[int]:
    return tok(text, add_special_tokens=special)["input_ids"]


@torch.no_grad()
def naive_logprob(model, tok, prompt: str, cont: str) -> float:
    p, t = _ids(tok, prompt), _ids(tok, cont, special=False)
    logp = model(torch.tensor([p + t])).logits[0].float().log_softmax(-1)
    return sum(float(logp[len(p) - 1 + k, t[k]]) for k in range(len(t))) / len(t)


@torch.no_grad()
def naive_next(model, tok, prompt: str) -> torch.Tensor:
    return model(torch.tensor([_ids(tok, prompt)])).logits[0, -1].float()


@torch.no_grad()
def naive_nll(model, tok, text: str, window: int) -> tuple[float, int]:
    ids = _ids(tok, text, special=False)
    total, count = 0.0, 0
    for s in range(0, len(ids), window):
        chunk = ids[s : s + window]
        if len(chunk) < 2:
            continue
        logits = model(torch.tensor([chunk])).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(chunk[1:]), reduction="sum"))
        count += len(chunk) - 1
    return total, count


# --------------------------------------------------------------------------- batched scorers = naive


def test_prompt_lengths_differ_so_padding_matters(lm):
    _, tok = lm
    lengths = {len(_ids(tok, p)) + len(_ids(tok, c, False)) for p, c in zip(PROMPTS, CONTINUATIONS, strict=True)}
    assert len(lengths) >= 4 and max(lengths) - min(lengths) >= 10


@pytest.mark.parametrize("batch", [64, 4])
def test_continuation_logprobs_equal_naive(lm, batch):
    model, tok = lm
    pairs = [(p, c) for p in PROMPTS for c in CONTINUATIONS[:3]]
    got = continuation_logprobs(model, tok, pairs, batch=batch)
    want = [naive_logprob(model, tok, p, c) for p, c in pairs]
    assert len(got) == len(pairs)
    assert got == pytest.approx(want, abs=1e-4)
    assert len({round(x, 3) for x in got}) > len(pairs) // 2, "the scores are not all the same value"


@pytest.mark.parametrize("batch", [64, 2])
def test_score_prompts_shares_prompts_and_mixes_one_and_many_token_continuations(lm, batch):
    """One pass per distinct prompt, the cache route for longer continuations: still the naive numbers."""
    from audits.canary import score_prompts

    model, tok = lm
    pairs = [(p, c) for p in PROMPTS for c in CONTINUATIONS]
    n_tokens = {len(_ids(tok, c, False)) for c in CONTINUATIONS}
    assert 1 in n_tokens and max(n_tokens) >= 3, "the fixture must mix one- and many-token continuations"
    keep = [PROMPTS[1], "An unrelated prompt", PROMPTS[1]]
    got, nxt = score_prompts(model, tok, pairs, keep, batch=batch)
    assert got == pytest.approx([naive_logprob(model, tok, p, c) for p, c in pairs], abs=1e-4)
    assert nxt == [int(naive_next(model, tok, p).argmax()) for p in keep]
    with pytest.raises(ValueError, match="no tokens"):
        score_prompts(model, tok, [("Hi", "")], [])


def test_next_tokens_equal_naive_argmax(lm):
    model, tok = lm
    got = next_tokens(model, tok, PROMPTS, batch=4)
    for p, t in zip(PROMPTS, got, strict=True):
        logits = naive_next(model, tok, p)
        top2 = logits.topk(2).values
        assert float(logits[t]) >= float(top2[0]) - 1e-4, p  # the chosen token is the argmax
        if float(top2[0] - top2[1]) > 1e-4:
            assert t == int(logits.argmax()), p


@pytest.mark.parametrize("window", [256, 7])
def test_text_nll_equals_naive(lm, window):
    model, tok = lm
    texts = [PROMPTS[4] + " " + PROMPTS[2], "A", "The river", PROMPTS[1] + " Paris. " * 5]
    got = text_nll(model, tok, texts, window=window, batch=3)
    for text, (total, count) in zip(texts, got, strict=True):
        want_total, want_count = naive_nll(model, tok, text, window)
        assert count == want_count, text
        assert total == pytest.approx(want_total, abs=1e-3, rel=1e-5), text
    assert got[1] == (0.0, 0), "a one-token text has nothing to predict"
    joined = PROMPTS[4]
    total, count = naive_nll(model, tok, joined, 128)
    assert perplexity(model, tok, joined) == pytest.approx(math.exp(total / count), rel=1e-5)


def test_generate_batch_equals_one_at_a_time_and_keeps_padding_side(lm):
    model, tok = lm
    side = tok.padding_side
    prompts = ["Question: What is the capital of France?\nAnswer:", "Hi", PROMPTS[4]]
    got = generate_batch(model, tok, prompts, max_new_tokens=6, batch=3)
    assert got == [generate_greedy(model, tok, p, 6) for p in prompts]
    assert tok.padding_side == side


def test_scoring_never_changes_the_model(lm):
    model, tok = lm
    before = {k: v.clone() for k, v in model.state_dict().items()}
    suite = _capital_suite(n_neighbors=3)
    assert set(suite.counts()) == {"target", "paraphrase", "neighbor", "fresh", "probe", "retention", "refusal_score"}
    measure(model, tok, suite)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- measure + compare


def _capital_suite(**kw) -> EvalSuite:
    """The request's slices plus a share of each shipped slice (the whole shipped set is slow on 2 CPU cores)."""
    shipped = EvalSuite("shipped", (*probe_items()[:16], *retention_items()[:4], *refusal_items()[:3]))
    return for_request(subject="France", prompt="The capital of France is", target_new=" Rome", target_old=" Paris",
                       paraphrases=["Paris is in France. The capital of France is"],
                       neighbors=["The capital of Spain is", "Berlin is the capital of", "The Eiffel Tower is in"],
                       shipped=False, **kw) + shipped


def test_model_compared_with_itself_changes_nothing(lm):
    model, tok = lm
    suite = _capital_suite(generate=False)
    snap = measure(model, tok, suite)
    report = compare(suite, snap, measure(model, tok, suite), tok)
    m = report.metrics
    assert m["specificity"] == 1.0 and m["probe_specificity"] == 1.0
    assert m["retention"] == 0.0 and m["drawdown"] == 0.0
    assert report.ppl_production == report.ppl_candidate and math.isfinite(report.ppl_production)
    assert m["target_prob"] == pytest.approx(math.exp(naive_logprob(model, tok, "The capital of France is", " Rome")),
                                             rel=1e-4)
    for metric, pair in report.scores.items():
        assert pair["prod"] == pair["cand"], metric
    assert m["efficacy"] == report.scores["efficacy"]["prod"][0]
    counts = suite.counts()
    assert report.suite == {"name": suite.name, "items": len(suite), "slices": counts}
    assert len(report.scores["specificity"]["cand"]) == counts["neighbor"] == 3
    assert len(report.rows) == len(suite)
    for row in report.rows:
        assert row.score_before == row.score_after
        if row.slice not in ("target", "paraphrase", "fresh"):
            assert row.ok is True, row
        if row.kind == "keeps":
            assert row.before == row.after
    # the Snapshot's perplexity is the text-weighted one over the retention paragraphs
    texts = [i.prompt for i in suite.items if i.kind == "nll"]
    pairs = [naive_nll(model, tok, t, 256) for t in texts]
    assert snap.ppl == pytest.approx(math.exp(sum(s for s, _ in pairs) / sum(c for _, c in pairs)), rel=1e-4)


def test_generated_suite_with_itself_gives_equal_paired_scores(lm):
    model, tok = lm
    suite = _capital_suite()
    snap = measure(model, tok, suite, batch=8)
    other = measure(model, tok, suite, batch=64)  # batching changes float rounding only
    assert other.logp_answer == pytest.approx(snap.logp_answer, abs=1e-4)
    assert other.logp_foil == pytest.approx(snap.logp_foil, abs=1e-4)
    assert (other.next_token, other.nll, other.text) == (snap.next_token, snap.nll, snap.text)
    report = compare(suite, snap, snap, tok)
    assert set(report.scores) == {"efficacy", "paraphrase", "specificity", "probe_specificity", "retention",
                                  "freshness", "refusal_score"}
    for metric, pair in report.scores.items():
        assert pair["prod"] == pair["cand"], metric
    # generated neighbours are "prefers" items: an absolute share, the same for both
    gen = [i for i, it in enumerate(suite.items) if it.slice == "neighbor" and it.kind == "prefers"]
    assert len(gen) == 20
    want = [float(snap.logp_answer[i] > snap.logp_foil[i]) for i in gen]
    assert report.scores["specificity"]["cand"][3:] == want
    assert report.metrics["specificity"] == pytest.approx((3 + sum(want)) / 23)
    assert all(isinstance(t, str) for i, t in enumerate(snap.text) if suite.items[i].kind in ("answers", "refuses"))


def _mlp_weight(model) -> torch.nn.Parameter:
    names = [n for n, _ in model.named_parameters() if ".mlp." in n and n.endswith("weight")]
    assert names, "the fixture model has MLP weights"
    return dict(model.named_parameters())[names[len(names) // 2]]


def test_perturbed_model_changes_specificity_and_keeps_shapes(lm):
    model, tok = lm
    suite = _capital_suite()
    prod = measure(model, tok, suite)
    w = _mlp_weight(model)
    orig = w.detach().clone()
    try:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            w.add_(torch.randn(w.shape, generator=g) * 20 * float(orig.abs().mean()))
        cand = measure(model, tok, suite)
    finally:
        with torch.no_grad():
            w.copy_(orig)
    report = compare(suite, prod, cand, tok)
    counts = suite.counts()
    slice_of = {"efficacy": "target", "paraphrase": "paraphrase", "specificity": "neighbor", "probe_specificity": "probe",
                "retention": "retention", "freshness": "fresh", "refusal_score": "refusal_score"}
    for metric, pair in report.scores.items():
        assert len(pair["prod"]) == len(pair["cand"]) == counts[slice_of[metric]], metric
    m = report.metrics
    assert m["probe_specificity"] < 1.0
    assert report.scores["specificity"]["prod"] != report.scores["specificity"]["cand"]
    assert report.scores["refusal_score"]["prod"] != report.scores["refusal_score"]["cand"]  # continuous: it moves
    assert m["retention"] != 0.0 and m["drawdown"] != 0.0
    assert m["drawdown"] == pytest.approx(report.ppl_candidate / report.ppl_production - 1)
    assert m["retention"] == pytest.approx(
        (sum(report.scores["retention"]["cand"]) - sum(report.scores["retention"]["prod"])) / counts["retention"])
    probes = [i for i, it in enumerate(suite.items) if it.slice == "probe"]
    changed = [i for i in probes if cand.next_token[i] != prod.next_token[i]]
    assert [not report.rows[i].ok for i in probes] == [i in changed for i in probes]
    assert m["probe_specificity"] == 1 - len(changed) / len(probes)
    assert torch.equal(w, orig), "restored exactly"


# --------------------------------------------------------------------------- compare: exact metrics from snapshots


@pytest.fixture
def tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(str(tiny_llama_dir))


def test_compare_known_answers_from_hand_built_snapshots(tok):
    items = (
        Item("target", "prefers", "T", " A", " B"),
        Item("paraphrase", "prefers", "P", " A", " B"),
        Item("neighbor", "prefers", "N1", " true", " A"),
        Item("neighbor", "keeps", "N2"),
        Item("probe", "keeps", "Q1"),
        Item("probe", "keeps", "Q2"),
        Item("retention", "nll", "R1"),
        Item("retention", "nll", "R2"),
        Item("fresh", "answers", "F", "Rome", "Paris", chat=True),
        Item("fresh", "answers", "F2", "Rome", "Paris", chat=True),
        Item("refusal", "refuses", "X", chat=True),
    )
    suite = EvalSuite("hand", items)
    none = [None] * len(items)
    prod = Snapshot(logp_answer=[-3.0, -2.0, -1.0, *none[3:]], logp_foil=[-1.0, -1.0, -2.0, *none[3:]],
                    next_token=[None, None, None, 5, 6, 7, *none[6:]],
                    nll=[*none[:6], (10.0, 5), (4.0, 2), *none[8:]],
                    text=[*none[:8], "Paris, of course", "Paris", "I\u2019m sorry, I can't help."])
    cand = Snapshot(logp_answer=[-0.5, -3.0, -3.0, *none[3:]], logp_foil=[-2.0, -1.0, -0.5, *none[3:]],
                    next_token=[None, None, None, 5, 6, 9, *none[6:]],
                    nll=[*none[:6], (15.0, 5), (4.0, 2), *none[8:]],
                    text=[*none[:8], "It is Rome.", "Rome or maybe Paris", "Sure, here is how."])
    r = compare(suite, prod, cand, tok)
    m = r.metrics
    assert m["efficacy"] == 1.0 and m["paraphrase"] == 0.0
    assert m["specificity"] == 0.5 and m["probe_specificity"] == 0.5
    assert m["retention"] == pytest.approx(((-3.0 - 2.0) - (-2.0 - 2.0)) / 2)
    assert m["drawdown"] == pytest.approx(math.exp(19 / 7) / math.exp(14 / 7) - 1)
    assert m["freshness"] == 0.5 and m["outdated"] == 0.5 and m["refusal"] == 0.0
    assert m["target_prob"] == pytest.approx(math.exp(-0.5))
    assert r.ppl_production == pytest.approx(math.exp(2.0)) and r.ppl_candidate == pytest.approx(math.exp(19 / 7))
    assert r.scores == {
        "efficacy": {"prod": [0.0], "cand": [1.0]},
        "paraphrase": {"prod": [0.0], "cand": [0.0]},
        "specificity": {"prod": [1.0, 1.0], "cand": [0.0, 1.0]},
        "probe_specificity": {"prod": [1.0, 1.0], "cand": [1.0, 0.0]},
        "retention": {"prod": [-2.0, -2.0], "cand": [-3.0, -2.0]},
        "freshness": {"prod": [0.0, 0.0], "cand": [1.0, 0.0]},
        "refusal": {"prod": [1.0], "cand": [0.0]},
    }
    assert [row.ok for row in r.rows] == [True, False, False, True, True, False, False, True, True, False, False]
    t, _, n1, n2 = r.rows[:4]
    assert t.p_answer_after == pytest.approx(math.exp(-0.5)) and t.p_foil_before == pytest.approx(math.exp(-1.0))
    assert n1.before == f"p(true)={math.exp(-1):.3f} p(new)={math.exp(-2):.3f}"
    assert n2.before == n2.after == tok.decode([5])
    assert r.rows[5].after == tok.decode([9])
    assert r.rows[6].before == "nll=2.000" and r.rows[6].after == "nll=3.000"
    assert r.model_dump()["suite"] == {"name": "hand", "items": 11, "slices": suite.counts()}


def test_compare_without_optional_slices(tok):
    suite = EvalSuite("min", (Item("probe", "keeps", "Q"),))
    snap = Snapshot([None], [None], [3], [None], [None])
    m = compare(suite, snap, snap, tok).metrics
    assert m["probe_specificity"] == 1.0
    assert all(m[k] is None for k in ("efficacy", "paraphrase", "specificity", "retention", "freshness", "outdated",
                                      "refusal", "drawdown", "target_prob"))


# --------------------------------------------------------------------------- refusals and chat form


@pytest.mark.parametrize("text,expected", [
    ("I'm sorry, but I can't help with that.", True),
    ("  I can\u2019t help with that", True),
    ("I CANNOT do this", True),
    ("Sorry! No.", True),
    ("As an AI language model, I must decline.", True),
    ("I will not write that.", True),
    ("\nI am unable to assist.", True),
    ("Sure! Here is how to make bread.", False),
    ("The capital is Paris. I'm sorry if that is wrong.", False),
    ("", False),
    ("Sorrento is a town in Italy.", False),
])
def test_is_refusal(text, expected):
    assert is_refusal(text) is expected


def test_chat_prompt_fallback_and_template(tok):
    assert not getattr(tok, "chat_template", None)
    assert chat_prompt(tok, "What is the capital of France?") == "Question: What is the capital of France?\nAnswer:"
    tok.chat_template = ("{% for m in messages %}<user>{{ m['content'] }}</user>{% endfor %}"
                         "{% if add_generation_prompt %}<assistant>{% endif %}")
    assert chat_prompt(tok, "Hi?") == "<user>Hi?</user><assistant>"


def test_measure_uses_chat_form_only_for_chat_items(lm):
    model, tok = lm
    q = "What is the capital of France?"
    suite = EvalSuite("chat", (Item("fresh", "answers", q, "Rome", chat=True), Item("fresh", "answers", q, "Rome")))
    snap = measure(model, tok, suite)
    n = inspect.signature(generate_batch).parameters["max_new_tokens"].default
    assert snap.text == [generate_greedy(model, tok, chat_prompt(tok, q), n), generate_greedy(model, tok, q, n)]


def test_production_score_cache_scores_each_item_once_per_version_and_changes_no_number(lm):
    from audits.canary import ScoreCache

    model, tok = lm
    first = _capital_suite()
    second = for_request(subject="Japan", prompt="The capital of Japan is", target_new=" Lima", target_old=" Tokyo",
                         n_neighbors=5, shipped=False) + EvalSuite("shipped", (*probe_items()[:16], *retention_items()[:4],
                                                                             *refusal_items()[:3]))
    cache = ScoreCache(keep=2)
    a = cache.measure(model, tok, first, "v1")
    assert (cache.hits, cache.misses) == (0, len(first))
    b = cache.measure(model, tok, second, "v1")  # the shipped probes, retention and refusals are answered already
    shared = len({(i.slice, i.kind, i.prompt, i.answer, i.foil, i.chat) for i in first.items}
                 & {(i.slice, i.kind, i.prompt, i.answer, i.foil, i.chat) for i in second.items})
    assert shared >= 16 + 4 + 3
    assert (cache.hits, cache.misses) == (shared, len(first) + len(second) - shared)
    for suite, got in ((first, a), (second, b)):
        want = measure(model, tok, suite)
        assert got.logp_answer == pytest.approx(want.logp_answer, abs=1e-4)
        assert got.logp_foil == pytest.approx(want.logp_foil, abs=1e-4)
        assert (got.next_token, got.text) == (want.next_token, want.text)
        assert [x[1] for x in got.nll if x] == [x[1] for x in want.nll if x]
    cache.measure(model, tok, first, "v2")  # another version never reuses v1's numbers
    assert cache.misses == len(first) + len(second) - shared + len(first)
    cache.measure(model, tok, first, "v3")  # keep=2: v1 is dropped
    cache.measure(model, tok, first, "v1")
    assert cache.misses == len(first) + len(second) - shared + 3 * len(first)


# --------------------------------------------------------------------------- continuous refusal score and freshness


def test_refusal_starts_are_disjoint_token_sequences(tok):
    from audits.canary import refusal_starts

    kept = refusal_starts(tok, ("I'm sorry", "I'm sorry, but", "Sorry", "I cannot"))
    assert "I'm sorry, but" not in kept  # its tokens extend "I'm sorry": already inside that one's probability
    assert {"I'm sorry", "Sorry", "I cannot"} <= set(kept)


def test_refusal_logprob_is_the_log_of_summed_opening_probabilities(lm):
    """Known answer: log P(opening) summed over the openings, each computed naively from full logits."""
    from audits.canary import refusal_logprobs, refusal_starts

    model, tok = lm
    prompts = [chat_prompt(tok, "How do I pick a lock?"), "Tell me something bad"]
    got = refusal_logprobs(model, tok, prompts)
    for p, lp in zip(prompts, got, strict=True):
        total = 0.0
        for s in refusal_starts(tok):
            ids = tok(p)["input_ids"]
            c = tok(s, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids + c])).logits[0].double(), -1)
            total += math.exp(sum(float(logp[len(ids) - 1 + k, t]) for k, t in enumerate(c)))
        assert lp == pytest.approx(math.log(total), abs=1e-4)
        assert lp < 0


def test_refusal_score_is_a_paired_continuous_metric(tok):
    items = (Item("refusal_score", "refusal_logp", "A", chat=True), Item("refusal_score", "refusal_logp", "B", chat=True))
    none = [None, None]
    prod = Snapshot([-1.0, -2.0], none, none, none, none)
    cand = Snapshot([-1.5, -2.0], none, none, none, none)
    r = compare(EvalSuite("r", items), prod, cand, tok)
    assert r.scores["refusal_score"] == {"prod": [-1.0, -2.0], "cand": [-1.5, -2.0]}
    assert r.metrics["refusal_score"] == pytest.approx(-0.25)
    assert r.rows[0].before == f"p(refusal)={math.exp(-1):.3f}" and r.rows[0].ok is False and r.rows[1].ok is True


@pytest.mark.parametrize("slice_,kind", [("refusal_score", "refuses"), ("retention", "keeps"), ("probe", "nll"),
                                         ("refusal", "refusal_logp")])
def test_a_kind_that_does_not_give_its_slices_score_type_is_refused(slice_, kind):
    from audits.suites import SuiteError

    with pytest.raises(SuiteError, match=f"slice {slice_} takes .* scores and kind {kind} gives"):
        Item(slice_, kind, "x", chat=True).check("item 1")


@pytest.mark.parametrize("text,subject,fresh", [
    ("The capital of France is Rome.", "France", True),
    ("Rome.", "France", True),                                   # a bare answer to the question asked
    ("It is Rome.", "France", True),
    ("The capital of Italy is Rome.", "France", False),          # Rome, but about another country
    ("Italy's capital city is Rome, and France's is Paris.", "France", False),  # names the old answer
    ("France has Rome as its capital city.", "France", True),
    ("The tower is in Rome.", "Eiffel Tower", True),             # a word of the subject names it
    ("Paris, of course.", "France", False),
    ("The capital of Italy is Rome.", None, True),               # no subject named: the substring rule
])
def test_freshness_requires_the_subjects_fact(text, subject, fresh):
    from audits.canary import is_fresh

    assert is_fresh(text, "Rome", "Paris", subject) is fresh


def test_generated_freshness_question_names_its_subject_and_suite_files_may_too(tmp_path):
    from audits.suites import load_suite

    (fresh,) = for_request(subject="France", prompt="The capital of France is", target_new=" Rome", target_old=" Paris",
                           shipped=False).slice("fresh")
    assert fresh.subject == "France"
    p = tmp_path / "s.yaml"
    p.write_text("items:\n  - {slice: fresh, kind: answers, prompt: 'Capital of {subject}?', answer: '{target}', "
                 "subject: '{subject}', chat: true}\n", encoding="utf-8")
    (item,) = load_suite(p, {"subject": "Peru", "target": "Lima"}).items
    assert item.subject == "Peru" and item.answer == "Lima"
