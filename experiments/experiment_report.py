"""The report of experiments/experiment.py: from the per-run result JSONs to the summary JSON, tables and figure.

Per arm, each metric as the mean over held-out prompts of the seed-averaged per-prompt value with a 95% bootstrap
interval over prompts; per arm other than the reference, the paired statistics against it (experiment_stats).
Two Holm families: the CrPO variants (the hypotheses) and the context arms (base, SFT), so adding context rows
does not dilute the test of the variants. A metric that was also an arm's training signal is marked (its
difference is expected by construction; lean on the other metrics).
"""
import json
import os

import plot
from experiments import experiment_stats as stats

CONTEXT_ARMS = ("base", "sft")


def load_results(paths):
    """{arm: [result, ...]} (seed order) from the result files that exist among paths."""
    by_arm = {}
    for path in paths:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                r = json.load(f)
            by_arm.setdefault(r["arm"], []).append(r)
    for runs in by_arm.values():
        runs.sort(key=lambda r: r["seed"])
    return by_arm


def arm_means(runs_by_arm, metrics, *, n_boot=10000, seed=0):
    """{arm: {metric: {"mean", "lo", "hi", "n_prompts", "seeds"}}}: mean over prompts of the seed-averaged
    per-prompt values, 95% bootstrap interval over prompts."""
    out = {}
    for arm, runs in runs_by_arm.items():
        out[arm] = {}
        for metric in metrics:
            values = stats.seed_averaged(runs, metric)
            if values:
                mean, lo, hi = stats.bootstrap_interval([values[p] for p in sorted(values)], n_boot=n_boot, seed=seed)
                out[arm][metric] = {"mean": mean, "lo": lo, "hi": hi, "n_prompts": len(values),
                                    "seeds": [r["seed"] for r in runs]}
    return out


def fmt(x):
    return "-" if x is None else f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def means_markdown(means, metrics):
    lines = ["| arm | seeds | " + " | ".join(metrics) + " |", "|" + "---|" * (len(metrics) + 2)]
    for arm, row in means.items():
        seeds = next(iter(row.values()), {}).get("seeds", [])
        cells = [f"{fmt(row[m]['mean'])} [{fmt(row[m]['lo'])}, {fmt(row[m]['hi'])}]" if m in row else "-"
                 for m in metrics]
        lines.append(f"| {arm} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_markdown(paired, signal):
    """One row per (arm, metric): difference [interval], p, Holm p, d_z, MDE; * marks a training-signal metric."""
    lines = ["| arm | metric | difference [95% CI] | p | p (Holm) | d_z | MDE (80%, .05) | prompts |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, row in paired.items():
        for metric, s in row.items():
            mark = " *" if metric in signal.get(arm, ()) else ""
            lines.append(f"| {arm} | {metric}{mark} | {fmt(s['mean'])} [{fmt(s['lo'])}, {fmt(s['hi'])}] | "
                         f"{s['p']:.3g} | {s['p_holm']:.3g} | {fmt(s['effect_size'])} | {fmt(s['mde'])} | "
                         f"{s['n_prompts']} |")
    return "\n".join(lines)


def summarize(runs_by_arm, arm_order, signal, *, reference="dpo", n_boot=10000, seed=0):
    """The statistics part of the summary JSON: metrics, per-arm means, paired differences to the reference
    (two Holm families), the training-signal marks, and the two Markdown tables."""
    all_runs = [r for runs in runs_by_arm.values() for r in runs]
    metrics = stats.metrics_present(all_runs)
    present = [a for a in arm_order if a in runs_by_arm]
    means = arm_means({a: runs_by_arm[a] for a in present}, metrics, n_boot=n_boot, seed=seed)
    out = {"metrics": metrics, "reference": reference, "arm_means": means,
           "training_signal": {a: list(signal.get(a, ())) for a in present},
           "seeds_by_arm": {a: [r["seed"] for r in runs_by_arm[a]] for a in present}}
    paired = {}
    if reference in runs_by_arm:
        variants = [a for a in present if a != reference and a not in CONTEXT_ARMS]
        context = [a for a in present if a in CONTEXT_ARMS]
        for family, arms in (("variants", variants), ("context", context)):
            if arms:
                out[f"paired_{family}"] = stats.compare_to_reference(runs_by_arm, reference, arms, metrics,
                                                                     n_boot=n_boot, seed=seed)
                paired.update(out[f"paired_{family}"])
    out["table_means_markdown"] = means_markdown(means, metrics)
    out["table_paired_markdown"] = paired_markdown(paired, signal) if paired else None
    return out, paired


def draw_figure(paired, signal, path, *, reference="dpo"):
    """Each arm's difference to the reference per metric with its 95% interval; hollow dot = training signal,
    grey = a context arm (base, SFT)."""
    metrics = list(dict.fromkeys(m for row in paired.values() for m in row))
    panels = {m: [(arm, row[m]["mean"], row[m]["lo"], row[m]["hi"]) for arm, row in paired.items() if m in row]
              for m in metrics}
    marked = {(m, arm) for arm, ms in signal.items() for m in ms}
    return plot.draw_intervals(panels, path, zero_line=True, marked=marked, muted=CONTEXT_ARMS,
                               title=f"difference to SFT->{reference.upper()}, paired by prompt (seeds averaged); "
                                     f"hollow: that arm's training signal; grey: context arms",
                               xlabel="mean difference [95% bootstrap interval over prompts]")
