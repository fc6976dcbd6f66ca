"""Tests for originality.py: rank statistics against scipy, the subset order-statistic weights against
brute-force enumeration, group features, the prompt-grouped split, and a fit that recovers a known
rating function on synthetic prompts it never saw (with a hashed bag-of-words encoder standing in)."""
import itertools
import math
import os

import numpy as np
import pytest
import scipy.stats

import originality as O
from conftest import ROOT
from fakes import hashed_embed

DIM = 64
SMALL = O.Config(mlp_members=1, answer_members=1, hidden=32, epochs=8, batch_size=64, dropout=0.1, weight_decay=1e-3, lr=3e-3)


def fake_embed(texts):
    return hashed_embed(texts, DIM).astype(np.float32)


CREATIVE = [f"zest{i}" for i in range(12)]
PLAIN = [f"plain{i}" for i in range(12)]


def synthetic_rows(n_prompts, per_prompt, seed):
    """Responses of 4 words; the rating is the number of 'creative' words (a known function of the text)
    plus small noise, so its order inside every prompt is recoverable from the words alone."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_prompts):
        prompt = f"Suggest a creative use for object{seed}_{p}."
        for _ in range(per_prompt):
            k = int(rng.integers(0, 5))
            words = list(rng.choice(CREATIVE, k)) + list(rng.choice(PLAIN, 4 - k))
            rng.shuffle(words)
            rows.append({"prompt": prompt, "response": " ".join(words), "score": k + 0.1 * rng.standard_normal(),
                         "task": ["Uses", "Instances"][p % 2]})
    return rows


# ---------------------------------------------------------------------------------------------- statistics

def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 50).astype(float)
    b = a + rng.integers(0, 3, 50)
    assert O.spearman(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
    assert np.allclose(O.average_ranks([3, 1, 3, 2]), [2.5, 0, 2.5, 1])


def test_partial_spearman_equals_residual_correlation():
    """Partial correlation = correlation of the residuals of rank(a), rank(b) regressed on rank(z)."""
    rng = np.random.default_rng(1)
    z = rng.standard_normal(200)
    a, b = z + rng.standard_normal(200), z + 0.5 * rng.standard_normal(200)
    ra, rb, rz = (scipy.stats.rankdata(v) for v in (a, b, z))
    X = np.stack([np.ones(200), rz], 1)
    res = lambda r: r - X @ np.linalg.lstsq(X, r, rcond=None)[0]
    assert O.partial_spearman(a, b, z) == pytest.approx(scipy.stats.pearsonr(res(ra), res(rb)).statistic, abs=1e-10)


def test_percentile_in_hand_cases():
    assert np.allclose(O.percentile_in(np.array([0.0, 2.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0])), [0, 0.375, 1])


@pytest.mark.parametrize("n,m,k", [(6, 3, 1), (6, 3, 2), (7, 4, 3), (5, 5, 1), (4, 10, 2)])
def test_subset_order_weights_match_enumeration(n, m, k):
    """E over all m-subsets of the k-th smallest of n sorted distances, by enumeration, equals weights @ d."""
    d = np.sort(np.random.default_rng(n * 100 + m * 10 + k).random(n))
    mm, kk = min(m, n), min(k, min(m, n))
    subsets = list(itertools.combinations(range(n), mm))
    expected = np.mean([d[list(s)][kk - 1] for s in subsets])
    w = O.subset_order_weights(n, m, k)
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    assert w @ d == pytest.approx(expected, abs=1e-12)


def test_rarity_nearest_neighbour_is_size_invariant():
    """nn_{1,m} estimates the same quantity for a group and for a 10x larger sample of the same population."""
    rng = np.random.default_rng(2)
    pop = rng.standard_normal((5000, 8))
    pop /= np.linalg.norm(pop, axis=1, keepdims=True)
    cfg = O.Config(subset_sizes=(10,), neighbours=(1,))
    small, big = pop[:100], pop[:1000]
    s, _ = O.rarity(small, small, np.arange(100), np.zeros(8), cfg)
    b, _ = O.rarity(big, big, np.arange(1000), np.zeros(8), cfg)
    assert s[:, 0].mean() == pytest.approx(b[:, 0].mean(), rel=0.03)


# ---------------------------------------------------------------------------------------------- features

def test_group_features_leave_the_response_itself_out():
    """Scoring one member against its group gives the member's row of the group's own features."""
    rows = synthetic_rows(1, 30, seed=3)
    prompt, responses = rows[0]["prompt"], list(dict.fromkeys(r["response"] for r in rows))
    whole = O.group_features(fake_embed, prompt, responses, None, SMALL)
    one = O.group_features(fake_embed, prompt, [responses[4]], responses, SMALL)
    assert np.allclose(one[0], whole[4], atol=1e-9)
    names = O.feature_names(DIM, SMALL)
    assert whole.shape[1] == len(names) and O.embedding_dim(len(names), SMALL) == DIM


def test_duplicates_raise_density_and_lower_rarity():
    prompt = "Suggest a use for a brick."
    group = ["doorstop"] * 10 + ["paperweight"] * 3 + ["grind into pigment for cave paintings"]
    F = O.group_features(fake_embed, prompt, ["doorstop", "grind into pigment for cave paintings"], group, SMALL)
    names = O.feature_names(DIM, SMALL)
    assert F[0, names.index("a_dens0.9")] == pytest.approx(9 / 13)
    assert F[1, names.index("a_dens0.9")] == 0.0
    assert F[0, names.index("a_nn1_m10")] < F[1, names.index("a_nn1_m10")]


# ---------------------------------------------------------------------------------------------- split, fit, card

def test_prompt_folds_put_each_prompt_on_one_side():
    tasks = {f"p{i}": ["A", "B", "C"][i % 3] for i in range(20)}
    fold = O.prompt_folds(tasks, 4, seed=0)
    assert set(fold) == set(tasks) and set(fold.values()) == {0, 1, 2, 3}
    for task in "ABC":  # every fold gets prompts of every task it can
        assert len({fold[p] for p in tasks if tasks[p] == task}) == min(4, sum(t == task for t in tasks.values()))
    assert O.prompt_folds(tasks, 4, seed=0) == fold


def test_cross_validation_never_trains_on_a_test_prompt(monkeypatch):
    rows = synthetic_rows(8, 25, seed=4)
    trained_on = []
    real = O.fit_features
    monkeypatch.setattr(O, "fit_features", lambda g, f, prompts, c, neg=None: trained_on.append(list(prompts))
                        or real(g, f, prompts, c, neg))
    negatives_from = []  # (prompt given negatives, the prompts whose answers they may come from)
    real_negatives = O.probes.training_negatives
    monkeypatch.setattr(O.probes, "training_negatives", lambda seed, p, groups, prompts, n, *a, **k:
                        negatives_from.append((p, list(prompts))) or real_negatives(seed, p, groups, prompts, n, *a, **k))
    table = O.cross_validate(rows, fake_embed, k=4, seed=0, config=SMALL, log=lambda *_: None)
    assert len(trained_on) == 4 and len(negatives_from) == 4 * 6  # 6 training prompts in each of 4 folds
    for f, train in enumerate(trained_on):
        test = {p for p, m in table["per_prompt"].items() if m["fold"] == f}
        assert test and not test & set(train) and test | set(train) == {r["prompt"] for r in rows}
        for p, sources in negatives_from[6 * f:6 * f + 6]:  # negatives only from the fold's training prompts
            assert p in train and set(sources) == set(train)


def test_rating_head_on_answers_and_answer_head_on_answers_against_negatives(monkeypatch):
    """fit_head is called twice: the rating head on the answers only (target t, prompt-standardised, weight
    n_x^-1/2), the answer head on answers (1) and negatives (0), each side weighing n_x^1/2 / 2 per prompt;
    max(2, round(0.02 n_x)) negatives of each probe kind."""
    rows = synthetic_rows(3, 30, seed=9)
    calls = []
    monkeypatch.setattr(O, "fit_head", lambda F, t, w, c: calls.append((F, t, w)) or {"mu": np.zeros(1)})
    m = O.fit(rows, fake_embed, SMALL)
    assert m.card["negatives"]["gibberish"] == 3 * 2 and set(m.card["negatives"]) == set(O.probes.KINDS)
    assert len(calls) == 2 and "answer.mu" in m.weights
    groups = O.group_rows(rows)
    neg = O.negative_features(groups, list(groups), fake_embed, SMALL)[0]
    (F1, t1, w1), (F2, y2, w2) = calls
    n_answers = sum(len(g[0]) for g in groups.values())
    assert len(F1) == n_answers and len(F2) == n_answers + sum(map(len, neg.values()))
    assert np.array_equal(y2, np.r_[np.ones(n_answers), np.zeros(len(F2) - n_answers)])
    start, nstart = 0, n_answers
    for p, (responses, scores, _) in groups.items():
        n, k = len(responses), len(neg[p])
        assert 7 <= k <= 14
        np.testing.assert_allclose(t1[start:start + n], (np.array(scores) - np.mean(scores)) / np.std(scores), atol=1e-12)
        np.testing.assert_allclose(w1[start:start + n], n ** -0.5)
        assert w2[start:start + n].sum() == pytest.approx(n ** 0.5 / 2) and w2[nstart:nstart + k].sum() == pytest.approx(n ** 0.5 / 2)
        start, nstart = start + n, nstart + k
    monkeypatch.undo()
    none = O.fit(rows, fake_embed, O.Config(**{**SMALL.__dict__, "negatives": 0.0}))
    assert none.card["negatives"] == dict.fromkeys(O.probes.KINDS, 0) and "answer.mu" not in none.weights


def test_answer_head_lowers_only_doubtful_answers():
    """y = ridge(z) + gamma min(0, a(z) - 1/2) with ridge-only heads, by hand."""
    cfg = O.Config(mlp_members=0, answer_members=0, answer_penalty=4.0, answer_cut=0.5)
    t = lambda *v: __import__("torch").tensor(v, dtype=__import__("torch").float32)  # noqa: E731
    weights = {"mu": t(0.0, 0.0), "sigma": t(1.0, 1.0), "ridge.beta": t(1.0, 0.0), "ridge.bias": t(0.0),
               "answer.mu": t(0.0, 0.0), "answer.sigma": t(1.0, 1.0), "answer.ridge.beta": t(0.0, 1.0),
               "answer.ridge.bias": t(0.5)}
    F = np.array([[2.0, 0.3], [2.0, -0.2], [-1.0, -0.5]])  # a = 0.5 + f2: 0.8, 0.3, 0.0
    np.testing.assert_allclose(O.predict_features(weights, F, cfg), [2.0, 2.0 - 4 * 0.2, -1.0 - 4 * 0.5], atol=1e-6)


def test_fit_recovers_known_rating_on_unseen_prompts():
    train, held_out = synthetic_rows(8, 40, seed=5), synthetic_rows(3, 40, seed=6)
    m = O.fit(train, fake_embed, SMALL)
    rhos = []
    for p in dict.fromkeys(r["prompt"] for r in held_out):
        rs = [r for r in held_out if r["prompt"] == p]
        pred = O.predict(m, p, [r["response"] for r in rs], embed=fake_embed)
        rhos.append(O.spearman(pred, [r["score"] for r in rs]))
    assert min(rhos) > 0.8, rhos
    table = O.cross_validate(train, fake_embed, k=4, config=SMALL, log=lambda *_: None)
    assert table["overall"]["spearman"]["mean"] > 0.8


def test_save_load_card_and_deterministic_predictions(tmp_path):
    rows = synthetic_rows(4, 20, seed=7)
    a, b = O.fit(rows, fake_embed, SMALL), O.fit(rows, fake_embed, SMALL)
    assert all(np.array_equal(a.weights[k].numpy(), b.weights[k].numpy()) for k in a.weights)
    O.save(a, tmp_path)
    loaded = O.load(tmp_path)
    assert loaded.card["training_prompts"] == list(dict.fromkeys(r["prompt"] for r in rows))
    assert "divergent-thinking" in loaded.card["trained_on"] and loaded.config == SMALL
    prompt = rows[0]["prompt"]
    responses = [r["response"] for r in rows if r["prompt"] == prompt]
    p1 = O.predict(a, prompt, responses, embed=fake_embed)
    p2 = O.predict(loaded, prompt, responses, embed=fake_embed)
    assert np.array_equal(p1, p2) and np.array_equal(p1, O.predict(loaded, prompt, responses, embed=fake_embed))


def test_load_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        O.load(tmp_path)


def test_predict_edge_groups():
    rows = synthetic_rows(3, 15, seed=8)
    m = O.fit(rows, fake_embed, SMALL)
    assert O.predict(m, "p", [], embed=fake_embed).shape == (0,)
    one = O.predict(m, "p", ["zest1 plain2"], embed=fake_embed)  # a group of one: no others to compare with
    assert one.shape == (1,) and np.isfinite(one).all()
    outside = O.predict(m, "p", ["zest1 zest2 zest3 zest4"], group=["plain1 plain2", "plain3 plain4"], embed=fake_embed)
    assert np.isfinite(outside).all()


def test_card_values_are_strict_json():
    assert O.json_safe({"a": float("nan"), "b": [np.float32(1.5), np.int64(2)], "c": "x"}) == {"a": None, "b": [1.5, 2], "c": "x"}
    assert O.json_safe([float("inf"), -np.float64("inf"), 0.25]) == [None, None, 0.25]  # inf is not JSON either


def test_shipped_default_card_and_weights():
    """The fitted default loads, its card names the data file's hash and the 44 training prompts, and it
    scores deterministically (a hashed 384-d encoder stands in for MiniLM: only shapes matter here)."""
    m = O.load(O.default_path())
    data_file = os.path.join(ROOT, "data", "dt_ratings.jsonl.gz")
    assert m.card["data_sha256"] == O.file_sha256(data_file)
    assert len(m.card["training_prompts"]) == 44
    assert "Suggest one unusual, creative use for this object: brick." in m.card["training_prompts"]
    assert m.card["cv"]["overall"]["spearman"]["mean"] >= 0.60
    dim = m.weights["mu"].shape[0]
    assert O.embedding_dim(dim, m.config) == 384
    embed384 = lambda texts: np.stack([np.resize(fake_embed([t])[0], 384) / math.sqrt(6) for t in texts])
    responses = ["doorstop", "paperweight", "grind it into pigment for cave paintings", "doorstop"]
    a = O.predict(m, "Suggest a use for a brick.", responses, embed=embed384)
    assert np.isfinite(a).all() and np.array_equal(a, O.predict(m, "Suggest a use for a brick.", responses, embed=embed384))
