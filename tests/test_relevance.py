"""Tests for relevance.py: the logistic fit against a generic optimiser of the same objective, AUC against
scipy's Mann-Whitney U, the k-nearest similarities against brute force, the gate by hand, and a fit that
tells answers to a prompt from answers to other prompts on synthetic prompts it never saw."""

import numpy as np
import pytest
import scipy.optimize
import scipy.stats

import relevance as R
from fakes import hashed_embed

DIM = 48


def fake_embed(texts):
    return hashed_embed(texts, DIM)


def test_fit_logistic_minimises_the_weighted_penalised_loss():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((300, 4)) * [1.0, 3.0, 0.5, 2.0] + [0.0, 1.0, -2.0, 0.5]
    y = (F @ [1.0, -0.5, 2.0, 0.3] + rng.standard_normal(300) > 0).astype(float)
    w = rng.uniform(0.2, 2.0, 300)
    ridge = 0.01
    m = R.fit_logistic(F, y, w, ridge=ridge)
    Z = (F - m["mu"]) / m["sigma"]
    wn = w / w.sum()

    def loss(theta):
        z = Z @ theta[:-1] + theta[-1]
        return float(wn @ (np.logaddexp(0, z) - y * z) + ridge * theta[:-1] @ theta[:-1])
    ref = scipy.optimize.minimize(loss, np.zeros(5), method="BFGS", options={"gtol": 1e-10})
    np.testing.assert_allclose(np.r_[m["beta"], m["bias"]], ref.x, atol=1e-5)
    np.testing.assert_allclose(m["mu"], np.average(F, axis=0, weights=w), atol=1e-12)
    np.testing.assert_allclose(R.apply_logistic(m, F), 1 / (1 + np.exp(-(Z @ m["beta"] + m["bias"]))), atol=1e-12)


def test_auc_is_mann_whitney_u_with_ties():
    pos, neg = np.array([0.9, 0.8, 0.5, 0.5, 0.3]), np.array([0.5, 0.2, 0.1, 0.8])
    u = scipy.stats.mannwhitneyu(pos, neg).statistic
    assert R.auc(pos, neg) == pytest.approx(u / 20, abs=1e-12)
    assert R.auc([1, 2], [0]) == 1.0 and R.auc([0], [1, 2]) == 0.0


def test_knn_similarity_leaves_itself_out():
    rng = np.random.default_rng(1)
    V = rng.standard_normal((7, 5))
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    U = np.vstack([V[2], rng.standard_normal(5) / 3])
    self_index = np.array([2, -1])
    for k in (1, 3, 20):
        got = R.knn_similarity(U, V, self_index, k)
        for i in range(2):
            sims = [U[i] @ V[j] for j in range(7) if j != self_index[i]]
            kk = min(k, 6)  # clipped to the others of the row with the fewest
            assert got[i] == pytest.approx(np.mean(sorted(sims, reverse=True)[:kk]), abs=1e-12)


def test_gate_sets_off_topic_values_to_the_group_minimum():
    got = R.gate_values([3.0, 5.0, 1.0, 4.0], [0.9, 0.2, 0.6, 0.49], 0.5)
    np.testing.assert_array_equal(got, [3.0, 1.0, 1.0, 1.0])
    assert len(R.gate_values([], [], 0.5)) == 0


def synthetic_groups(n_prompts, per_prompt, seed):
    """Prompt i's answers use its own topic words plus common filler; the task alternates."""
    rng = np.random.default_rng(seed)
    groups = {}
    for i in range(n_prompts):
        topic = [f"topic{seed}x{i}w{j}" for j in range(6)]
        prompt = f"Give a creative use for thing{seed}x{i}: {topic[0]}."
        answers = list(dict.fromkeys(" ".join(list(rng.choice(topic, 2)) + list(rng.choice(["use", "it", "as", "a", "make"], 2)))
                                     for _ in range(per_prompt)))
        groups[prompt] = (answers, [1.0] * len(answers), ["Uses", "Instances"][i % 2])
    return groups


def test_fit_separates_answers_from_answers_to_other_prompts_on_unseen_prompts(tmp_path):
    train = synthetic_groups(8, 40, 0)
    model = R.fit(train, list(train), fake_embed)
    test = synthetic_groups(4, 40, 1)
    prompts = list(test)
    aucs = []
    for p in prompts:
        own = test[p][0]
        other = [t for q in prompts if q != p for t in test[q][0][:10]]
        prob = R.predict(model, p, own + other, own, embed=fake_embed)
        aucs.append(R.auc(prob[:len(own)], prob[len(own):]))
        assert (prob[:len(own)] >= R.THRESHOLD).mean() > 0.8 and (prob[len(own):] < R.THRESHOLD).mean() > 0.8
    assert min(aucs) > 0.95
    R.save(model, {"training_prompts": list(train)}, str(tmp_path))
    loaded, card = R.load(str(tmp_path))
    np.testing.assert_allclose(loaded["beta"], model["beta"])
    assert card["features"] == R.NAMES and len(R.NAMES) == len(model["beta"])
    with pytest.raises(FileNotFoundError, match="score.py fit --scorer relevance"):
        R.load(str(tmp_path / "missing"))
