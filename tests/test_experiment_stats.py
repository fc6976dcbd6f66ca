"""experiments/experiment_stats.py against hand-computed cases: seed averaging, sign-flip p-values, Holm, effect size, MDE."""
import itertools
import math
import os
import sys

import numpy as np
import pytest

from experiments import experiment_stats as stats


def run(arm, seed, values, pref=None):
    """A fake per-run result: values = {prompt: {metric: v}}, pref = {prompt: (correct, pairs)}."""
    rows = []
    for p, metrics in values.items():
        row = {"prompt": p, **metrics, "classes": 3, "per_generation": {"novelty": [0.1]}}
        if pref and p in pref:
            row["pref_correct"], row["pref_pairs"] = pref[p]
        rows.append(row)
    return {"arm": arm, "seed": seed, "per_prompt": rows}


def test_seed_averaged_and_paired_differences_by_hand():
    arm = [run("crpo", 0, {"a": {"novelty": 1.0}, "b": {"novelty": 4.0}, "c": {"novelty": 0.0}}),
           run("crpo", 1, {"a": {"novelty": 3.0}, "b": {"novelty": 2.0}}),  # c missing in seed 1: c is dropped
           run("crpo", 2, {"a": {"novelty": 100.0}, "b": {"novelty": 100.0}})]  # seed 2 has no dpo partner
    ref = [run("dpo", 0, {"a": {"novelty": 0.5}, "b": {"novelty": 1.0}, "c": {"novelty": 1.0}}),
           run("dpo", 1, {"a": {"novelty": 0.5}, "b": {"novelty": 2.0}, "c": {"novelty": 1.0}})]
    assert stats.seed_averaged(arm, "novelty", {0, 1}) == {"a": 2.0, "b": 3.0}
    prompts, d, seeds = stats.paired_differences(arm, ref, "novelty")
    assert prompts == ["a", "b"] and seeds == [0, 1]
    np.testing.assert_allclose(d, [2.0 - 0.5, 3.0 - 1.5], rtol=0, atol=1e-15)


def test_pref_accuracy_pools_pairs_over_seeds():
    arm = [run("x", 0, {"a": {}}, pref={"a": (3, 4)}), run("x", 1, {"a": {}}, pref={"a": (0.5, 1)})]
    assert stats.seed_averaged(arm, "pref_accuracy") == {"a": pytest.approx(3.5 / 5)}
    assert stats.metrics_present(arm) == ["pref_accuracy"]


def test_metrics_present_keeps_common_metrics_in_preferred_order():
    runs = [run("x", 0, {"a": {"length": 3.0, "novelty": 0.1, "zzz": 1.0, "originality": 0.2}}),
            run("y", 0, {"a": {"length": 4.0, "novelty": 0.2, "originality": 0.3, "extra": 5.0}})]
    assert stats.metrics_present(runs) == ["novelty", "originality", "length"]


@pytest.mark.parametrize("n", [1, 5, 12])
def test_sign_flip_all_positive_is_one_over_two_to_the_n(n):
    d = np.arange(1, n + 1) * 0.1
    assert stats.sign_flip_pvalue(d, alternative="greater") == pytest.approx(1 / 2 ** n, rel=1e-12)
    assert stats.sign_flip_pvalue(d) == pytest.approx(min(1.0, 2 / 2 ** n), rel=1e-12)
    assert stats.sign_flip_pvalue(-d, alternative="less") == pytest.approx(1 / 2 ** n, rel=1e-12)


def test_sign_flip_by_enumeration_by_hand():
    # d = (1, -2, 3), T = 2; the 8 values of +-1 +-2 +-3 are 6, 0, 2, -4, 4, -2, 0, -6: six have |.| >= 2
    assert stats.sign_flip_pvalue([1.0, -2.0, 3.0]) == pytest.approx(6 / 8)
    # one-sided: T_e >= 2 for 6, 2, 4 -> 3/8
    assert stats.sign_flip_pvalue([1.0, -2.0, 3.0], alternative="greater") == pytest.approx(3 / 8)
    assert stats.sign_flip_pvalue([0.0, 0.0, 0.0]) == 1.0


def test_sign_flip_matches_brute_force_and_sampling_agrees():
    d = np.random.default_rng(3).normal(0.3, 1.0, size=10)
    t = abs(d.sum())
    brute = np.mean([abs(np.dot(e, d)) >= t - 1e-12 for e in itertools.product([-1, 1], repeat=len(d))])
    assert stats.sign_flip_pvalue(d) == pytest.approx(brute, rel=1e-12)
    # above EXACT_MAX_N the p-value is sampled: compare on a vector whose exact p is known by brute force
    d24 = np.concatenate([d, d[:4], d[:10]])  # 24 values
    exact = stats.EXACT_MAX_N
    try:
        stats.EXACT_MAX_N = 30
        p_exact = stats.sign_flip_pvalue(d24)
    finally:
        stats.EXACT_MAX_N = exact
    n_draws = 20000
    p_sampled = stats.sign_flip_pvalue(d24, n_draws=n_draws, seed=1)
    assert abs(p_sampled - p_exact) < 4 * math.sqrt(p_exact * (1 - p_exact) / n_draws) + 1 / n_draws


def test_sign_flip_sampled_all_positive_is_one_over_draws_plus_one():
    # 25 positive values: only the all-plus / all-minus patterns (probability 2^-24 per draw) reach T
    assert stats.sign_flip_pvalue(np.ones(25), n_draws=999) == pytest.approx(1 / 1000)


def test_holm_on_a_known_vector():
    # sorted: .005 x 4 = .02, .01 x 3 = .03, .03 x 2 = .06, .04 x 1 = .04 -> running max .06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert stats.holm([0.02]) == pytest.approx([0.02])


def test_bootstrap_interval_covers_the_mean():
    d = np.random.default_rng(0).normal(1.0, 2.0, size=12)
    mean, lo, hi = stats.bootstrap_interval(d, n_boot=2000, seed=0)
    assert mean == pytest.approx(d.mean(), rel=1e-12)
    assert lo < mean < hi
    # a 95% interval of a mean is about +-1.96 se wide (the percentile bootstrap's se is sd/sqrt(n) * sqrt((n-1)/n))
    se = d.std(ddof=0) / math.sqrt(len(d))
    assert (hi - lo) == pytest.approx(2 * 1.96 * se, rel=0.2)
    assert stats.bootstrap_interval([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)


def test_effect_size_and_mde_by_hand():
    assert stats.effect_size([1.0, 2.0, 3.0]) == pytest.approx(2.0)  # mean 2, sd 1
    assert stats.effect_size([1.0, 1.0]) is None
    # (1.959964 + 0.841621) * 2 / sqrt(16)
    assert stats.minimal_detectable_effect(2.0, 16) == pytest.approx(2.801585 * 0.5, rel=1e-6)
    assert stats.minimal_detectable_effect(1.0, 1, alpha=0.05, power=0.5) == pytest.approx(1.959964, rel=1e-6)


def test_compare_to_reference_holm_family_and_fields():
    prompts = [f"p{i}" for i in range(6)]
    ref = [run("dpo", s, {p: {"novelty": 0.0, "length": 10.0} for p in prompts}) for s in (0, 1)]
    up = [run("crpo", s, {p: {"novelty": 0.1 + 0.01 * i, "length": 10.0 + (-1) ** i} for i, p in enumerate(prompts)})
          for s in (0, 1)]
    out = stats.compare_to_reference({"dpo": ref, "crpo": up}, "dpo", ["crpo"], ["novelty", "length"],
                                     n_boot=500)
    nov, length = out["crpo"]["novelty"], out["crpo"]["length"]
    assert nov["mean"] == pytest.approx(0.125) and nov["n_prompts"] == 6 and nov["seeds"] == [0, 1]
    assert nov["p"] == pytest.approx(2 / 64)  # all six differences positive
    assert length["mean"] == pytest.approx(0.0) and length["p"] == pytest.approx(1.0)
    assert nov["p_holm"] == pytest.approx(2 * 2 / 64) and length["p_holm"] == pytest.approx(1.0)
    sd = np.std([0.1 + 0.01 * i for i in range(6)], ddof=1)
    assert nov["effect_size"] == pytest.approx(0.125 / sd)
    assert nov["mde"] == pytest.approx(2.801585 * sd / math.sqrt(6), rel=1e-6)
    assert nov["mde_holm_worst"] > nov["mde"]
