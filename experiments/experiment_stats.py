"""Paired statistics of experiments/experiment.py: each variant against a reference arm (SFT->DPO), paired by prompt.

Input: per-run evaluation results, one per (arm, seed), each {"arm", "seed", "per_prompt": [{"prompt", METRIC: value,
..., "pref_correct", "pref_pairs"}]} (eval.py's per-prompt rows). For a metric m, an arm A and the reference R,
over the seeds S both arms have and the prompts P both have:

    v_A(p) = (1/|S|) sum_{s in S} m_A(p, s)            seeds averaged within a prompt
             (pref_accuracy: sum_s correct_A(p, s) / sum_s pairs_A(p, s), the prompt's pooled accuracy)
    d_p    = v_A(p) - v_R(p)                           the paired difference, n = |P| values
    mean   = (1/n) sum_p d_p,  sd = sqrt(sum_p (d_p - mean)^2 / (n - 1)),  se = sd / sqrt(n)
    [lo, hi]       95% percentile bootstrap interval of the mean, prompts resampled with replacement
    p              sign-flip permutation p-value: under H0 (no difference) each d_p is as likely -d_p, so
                   p = #{signs e in {-1, 1}^n : |sum_p e_p d_p| >= |sum_p d_p|} / 2^n  (exact for n <= 20,
                   else (hits + 1) / (draws + 1) over random signs)
    p_holm         Holm's step-down correction over every comparison of one family (see holm)
    effect size    d_z = mean / sd (standardised mean of the paired differences)
    mde            (z_{1-alpha/2} + z_{power}) * se: the true mean difference this design detects with the given
                   power in a two-sided test at level alpha (normal approximation; 2.80 * se at .05 and 80%)

Pure functions of numbers: no files, no models.
"""
import math
from statistics import NormalDist

import numpy as np

EXACT_MAX_N = 20  # 2^20 sign patterns (8 MB of sums): enumerate; beyond, sample
PREFERRED_ORDER = ("novelty", "diversity", "surprise", "quality", "originality", "on_topic", "distinct", "distinct_1",
                   "distinct_2", "length", "pref_accuracy")
NOT_METRICS = ("prompt", "classes", "per_generation", "pref_correct", "pref_pairs")


# ----------------------------------------------------------------------------------------------------
# From per-run results to paired per-prompt differences


def prompt_value(row, metric):
    """The metric of one per-prompt row as (numerator, denominator) so seeds can be pooled; None if absent.
    pref_accuracy -> (correct, pairs); any other metric -> (value, 1)."""
    if metric == "pref_accuracy":
        if row.get("pref_pairs"):
            return float(row["pref_correct"]), float(row["pref_pairs"])
        return None
    v = row.get(metric)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v), 1.0
    return None


def seed_averaged(runs, metric, seeds=None):
    """{prompt: v(p)}: the metric per prompt averaged over the runs' seeds (only `seeds` when given); a prompt
    counts only when every used seed has it. pref_accuracy pools correct / pairs over seeds. Values of metrics
    other than pref_accuracy are averaged with equal weight per seed."""
    used = [r for r in runs if seeds is None or r["seed"] in seeds]
    if not used:
        return {}
    sums = {}
    for run in used:
        for row in run["per_prompt"]:
            nd = prompt_value(row, metric)
            if nd is not None:
                num, den, count = sums.get(row["prompt"], (0.0, 0.0, 0))
                sums[row["prompt"]] = (num + nd[0], den + nd[1], count + 1)
    return {p: num / den for p, (num, den, count) in sums.items() if count == len(used) and den > 0}


def paired_differences(arm_runs, ref_runs, metric):
    """(prompts, d, seeds): d_p = v_arm(p) - v_ref(p) over the seeds both arms ran and the prompts both have,
    prompts sorted; d as a float64 array."""
    seeds = sorted({r["seed"] for r in arm_runs} & {r["seed"] for r in ref_runs})
    a = seed_averaged(arm_runs, metric, set(seeds))
    b = seed_averaged(ref_runs, metric, set(seeds))
    prompts = sorted(set(a) & set(b))
    return prompts, np.array([a[p] - b[p] for p in prompts], dtype=np.float64), seeds


def metrics_present(runs):
    """Metrics in every per-prompt row of every run (pref_accuracy when any row has pairs), known ones first
    (PREFERRED_ORDER), others after in first-seen order."""
    seen, common = [], None
    for run in runs:
        for row in run["per_prompt"]:
            keys = {k for k in row if k not in NOT_METRICS and prompt_value(row, k) is not None}
            seen += [k for k in row if k in keys and k not in seen]
            common = keys if common is None else common & keys
    out = [m for m in PREFERRED_ORDER if m in (common or set())]
    out += [m for m in seen if m in (common or set()) and m not in out]
    if "pref_accuracy" not in out and any(row.get("pref_pairs") for run in runs for row in run["per_prompt"]):
        out.append("pref_accuracy")
    return out


# ----------------------------------------------------------------------------------------------------
# The statistics


def bootstrap_interval(d, *, n_boot=10000, seed=0, level=0.95):
    """(mean, lo, hi): mean of d and the (1-level)/2, (1+level)/2 percentiles of the mean over n_boot resamples
    of d with replacement (numpy default_rng(seed)). Fewer than 2 values: lo = hi = mean."""
    d = np.asarray(d, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2 or n_boot <= 0:
        return mean, mean, mean
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    lo, hi = np.percentile(d[idx].mean(1), [50 * (1 - level), 50 * (1 + level)])
    return mean, float(lo), float(hi)


def sign_flip_pvalue(d, *, alternative="two-sided", n_draws=100000, seed=0):
    """Paired sign-flip permutation p-value of T = sum_p d_p (module docstring). alternative: "two-sided"
    (|T_e| >= |T|), "greater" (T_e >= T) or "less" (T_e <= T). Exact over all 2^n sign patterns for
    n <= EXACT_MAX_N; else (hits + 1) / (n_draws + 1) over n_draws random patterns (default_rng(seed))."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) == 0:
        return 1.0
    t = float(d.sum())
    tol = 1e-12 * float(np.abs(d).sum())  # sums equal up to rounding count as ties (>=)
    if len(d) <= EXACT_MAX_N:
        sums = np.zeros(1)
        for x in d:  # all 2^n values of sum_p e_p d_p
            sums = np.concatenate([sums + x, sums - x])
    else:
        signs = np.random.default_rng(seed).integers(0, 2, size=(n_draws, len(d)), dtype=np.int8) * 2 - 1
        sums = signs @ d
    if alternative == "two-sided":
        hits = int((np.abs(sums) >= abs(t) - tol).sum())
    elif alternative == "greater":
        hits = int((sums >= t - tol).sum())
    elif alternative == "less":
        hits = int((sums <= t + tol).sum())
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, not {alternative!r}")
    return hits / len(sums) if len(d) <= EXACT_MAX_N else (hits + 1) / (n_draws + 1)


def holm(pvalues):
    """Holm's step-down adjusted p-values, in the input order: with p_(1) <= ... <= p_(m) sorted,
    p~_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)). Rejecting p~ < alpha controls the family-wise error at alpha."""
    p = np.asarray(pvalues, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out.tolist()


def effect_size(d):
    """Cohen's d_z = mean(d) / sd(d) (sd with n - 1); None when undefined (n < 2 or sd = 0)."""
    d = np.asarray(d, dtype=np.float64)
    if len(d) < 2:
        return None
    sd = float(d.std(ddof=1))
    return float(d.mean()) / sd if sd > 0 else None


def minimal_detectable_effect(sd, n, *, alpha=0.05, power=0.8):
    """(z_{1-alpha/2} + z_{power}) * sd / sqrt(n): the mean paired difference a two-sided level-alpha test
    detects with probability `power` (normal approximation). sd, n: of the paired differences."""
    z = NormalDist()
    return (z.inv_cdf(1 - alpha / 2) + z.inv_cdf(power)) * sd / math.sqrt(n)


def compare_to_reference(runs_by_arm, reference, arms, metrics, *, n_boot=10000, seed=0, alpha=0.05, power=0.8):
    """{arm: {metric: stats}} for each arm in `arms` against `reference`, paired by prompt (module docstring).
    stats = {"mean", "lo", "hi", "p", "p_holm", "effect_size", "sd", "se", "mde", "mde_holm_worst", "n_prompts",
    "seeds"}. Holm runs over every (arm, metric) comparison of this call (one family); mde_holm_worst is the MDE
    at alpha / (number of comparisons), the smallest level Holm may demand. A comparison with < 2 prompts
    has p = 1 and no interval."""
    out, keys, pvalues = {}, [], []
    for arm in arms:
        out[arm] = {}
        for metric in metrics:
            prompts, d, seeds = paired_differences(runs_by_arm[arm], runs_by_arm[reference], metric)
            if len(d) == 0:
                continue
            mean, lo, hi = bootstrap_interval(d, n_boot=n_boot, seed=seed)
            sd = float(d.std(ddof=1)) if len(d) > 1 else 0.0
            se = sd / math.sqrt(len(d))
            p = sign_flip_pvalue(d, seed=seed) if len(d) > 1 else 1.0
            out[arm][metric] = {"mean": mean, "lo": lo, "hi": hi, "p": p, "effect_size": effect_size(d), "sd": sd,
                                "se": se, "mde": minimal_detectable_effect(sd, len(d), alpha=alpha, power=power),
                                "n_prompts": len(d), "seeds": seeds}
            keys.append((arm, metric))
            pvalues.append(p)
    for (arm, metric), p_adj in zip(keys, holm(pvalues)):
        s = out[arm][metric]
        s["p_holm"] = p_adj
        s["mde_holm_worst"] = minimal_detectable_effect(s["sd"], s["n_prompts"], alpha=alpha / len(keys),
                                                         power=power)
    return out
