"""How well do score.py's scorers track human originality ratings, and how fast are they?

Validity: on real divergent-thinking data (data/dt_ratings.jsonl.gz: human responses with a mean
human originality rating), the Spearman correlation between the human rating and every scorer/option,
per prompt (then averaged per task and overall) and pooled (per-prompt normalised scores, as CrPO sees
them), with response length (characters, words) as a baseline.

Speed: this machine's fp32 matmul rate; the time to score N responses with the four default scorers
(cold cache, then cached rerun); the FLOP floor of the model passes that needs, and the ratio.

    python -m experiments.score_validity --out /tmp/validity.json [--max-per-prompt 100] [--threads 1]
"""
import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
import torch

import cache
import data
import checkpoint
import encoder as sentence_encoder
import measures
from files import json_safe
from originality import partial_spearman, spearman
import score

DEFAULT_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "dt_ratings.jsonl.gz")
TASKS = ("Alternate Uses", "Instances", "Consequences", "Sentence Completion")
SCORERS = [  # (column, dim, score_groups options)
    ("novelty dsi", "novelty", {"novelty": "dsi"}),
    ("novelty dsi-neutral", "novelty", {"novelty": "dsi-neutral"}),
    ("novelty centroid", "novelty", {"novelty": "centroid"}),
    ("diversity", "diversity", {}),
    ("surprise lm", "surprise", {"surprise": "lm"}),
    ("surprise nll", "surprise", {"surprise": "nll"}),
    ("surprise embedding", "surprise", {"surprise": "embedding"}),
    ("quality judge", "quality", {"quality": "judge"}),
]


# ----------------------------------------------------------------------------- statistics


# spearman / partial_spearman: originality.py's (Pearson of tie-averaged ranks; nan for a constant side)


# ----------------------------------------------------------------------------- data


def sample_groups(path, prompts_per_task, max_per_prompt, seed):
    """Per task the prompts_per_task prompts with most responses; per prompt at most max_per_prompt
    responses (seeded subsample). -> [{"task", "prompt", "responses", "human"}]."""
    rows, report = data.read_rows(path)
    print(report.summary())
    by_prompt = defaultdict(list)
    for r in rows:
        by_prompt[r.get("task", "?"), r["prompt"]].append(r)
    rng = np.random.default_rng(seed)
    groups = []
    for task in TASKS:
        prompts = sorted((k for k in by_prompt if k[0] == task), key=lambda k: (-len(by_prompt[k]), k[1]))
        for key in prompts[:prompts_per_task]:
            rs = by_prompt[key]
            if len(rs) > max_per_prompt:
                rs = [rs[i] for i in sorted(rng.choice(len(rs), max_per_prompt, replace=False))]
            groups.append({"task": task, "prompt": key[1], "responses": [r["response"] for r in rs],
                           "human": [r["score"] for r in rs], "available": len(by_prompt[key])})
    return groups


# ----------------------------------------------------------------------------- speed


def matmul_gflops(n=2048, reps=5):
    """Best of reps: 2 n^3 FLOPs of an fp32 [n, n] @ [n, n] matmul per second."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def flop_floor(lm, encoder, stats):
    """FLOPs of the passes the scoring ran: 2 * (non-embedding LM parameters) per token run, 2 V D per
    token through the output layer (surprise), 4 * layers * heads * head_dim per (query, key) attention
    pair, and 2 * (non-embedding encoder parameters) per encoder token. Padding is not counted."""
    c = lm.config
    lm_params = sum(p.numel() for n, p in lm.named_parameters() if not n.startswith(("embed", "lm_head")))
    enc_params = sum(p.numel() for n, p in encoder.named_parameters() if n.startswith("layers"))
    parts = {"lm": 2 * lm_params * stats["lm_tokens"],
             "lm_head": 2 * c.vocab_size * c.dim * stats["lm_head_tokens"],
             "attention": 4 * c.n_layers * c.n_heads * c.head_dim * stats["attention_pairs"],
             "encoder": 2 * enc_params * stats["encoder_tokens"]}
    return parts


def naive_tokens(tok, groups):
    """Tokens a scorer without prompt sharing runs: the full chat sequence of every (prompt, response),
    once for surprise and once for the judge question."""
    n = 0
    for g in groups:
        for r in g["responses"]:
            n += len(tok.chat(g["prompt"], r)[0]) + len(tok.chat(score.judge_prompt(g["prompt"], r))[0])
    return n


def merge_cache(src_dir, dst_dir):
    """Copy every cached value of src_dir's store into dst_dir's (what the cold run computed is reused)."""
    cache.Cache(dst_dir)  # creates the table
    db = sqlite3.connect(os.path.join(dst_dir, "scores.sqlite"), timeout=60)
    db.execute("ATTACH DATABASE ? AS src", (os.path.join(src_dir, "scores.sqlite"),))
    db.execute("INSERT OR IGNORE INTO cache SELECT key, value FROM src.cache")
    db.commit()
    db.close()


def speed(groups, n, lm, tok, encoder, cache_dir, batch_size):
    """Score the first n sampled responses with the four default scorers, cold (empty cache) and again
    (cached); what the cold run computed then joins cache_dir."""
    subset, left = [], n
    for g in groups:
        if left <= 0:
            break
        subset.append({"prompt": g["prompt"], "responses": g["responses"][:left]})
        left -= len(subset[-1]["responses"])
    n = sum(len(g["responses"]) for g in subset)
    gflops = matmul_gflops()
    tmp = tempfile.mkdtemp(prefix="crpo-score-speed-")
    try:
        kw = dict(model=lm, tokenizer=tok, encoder=encoder, cache_dir=tmp, batch_size=batch_size)
        t = time.perf_counter()
        _, cold = score.score_groups(subset, score.paper_dims(), **kw)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        _, warm = score.score_groups(subset, score.paper_dims(), show_progress=False, **kw)
        warm_s = time.perf_counter() - t
        merge_cache(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    gflops_after = matmul_gflops()
    parts = flop_floor(lm, encoder, cold)
    floor = sum(parts.values())
    c = lm.config
    lm_params = sum(p.numel() for n_, p in lm.named_parameters() if not n_.startswith(("embed", "lm_head")))
    naive = naive_tokens(tok, subset)
    rate = max(gflops, gflops_after)  # the better of the two: the conservative (larger) ratio on a busy machine
    return {"responses": n, "prompts": len(subset), "threads": torch.get_num_threads(),
            "matmul_gflops_before": gflops, "matmul_gflops_after": gflops_after,
            "cold_s": cold_s, "cached_s": warm_s, "cold_seconds_by_scorer": cold["seconds"],
            "lm_tokens": cold["lm_tokens"], "lm_head_tokens": cold["lm_head_tokens"],
            "encoder_tokens": cold["encoder_tokens"], "attention_pairs": cold["attention_pairs"],
            "flops": parts, "floor_s": floor / (rate * 1e9), "ratio_to_floor": cold_s / (floor / (rate * 1e9)),
            "naive_lm_tokens": naive, "naive_floor_s": (2 * lm_params * naive + parts["lm_head"]
                                                        + parts["encoder"]) / (rate * 1e9),
            "lm_non_embedding_params": lm_params, "vocab_x_dim": c.vocab_size * c.dim}


# ----------------------------------------------------------------------------- validity


def validity(groups, lm, tok, encoder, cache_dir, batch_size):
    """Per response: the human rating, every scorer's raw value and its per-prompt normalised value, lengths."""
    values = {name: [] for name, _, _ in SCORERS}
    normalised = {name: [] for name, _, _ in SCORERS}
    kw = dict(model=lm, tokenizer=tok, encoder=encoder, cache_dir=cache_dir, batch_size=batch_size)
    t = time.perf_counter()
    for name, dim, opts in SCORERS:  # the expensive values (embeddings, perplexities, judge) are cached: once each
        results, _ = score.score_groups(groups, [dim], **kw, **opts)
        values[name] = [res[f"{dim}_raw"] for res in results]
        normalised[name] = [res[dim] for res in results]
    seconds = time.perf_counter() - t
    for name, fn in (("length (chars)", len), ("length (words)", lambda t: len(t.split()))):
        values[name] = [np.array([fn(r) for r in g["responses"]], dtype=np.float64) for g in groups]
        normalised[name] = [measures.minmax(v) for v in values[name]]
    return values, normalised, seconds


def correlations(groups, values, normalised):
    """{column: {task or "overall": {"mean": mean per-prompt rho, "se": its standard error, "pooled": rho
    over all responses (per-prompt normalised scores), "prompts": n, "with_length": mean per-prompt rho
    of the scorer with the length in characters, "partial": mean per-prompt rho with the human rating,
    length in characters held fixed}}}."""
    out = {}
    for name in values:
        per_task = {}
        for task in list(TASKS) + ["overall"]:
            idx = [i for i, g in enumerate(groups) if task in ("overall", g["task"])]
            if not idx:
                continue
            rhos = [spearman(values[name][i], groups[i]["human"]) for i in idx]
            rhos = [r for r in rhos if not math.isnan(r)]
            pooled = spearman(np.concatenate([normalised[name][i] for i in idx]),
                              np.concatenate([groups[i]["human"] for i in idx]))
            chars = [values["length (chars)"][i] for i in idx]
            with_length = [spearman(values[name][i], c) for i, c in zip(idx, chars)]
            partial = [partial_spearman(values[name][i], groups[i]["human"], c) for i, c in zip(idx, chars)]
            per_task[task] = {"mean": float(np.mean(rhos)) if rhos else float("nan"),
                              "se": float(np.std(rhos, ddof=1) / math.sqrt(len(rhos))) if len(rhos) > 1 else float("nan"),
                              "pooled": pooled, "prompts": len(rhos), "with_length": float(np.nanmean(with_length)),
                              "partial": float(np.nanmean(partial)) if not all(map(math.isnan, partial)) else float("nan")}
        out[name] = per_task
    return out


def markdown(groups, corr):
    cols = [t for t in TASKS if any(g["task"] == t for g in groups)] + ["overall"]
    n_resp = {t: sum(len(g["responses"]) for g in groups if t in ("overall", g["task"])) for t in cols}
    n_prompts = {t: sum(1 for g in groups if t in ("overall", g["task"])) for t in cols}
    head = "| scorer | " + " | ".join(f"{t} ({n_prompts[t]} prompts, {n_resp[t]} resp.)" for t in cols) + " |"
    sep = "|---|" + "---|" * len(cols)
    lines = ["Spearman rho with the human originality rating: mean over prompts of the per-prompt rho "
             "(± standard error) / pooled over all responses of the column (per-prompt min-max normalised scores)",
             "", head, sep]
    for name, per_task in corr.items():
        cells = []
        for t in cols:
            c = per_task[t]
            cells.append(f"{c['mean']:+.3f} ± {c['se']:.3f} / {c['pooled']:+.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Length as a confound: mean per-prompt Spearman rho of each scorer with the length in characters, "
              "and its rho with the human rating with length held fixed (partial)", "",
              "| scorer | rho with length (overall) | " + " | ".join(f"partial: {t}" for t in cols) + " |",
              "|---|---|" + "---|" * len(cols)]
    for name, per_task in corr.items():
        if name != "length (chars)":
            lines.append(f"| {name} | {per_task['overall']['with_length']:+.3f} | "
                         + " | ".join(f"{per_task[t]['partial']:+.3f}" for t in cols) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", required=True, help="JSON results")
    ap.add_argument("--prompts-per-task", type=int, default=10)
    ap.add_argument("--max-per-prompt", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default=None, help="score cache (default: $CRPO_CACHE or .cache/crpo)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--speed-n", type=int, default=1000, help="responses for the speed measurement (0: skip)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not os.path.exists(args.data):
        sys.exit(f"{args.data}: not found (the real ratings ship as data/dt_ratings.jsonl.gz)")
    cache_dir = args.cache_dir or cache.default_cache_dir()
    t0 = time.perf_counter()
    groups = sample_groups(args.data, args.prompts_per_task, args.max_per_prompt, args.seed)
    for t in TASKS:
        gs = [g for g in groups if g["task"] == t]
        print(f"{t}: {len(gs)} prompts, {sum(len(g['responses']) for g in gs)} responses "
              f"(of {sum(g['available'] for g in gs)}; per prompt {min(len(g['responses']) for g in gs) if gs else 0}"
              f"-{max(len(g['responses']) for g in gs) if gs else 0})")
    t = time.perf_counter()
    lm, tok = checkpoint.load(None)
    encoder = sentence_encoder.load_encoder(None)
    load_s = time.perf_counter() - t
    print(f"models loaded in {load_s:.1f} s; torch threads: {torch.get_num_threads()}")
    result = {"data": os.path.abspath(args.data), "seed": args.seed, "max_per_prompt": args.max_per_prompt,
              "prompts_per_task": args.prompts_per_task, "threads": torch.get_num_threads(), "load_s": load_s,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    if args.speed_n:
        sp = speed(groups, args.speed_n, lm, tok, encoder, cache_dir, args.batch_size)
        result["speed"] = sp
        print(f"\nspeed, {sp['responses']} responses / {sp['prompts']} prompts, {sp['threads']} torch threads: "
              f"matmul {sp['matmul_gflops_before']:.0f} / {sp['matmul_gflops_after']:.0f} GFLOP/s (before / after); "
              f"cold {sp['cold_s']:.1f} s, cached rerun {sp['cached_s']:.2f} s")
        print(f"  FLOP floor {sum(sp['flops'].values()) / 1e12:.2f} TFLOP ("
              + ", ".join(f"{k} {v / 1e12:.3f}" for k, v in sp["flops"].items())
              + f") = {sp['floor_s']:.1f} s at the better matmul rate -> cold time / floor = {sp['ratio_to_floor']:.2f}x")
        print(f"  LM tokens run {sp['lm_tokens']:,} (prompt prefix shared per prompt) vs {sp['naive_lm_tokens']:,} "
              f"without sharing (floor {sp['naive_floor_s']:.1f} s)")
    values, normalised, seconds = validity(groups, lm, tok, encoder, cache_dir, args.batch_size)
    corr = correlations(groups, values, normalised)
    result.update({"validity_scoring_s": seconds, "correlations": corr,
                   "groups": [{"task": g["task"], "prompt": g["prompt"], "responses": len(g["responses"]),
                               "available": g["available"],
                               "rho": {name: spearman(values[name][i], g["human"]) for name in values}}
                              for i, g in enumerate(groups)],
                   "total_s": time.perf_counter() - t0})
    table = markdown(groups, corr)
    result["table"] = table
    print("\n" + table)
    with open(args.out, "w") as f:
        json.dump(json_safe(result), f, indent=1)
    print(f"\nvalidity scoring {seconds:.1f} s, total {result['total_s']:.1f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
