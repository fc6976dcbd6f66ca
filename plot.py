"""Pictures of a run and of an evaluation: training curves from metrics.jsonl, and eval.py's metrics per model.

    python plot.py out/metrics.jsonl [--out curves.png] [--smooth 5]
    python plot.py --eval out/eval.json [--out eval.png]

Training curves: crpo.py writes one JSON row per logged step to metrics.jsonl, {"step", "split": "train" | "val",
"loss", "reward_accuracy", "reward_margin", "mean_c", ...}. One panel per metric (loss, reward accuracy, reward
margin, mean c), training and validation on the same axes; a metric the run never logged (an SFT run logs no
reward accuracy) gets no panel. With --smooth N the training line is the trailing mean of the last N logged
values (the raw values stay drawn, faint).

Evaluation chart: eval.py's JSON {"models": {NAME: {METRIC: {"mean", "lo", "hi"}, ...}}} (eval.summarize), one
panel per metric, each model's mean as a dot and its 95% bootstrap interval [lo, hi] as a bar.

matplotlib is an optional dependency: crpo.py draws --out/curves.png at the end of a run and eval.py --plot draws
its chart only when it is installed; the drawing functions import matplotlib when called and raise PlotError
("pip install matplotlib") when it is missing.
"""
import argparse
import importlib.util
import json
import math
import os
import sys

import files

CURVE_METRICS = ("loss", "reward_accuracy", "reward_margin", "mean_c")
CURVE_TITLES = {"loss": "loss", "reward_accuracy": "reward accuracy", "reward_margin": "reward margin",
                "mean_c": "mean creativity weight c"}
DPI = 100


class PlotError(Exception):
    """A user-facing problem (unreadable input, matplotlib missing): the CLI prints it in one line and exits 1."""


# ----------------------------------------------------------------------------------------------------
# Data: what gets drawn (pure functions, no matplotlib)


def read_metrics(path):
    """metrics.jsonl -> list of row dicts (blank lines skipped). A line that is not a JSON object raises
    PlotError("FILE:LINE: ...")."""
    return [row for _, row in files.read_json_objects(path, PlotError, "; is this crpo.py's metrics.jsonl?")]


def trailing_mean(values, window):
    """m_i = mean(v_{max(0, i-window+1)} .. v_i): the mean of the last `window` values up to i (window <= 1: v)."""
    if window <= 1:
        return list(values)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def curve_series(rows, smooth=1):
    """{metric: {split: {"step": [...], "value": [...]}}} for metric in CURVE_METRICS and split "train" / "val",
    in step order; a split or metric with no finite value is left out. A step logged twice in one split (an
    old file appended to after a resume) keeps its last row. smooth > 1 adds "smoothed" (trailing_mean) to
    the train split."""
    last = {}
    for r in rows:
        if r.get("split") in ("train", "val") and isinstance(r.get("step"), (int, float)):
            last[(r["split"], r["step"])] = r
    series = {}
    for metric in CURVE_METRICS:
        for split in ("train", "val"):
            points = sorted((step, r[metric]) for (s, step), r in last.items() if s == split
                            and isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric]))
            if points:
                steps, values = map(list, zip(*points))
                entry = {"step": steps, "value": values}
                if split == "train" and smooth > 1:
                    entry["smoothed"] = trailing_mean(values, smooth)
                series.setdefault(metric, {})[split] = entry
    return series


def eval_series(report, metrics=None):
    """eval.py's JSON -> {metric: [(model, mean, lo, hi), ...]} in the file's model order; metric order as
    first seen (or `metrics`), a model lacking a metric is left out of that panel."""
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict) or not models:
        raise PlotError("eval JSON: no \"models\" object; pass the file eval.py --out wrote")
    if metrics is None:
        metrics = []
        for res in models.values():
            metrics += [k for k, v in res.items() if isinstance(v, dict) and "mean" in v and k not in metrics]
    panels = {}
    for metric in metrics:
        points = [(name, float(res[metric]["mean"]), float(res[metric]["lo"]), float(res[metric]["hi"]))
                  for name, res in models.items() if isinstance(res.get(metric), dict) and "mean" in res[metric]]
        if points:
            panels[metric] = points
    return panels


# ----------------------------------------------------------------------------------------------------
# Drawing


def have_matplotlib():
    return importlib.util.find_spec("matplotlib") is not None


def new_figure(figsize):
    """A matplotlib Figure without pyplot (no global state, no display needed); PlotError when matplotlib
    is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plotting needs matplotlib, which is not installed: pip install matplotlib") from None
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def grid_shape(n_panels, max_cols):
    """(rows, cols) for n_panels panels, at most max_cols per row."""
    cols = min(max_cols, max(1, n_panels))
    return -(-max(1, n_panels) // cols), cols


def save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=DPI, format="png")


def draw_curves(series, path, *, title=None, panel_size=(5.0, 3.2)):
    """Training curves: one panel per metric of curve_series' output, train (line) and val (dots) on the same
    axes, written to path as PNG. Figure size = cols x rows panels of panel_size inches at DPI."""
    if not series:
        raise PlotError("no train or val rows with loss / reward_accuracy / reward_margin / mean_c to draw")
    rows, cols = grid_shape(len(series), 2)
    fig = new_figure((panel_size[0] * cols, panel_size[1] * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (metric, splits) in zip(axes, series.items()):
        train, val = splits.get("train"), splits.get("val")
        if train:
            smoothed = "smoothed" in train
            ax.plot(train["step"], train["value"], color="tab:blue", lw=1, alpha=0.35 if smoothed else 1,
                    label="train" if not smoothed else "train (each step)")
            if smoothed:
                ax.plot(train["step"], train["smoothed"], color="tab:blue", lw=2, label="train (trailing mean)")
        if val:
            ax.plot(val["step"], val["value"], color="tab:orange", lw=1.5, marker="o", ms=4, label="validation")
        if metric == "reward_accuracy":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(CURVE_TITLES.get(metric, metric))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(series):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    save(fig, path)
    return fig.get_size_inches() * DPI


def draw_intervals(panels, path, *, title=None, zero_line=False, marked=(), muted=(), xlabel=None, max_cols=3,
                   panel_width=4.0, row_height=0.32):
    """One panel per metric: for each label its value (dot) and interval [lo, hi] (bar), labels top to bottom.
    panels = {metric: [(label, mean, lo, hi), ...]} (eval_series' output, or differences to a baseline with
    zero_line=True to draw x = 0); (metric, label) pairs in `marked` are drawn hollow (the experiment marks a
    metric that was also that variant's training signal); labels in `muted` are drawn grey (context rows).
    Written to path as PNG; returns (width, height) px."""
    if not panels:
        raise PlotError("nothing to draw: no metric with a mean")
    labels = list(dict.fromkeys(label for points in panels.values() for label, *_ in points))
    rows, cols = grid_shape(len(panels), max_cols)
    fig = new_figure((panel_width * cols, (row_height * len(labels) + 1.1) * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    marked = set(marked)
    for ax, (metric, points) in zip(axes, panels.items()):
        for label, mean, lo, hi in points:
            y = len(labels) - 1 - labels.index(label)
            hollow, color = (metric, label) in marked, "0.55" if label in muted else "tab:blue"
            ax.plot([lo, hi], [y, y], color=color, lw=2, solid_capstyle="butt")
            ax.plot([mean], [y], "o", ms=6, color=color, mfc="white" if hollow else color)
        if zero_line:
            ax.axvline(0.0, color="0.3", lw=1, ls="--")
        ax.set_yticks(range(len(labels)), labels[::-1], fontsize=8)
        ax.set_ylim(-0.6, len(labels) - 0.4)
        ax.set_title(metric, fontsize=10)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    if xlabel:
        fig.supxlabel(xlabel, fontsize=9)
    save(fig, path)
    return fig.get_size_inches() * DPI


# ----------------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Draw training curves from metrics.jsonl, or eval.py's metrics per "
                                            "model with intervals, to a PNG (needs matplotlib).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("metrics", nargs="?", help="a run's metrics.jsonl (crpo.py --out folder/metrics.jsonl)")
    p.add_argument("--eval", help="eval.py's JSON (--out of eval.py) instead of metrics.jsonl")
    p.add_argument("--out", help="PNG to write (default: curves.png / eval.png next to the input)")
    p.add_argument("--smooth", type=int, default=1, help="training line = trailing mean of the last N steps")
    p.add_argument("--title", help="figure title (default: the input path)")
    args = p.parse_args(argv)
    if (args.metrics is None) == (args.eval is None):
        p.error("give either a metrics.jsonl path or --eval EVAL_JSON (one of them)")
    if args.smooth < 1:
        p.error("--smooth must be >= 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    src = args.eval or args.metrics
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(src)), "eval.png" if args.eval else "curves.png")
    try:
        if args.eval:
            try:
                with open(src, encoding="utf-8") as f:
                    report = json.load(f)
            except (OSError, json.JSONDecodeError) as e:
                raise PlotError(f"{src}: cannot read eval JSON ({getattr(e, 'strerror', None) or e})") from None
            width, height = draw_intervals(eval_series(report), out, title=args.title or src,
                                           xlabel="mean [95% bootstrap interval over prompts]")
        else:
            width, height = draw_curves(curve_series(read_metrics(src), args.smooth), out, title=args.title or src)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({width:.0f} x {height:.0f} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
