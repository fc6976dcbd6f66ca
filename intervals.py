"""Intervals over prompts: the seeded percentile bootstrap that eval.py, noveltybench.py and humaneval.py report."""
import numpy as np


def bootstrap_interval(values, weights=None, *, n_boot=1000, seed=0, level=0.95):
    """(mean, lo, hi): mean = sum_p w_p v_p / sum_p w_p over prompts p (w = 1 unless given); [lo, hi] = the
    (1 - level)/2 and (1 + level)/2 percentiles of that mean over n_boot resamples of the prompts with
    replacement (numpy default_rng(seed)). One prompt or n_boot 0: lo = hi = mean."""
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    mean = float((w * v).sum() / w.sum())
    if len(v) < 2 or n_boot <= 0:
        return mean, mean, mean
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n_boot, len(v)))
    means = (w[idx] * v[idx]).sum(1) / w[idx].sum(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return mean, float(lo), float(hi)
