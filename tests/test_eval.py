"""eval.py against references computed here: hand-made generation sets with a fake encoder, float64 math."""
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

import data
import eval as evaluation
import checkpoint
import encoder as sentence_encoder
from fakes import ByteTokenizer, tiny_model, topic_groups
import measures
import score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "examples", "muce_sample.jsonl")


# ----------------------------------------------------------------------------- fakes


class FakeEncoder:
    """Maps texts to given vectors; any other text gets a seeded random vector. Unit-norm rows."""

    name = "fake-encoder"

    def __init__(self, vectors=None, dim=8):
        self.vectors, self.dim = dict(vectors or {}), dim

    def vector(self, text):
        if text not in self.vectors:
            seed = sum(text.encode("utf-8")) * 7919 + len(text)
            self.vectors[text] = np.random.default_rng(seed).standard_normal(self.dim)
        v = np.asarray(self.vectors[text], dtype=np.float64)
        return v / np.linalg.norm(v)

    def embed(self, texts, batch_size=64):
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32)


def mean_token_logp(m, tok, prompt, response):
    """(1/|y|) sum_{t in y} log p(y_t | x, y_<t), from model.forward logits of the whole sequence, in float64."""
    ids, start = tok.chat(prompt, response)
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([ids]))[0].double(), dim=-1)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))) / (len(ids) - start)


def cos(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return u @ v / (np.linalg.norm(u) * np.linalg.norm(v))


def score_set(generations, tmp_path, encoder, reference=None, threshold=0.9, m=None, dims=None):
    """The paper's four dimensions by default: the shipped originality scorer needs the real 384-d encoder."""
    return evaluation.score_generations(generations, scorer=m or tiny_model(), tokenizer=ByteTokenizer(), encoder=encoder,
                                        reference=reference, threshold=threshold, cache_dir=str(tmp_path / "cache"),
                                        show_progress=False, dims=dims or score.paper_dims())


# ----------------------------------------------------------------------------- metrics on hand-made sets


def test_identical_generations_give_diversity_zero_and_distinct_one_over_k(tmp_path):
    k = 5
    [row] = score_set({"p": ["a doorstop"] * k}, tmp_path, FakeEncoder())
    assert abs(row["diversity"]) < 1e-9
    assert row["distinct"] == pytest.approx(1 / k) and row["classes"] == 1
    assert row["distinct_1"] == pytest.approx(2 / (2 * k)) and row["distinct_2"] == pytest.approx(1 / k)
    assert row["length"] == 2.0
    assert row["per_generation"]["class"] == [0] * k
    # every generation is the same text: identical raw scores
    for d in score.paper_dims():
        v = row["per_generation"][d]
        assert max(v) - min(v) < 1e-12


def test_orthogonal_generations_are_all_distinct_with_diversity_one(tmp_path):
    k = 4
    texts = [f"text{i}" for i in range(k)]
    enc = FakeEncoder({t: np.eye(k)[i] for i, t in enumerate(texts)}, dim=k)
    [row] = score_set({"p": texts}, tmp_path, enc)
    assert row["distinct"] == 1.0 and row["classes"] == k
    assert row["diversity"] == pytest.approx(1.0, abs=1e-7)  # every pair at distance 1 - 0 = 1


def test_equivalence_classes_are_greedy_against_the_first_representative():
    # a~b and b~c pass 0.9, a~c does not: greedy gives {a, b}, {c}; connected components would give one class
    a = np.array([1.0, 0.0])
    b = np.array([math.cos(0.4), math.sin(0.4)])   # cos(a, b) = 0.921
    c = np.array([math.cos(0.8), math.sin(0.8)])   # cos(b, c) = 0.921, cos(a, c) = 0.697
    assert evaluation.equivalence_classes(np.stack([a, b, c]), 0.9) == [0, 0, 1]
    assert evaluation.equivalence_classes(np.stack([a, b, c]), 0.95) == [0, 1, 2]
    assert evaluation.equivalence_classes(np.stack([a, b, c]), 0.6) == [0, 0, 0]
    # a later member compares with the representative, not with the latest member
    assert evaluation.equivalence_classes(np.stack([c, a, b, a]), 0.9) == [0, 1, 0, 1]
    assert evaluation.equivalence_classes(np.stack([a * 3, a, -a]), 1.0) == [0, 0, 1]  # scale does not matter


def test_distinct_n_and_length_by_hand():
    texts = ["A b, a b!", "a b c", "It's"]
    # the project's one word splitter (measures.word_tokens): apostrophes dropped inside words, as DSI does
    assert measures.word_tokens(texts[0]) == ["a", "b", "a", "b"]
    assert measures.word_tokens(texts[2]) == ["its"]
    # unigrams: a b a b | a b c | its -> 8 total, {a, b, c, its} unique
    assert evaluation.distinct_n(texts, 1) == pytest.approx(4 / 8)
    # bigrams inside texts: (a b)(b a)(a b) | (a b)(b c) -> 5 total, 3 unique
    assert evaluation.distinct_n(texts, 2) == pytest.approx(3 / 5)
    assert evaluation.distinct_n(["one"], 2) == 0.0


def dsi_by_hand(words, enc):
    if len(words) < 2:
        return 0.0
    return float(np.mean([1 - cos(enc.vector(u), enc.vector(v)) for u, v in itertools.combinations(words, 2)]))


def test_novelty_and_diversity_equal_the_score_py_definitions(tmp_path):
    enc = FakeEncoder(dim=6)
    gens = {"p": ["red brick wall", "a tiny red boat", "boat", "wall of sound waves"],
            "q": ["sing loudly", "sing loudly", "dance"]}
    human = {"p": ["build a wall", "a doorstop", "paint it red"], "q": ["hum", "whistle a tune"]}
    for reference in (human, None):
        rows = score_set(gens, tmp_path, enc, reference=reference)
        for row, (p, texts) in zip(rows, gens.items()):
            E = np.stack([enc.vector(t) for t in texts])
            n = len(texts)
            div = [np.mean([1 - cos(E[i], E[j]) for j in range(n) if j != i]) for i in range(n)]
            assert row["diversity"] == pytest.approx(np.mean(div), abs=1e-6)
            assert row["diversity"] == pytest.approx(score.diversity(E).mean(), abs=1e-6)
            context = (reference or gens)[p]
            c_words = list(dict.fromkeys(w for t in context for w in t.split()))
            nov = [2 * abs(dsi_by_hand(t.split(), enc) - dsi_by_hand(c_words, enc)) for t in texts]
            np.testing.assert_allclose(row["per_generation"]["novelty"], nov, atol=1e-6)
            assert row["novelty"] == pytest.approx(np.mean(nov), abs=1e-6)
            # score.py's own functions on the same vectors
            vec = {w: enc.vector(w) for t in texts + list(context) for w in score.words(t)}
            want = score.dsi_novelty([score.words(t) for t in texts], c_words, vec)
            np.testing.assert_allclose(row["per_generation"]["novelty"], want, atol=1e-6)


def test_surprise_and_quality_are_raw_scorer_values(tmp_path):
    m, tok = tiny_model(), ByteTokenizer()
    texts = ["a rope", "a very long and winding answer", "zz"]
    [row] = score_set({"Uses for a rope?": texts}, tmp_path, FakeEncoder(), m=m)
    ppl = [math.exp(-mean_token_logp(m, tok, "Uses for a rope?", t)) for t in texts]
    np.testing.assert_allclose(row["per_generation"]["surprise"], ppl, rtol=1e-4)
    assert row["surprise"] == pytest.approx(np.mean(ppl), rel=1e-4)  # raw perplexity: not min-max normalised
    yes, no = tok.encode("Yes")[0], tok.encode("No")[0]
    q = []
    for t in texts:
        ids, _ = tok.chat(score.judge_prompt("Uses for a rope?", t))
        with torch.no_grad():
            z = m(torch.tensor([ids]))[0, -1].double()
        q.append(1 / (1 + math.exp(z[no].item() - z[yes].item())))
    np.testing.assert_allclose(row["per_generation"]["quality"], q, rtol=1e-4)
    assert 0 < min(q) and max(q) < 1 and sorted(q) != [0.0, 0.5, 1.0]


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_interval_on_known_data():
    rng = np.random.default_rng(1)
    v = rng.standard_normal(400) * 2.0 + 3.0
    mean, lo, hi = evaluation.bootstrap_interval(v, n_boot=2000, seed=7)
    assert mean == pytest.approx(v.mean())
    assert lo < mean < hi
    half = 1.96 * v.std(ddof=1) / math.sqrt(len(v))  # the normal approximation: about 0.196
    assert lo == pytest.approx(mean - half, abs=0.03) and hi == pytest.approx(mean + half, abs=0.03)
    assert evaluation.bootstrap_interval(v, n_boot=2000, seed=7) == (mean, lo, hi)  # deterministic
    assert evaluation.bootstrap_interval(v, n_boot=2000, seed=8) != (mean, lo, hi)
    assert evaluation.bootstrap_interval([2.0] * 5) == (2.0, 2.0, 2.0)
    assert evaluation.bootstrap_interval([0.3]) == (0.3, 0.3, 0.3)
    # weighted: prompts with 1 and 3 pairs, accuracies 0 and 1 -> 3/4
    mean, lo, hi = evaluation.bootstrap_interval([0.0, 1.0], [1, 3], n_boot=500)
    assert mean == 0.75 and lo == 0.0 and hi == 1.0


# ----------------------------------------------------------------------------- preference accuracy


def test_preference_accuracy_on_a_hand_case(tmp_path):
    m, tok = tiny_model(seed=3), ByteTokenizer()
    rows = [{"kind": "rating", "prompt": "Uses for a cup?", "response": r, "score": s, "line": i + 1}
            for i, (r, s) in enumerate([("hold pens", 4.0), ("drink", 1.0), ("a tiny hat for a cat", 3.0),
                                        ("water", 2.5)])]
    rows.append({"kind": "rating", "prompt": "Other?", "response": "x", "score": 1.0, "line": 5})
    pairs = evaluation.preference_pairs(rows, ["Uses for a cup?"], min_margin=1.0, max_pairs=100)
    # margins >= 1: (4,1) (4,2.5) (3,1) (4,3)=1 (2.5,1); not (3,2.5)
    want_pairs = {("hold pens", "drink"), ("hold pens", "water"), ("hold pens", "a tiny hat for a cat"),
                  ("a tiny hat for a cat", "drink"), ("water", "drink")}
    assert {(p["chosen"], p["rejected"]) for p in pairs} == want_pairs
    got = evaluation.preference_accuracy(m, tok, pairs, cache_dir=str(tmp_path), show_progress=False)
    ell = {r["response"]: mean_token_logp(m, tok, "Uses for a cup?", r["response"]) for r in rows[:4]}
    correct = sum(ell[w] > ell[r] for w, r in want_pairs)
    assert got == {"Uses for a cup?": (float(correct), 5)}
    assert 0 < correct < 5  # the hand case has right and wrong pairs, so a sign error would show
    assert len(evaluation.preference_pairs(rows, ["Uses for a cup?"], min_margin=1.0, max_pairs=2)) == 2
    assert evaluation.preference_pairs(rows, ["Other?"], min_margin=1.0) == []  # one response: no pair


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def fake_models(monkeypatch):
    """model.load returns tiny model A for the default, B for any path; counts loads and scorer identity."""
    loads, scorer_models = [], []
    models = {None: tiny_model(0)}

    def load(path=None, **kw):
        loads.append(path)
        return models.setdefault(path, tiny_model(1 + len(models))), ByteTokenizer()

    real_score_groups = score.score_groups

    def score_groups(groups, dims=None, **kw):
        if "quality" in dims:
            scorer_models.append(kw["model"])
        return real_score_groups(groups, dims, **kw)

    monkeypatch.setattr(checkpoint, "load", load)
    monkeypatch.setattr(sentence_encoder, "load_encoder", lambda path=None, **kw: FakeEncoder(dim=8))
    monkeypatch.setattr(score, "score_groups", score_groups)
    return loads, scorer_models, models


def run_cli(tmp_path, *extra, name="out"):
    out = tmp_path / f"{name}.json"
    rc = evaluation.main(["--data", SAMPLE, "--max-prompts", "3", "--k", "3", "--max-new-tokens", "6",
                          "--cache-dir", str(tmp_path / "cache"), "--out", str(out),
                          "--dims", "novelty,diversity,surprise,quality", *extra])
    return rc, (json.loads(out.read_text(encoding="utf-8")) if rc == 0 else None)


def test_two_models_share_prompts_and_scorer_same_seed_same_output(tmp_path, fake_models, capsys):
    loads, scorer_models, models = fake_models
    other = tmp_path / "other_model"
    other.mkdir()
    rc, out = run_cli(tmp_path, "--models", "a=default", f"b={other}", "--seed", "5",
                      "--report", str(tmp_path / "r.md"))
    assert rc == 0
    assert loads == [None, str(other)]  # the scorer (= model a, loaded once) and model b
    assert len(scorer_models) == 2 and all(s is models[None] for s in scorer_models)
    rows, _ = data.read_rows(SAMPLE)
    first3 = list(dict.fromkeys(r["prompt"] for r in rows))[:3]
    assert list(out["models"]["a"]["generations"]) == list(out["models"]["b"]["generations"]) == first3
    assert out["models"]["a"]["generations"] != out["models"]["b"]["generations"]  # two different models
    for name in ("a", "b"):
        r = out["models"][name]
        assert all(len(v) == 3 for v in r["generations"].values())
        for metric in evaluation.metrics(r["per_prompt"]):
            assert r[metric]["lo"] <= r[metric]["mean"] <= r[metric]["hi"]
        assert [p["prompt"] for p in r["per_prompt"]] == first3
        assert r["novelty"]["mean"] == pytest.approx(np.mean([p["novelty"] for p in r["per_prompt"]]))
        assert r["pref_accuracy"]["pairs"] == out["config"]["n_pref_pairs"] > 0
    assert out["config"]["seed"] == 5 and out["config"]["novelty_reference"].startswith("the human")
    printed = capsys.readouterr().out
    assert "novelty" in printed and "\na " in printed and "\nb " in printed
    assert "| model | novelty" in (tmp_path / "r.md").read_text()
    # same seed: the same generations and numbers; another seed: other generations
    rc, again = run_cli(tmp_path, "--models", "a=default", f"b={other}", "--seed", "5", name="again")
    assert rc == 0
    for name in ("a", "b"):
        for key in ("generations", "per_prompt", "novelty", "surprise", "distinct", "pref_accuracy"):
            assert again["models"][name][key] == out["models"][name][key]
    rc, other_seed = run_cli(tmp_path, "--models", "a=default", "--seed", "6", name="seed6")
    assert other_seed["models"]["a"]["generations"] != out["models"]["a"]["generations"]


@pytest.mark.parametrize("spec, message", [
    ("nameless", "expected NAME=PATH"),
    ("=default", "expected NAME=PATH"),
    ("x=/no/such/model", "/no/such/model: no such file or folder"),
])
def test_bad_models_spec_is_a_clear_error(tmp_path, fake_models, capsys, spec, message):
    rc, _ = run_cli(tmp_path, "--models", spec)
    err = capsys.readouterr().err
    assert rc == 1 and message in err and "Traceback" not in err
    assert fake_models[0] == []  # nothing loaded before the spec was checked


def test_duplicate_name_and_bad_data_are_clear_errors(tmp_path, fake_models, capsys):
    rc, _ = run_cli(tmp_path, "--models", "a=default", "a=default")
    assert rc == 1 and "given twice" in capsys.readouterr().err
    rc = evaluation.main(["--models", "a=default", "--data", str(tmp_path / "missing.jsonl")])
    err = capsys.readouterr().err
    assert rc == 1 and "missing.jsonl: no such file" in err and "Traceback" not in err


def test_preference_rows_novelty_among_generations(tmp_path, fake_models):
    src = tmp_path / "pref.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "p1", "chosen": "a cat", "rejected": "dog"}, {"prompt": "p2", "chosen": "x", "rejected": "y"},
        {"prompt": "p1", "chosen": "emu", "rejected": "dog"}]) + "\n")
    out = tmp_path / "o.json"
    assert evaluation.main(["--models", "a=default", "--data", str(src), "--k", "2", "--max-new-tokens", "4",
                            "--cache-dir", str(tmp_path / "c"), "--out", str(out),
                            "--dims", "novelty,diversity,surprise,quality"]) == 0
    got = json.loads(out.read_text())
    assert list(got["models"]["a"]["generations"]) == ["p1", "p2"]
    assert got["config"]["novelty_reference"].startswith("the generations")
    assert got["models"]["a"]["pref_accuracy"]["pairs"] == 3  # preference rows are human pairs too


def test_distinct_at_extra_thresholds_by_hand(tmp_path):
    """distinct@t: classes at each extra threshold, on vectors whose cosines are known."""
    a, b, c = [1.0, 0.0], [math.cos(0.4), math.sin(0.4)], [math.cos(0.8), math.sin(0.8)]  # cos 0.921, 0.921, 0.697
    enc = FakeEncoder({"a": a, "b": b, "c": c}, dim=2)
    rows = evaluation.score_generations({"p": ["a", "b", "c"]}, scorer=tiny_model(), tokenizer=ByteTokenizer(),
                                        encoder=enc, threshold=0.5, extra_thresholds=(0.9, 0.95),
                                        cache_dir=str(tmp_path / "cache"), show_progress=False,
                                        dims=score.paper_dims())
    assert rows[0]["distinct"] == pytest.approx(1 / 3)  # all within cos 0.5 of "a"
    assert rows[0]["distinct@0.9"] == pytest.approx(2 / 3) and rows[0]["distinct@0.95"] == pytest.approx(1.0)
    assert evaluation.metrics(rows)[:8] == [*score.paper_dims(), "on_topic", "distinct", "distinct@0.9", "distinct@0.95"]


def test_conversation_prompts_reach_generation_with_every_turn(default):
    """eval.py reads prompts through data.read_rows: a message-list prompt stays a conversation (system message and
    earlier turns included) and the model's chat format renders all of it for generation."""
    rows, _ = data.read_rows(os.path.join(os.path.dirname(__file__), "data", "field_cases",
                                          "multiturn_system_prompt_dropped.jsonl"))
    prompts, reference = evaluation.read_prompts(rows)
    assert reference is None and [p.messages[0] for p in prompts] == [
        ("system", "Always answer in exactly three words."), ("system", "Reply like a pirate.")]
    _, tok = default
    text = tok.tok.decode(tok.chat(prompts[0])[0], skip_special_tokens=False)
    assert text == ("<|im_start|>system\nAlways answer in exactly three words.<|im_end|>\n<|im_start|>user\nName a use "
                    "for a brick.<|im_end|>\n<|im_start|>assistant\nBuild a wall.<|im_end|>\n<|im_start|>user\nNow a "
                    "more unusual one, please.<|im_end|>\n<|im_start|>assistant\n")


class WordsEncoder:
    """e(t) = unit sum of fixed random word vectors: answers sharing a prompt's topic words lie close."""
    name = "words"

    def embed(self, texts, batch_size=64):
        out = np.zeros((len(texts), 24))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += np.random.default_rng(sum(map(ord, w)) * 7919 + len(w)).standard_normal(24)
            out[i] /= max(np.linalg.norm(out[i]), 1e-12)
        return torch.tensor(out, dtype=torch.float32)


def test_on_topic_share_is_the_share_of_generations_the_relevance_scorer_accepts(tmp_path):
    """on_topic = mean [relevance >= 0.5] against the human answers; a model that answers something else
    shows a low share, and the gate drops its rarity scores to the group's minimum."""
    import relevance
    enc = WordsEncoder()
    embed = lambda ts: enc.embed(ts).numpy()  # noqa: E731
    rng = np.random.default_rng(0)
    groups = topic_groups(rng)
    folder = tmp_path / "relevance"
    relevance.save(relevance.fit(groups, list(groups), embed), {}, str(folder))
    humans = {"Use for thing 9: t9w0.": list(dict.fromkeys(" ".join(rng.choice([f"t9w{j}" for j in range(5)], 3))
                                                       for _ in range(30)))}
    generations = {"Use for thing 9: t9w0.": ["t9w0 t9w1 t9w4", "t9w2 t9w3 t9w0", "t2w1 t2w2 t2w3", "zz1 zz2 zz3"]}
    kw = dict(scorer=tiny_model(), tokenizer=ByteTokenizer(), encoder=enc, reference=humans, dims=["diversity"],
              cache_dir=str(tmp_path / "cache"), show_progress=False, options={"relevance": f"model {folder}"})
    [row] = evaluation.score_generations(generations, **kw)
    rel = np.array(row["per_generation"]["relevance"])
    assert row["on_topic"] == pytest.approx(np.mean(rel >= relevance.THRESHOLD)) == pytest.approx(0.5)
    assert (rel[:2] >= 0.5).all() and (rel[2:] < 0.5).all()
    [gated] = evaluation.score_generations(generations, gate=0.5, **kw)
    div = np.array(gated["per_generation"]["diversity"])
    assert (div[2:] == div.min()).all() and gated["diversity"] < row["diversity"]
    summary = evaluation.summarize([row], n_boot=0)
    assert summary["on_topic"]["mean"] == 0.5 and "on_topic" in evaluation.table({"m": summary})
