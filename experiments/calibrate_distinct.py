"""Calibrate eval.py's `distinct` threshold: at which cosine threshold do k samples of ONE model at a low
temperature come out measurably less distinct than at temperature 1.0?

    python -m experiments.calibrate_distinct [--k 8] [--prompts-per-task 3] [--max-new-tokens 48] [--out FILE]

Held-out-style prompts from data/dt_ratings.jsonl.gz (the first N prompts of every task), k samples each from
the embedded default model at temperatures 0.3 and 1.0 (same seeds), sentence embeddings from the embedded
encoder, then eval.py's greedy equivalence classes at every threshold of a grid. Prints, per threshold, distinct
(mean over prompts, 95% bootstrap interval) at both temperatures and whether the intervals are apart.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import data
import eval as evaluation
import checkpoint
import score
from encoder import load_encoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GRID = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def prompts_per_task(path, n):
    rows, _ = data.read_rows(path)
    by_task = {}
    for r in rows:
        task = by_task.setdefault(r.get("task", "?"), [])
        if r["prompt"] not in task:
            task.append(r["prompt"])
    return [p for task in sorted(by_task) for p in by_task[task][:n]]


def distinct_table(vectors, generations, grid, n_boot, seed):
    """{threshold: (mean, lo, hi)} of |classes| / k over prompts."""
    out = {}
    for t in grid:
        per_prompt = [len(set(evaluation.equivalence_classes(np.stack([vectors[x] for x in texts]), t))) / len(texts)
                      for texts in generations.values()]
        out[t] = evaluation.bootstrap_interval(per_prompt, n_boot=n_boot, seed=seed)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "dt_ratings.jsonl.gz"))
    ap.add_argument("--prompts-per-task", type=int, default=3)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperatures", default="0.3,1.0")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "distinct_calibration.json"))
    args = ap.parse_args(argv)
    temps = [float(t) for t in args.temperatures.split(",")]
    prompts = prompts_per_task(args.data, args.prompts_per_task)
    t0 = time.time()
    lm, tok = checkpoint.load(None)
    encoder = load_encoder(None)
    tables, samples = {}, {}
    for temp in temps:
        gens = evaluation.generate_all(lm, tok, prompts, k=args.k, max_new_tokens=args.max_new_tokens,
                                       temperature=temp, top_p=1.0, seed=args.seed, batch_size=64)
        vectors = score.embed_texts(encoder, [t for ts in gens.values() for t in ts], desc=f"embed (T={temp:g})")
        tables[temp] = distinct_table(vectors, gens, GRID, 1000, args.seed)
        samples[temp] = {p: gens[p][:3] for p in prompts[:2]}
    print(f"\n{len(prompts)} prompts x k={args.k}, {args.max_new_tokens} new tokens, default model; "
          f"{time.time() - t0:.0f} s\n")
    lo_t, hi_t = temps[0], temps[-1]
    print(f"{'threshold':>9}  " + "  ".join(f"distinct at T={t:g}".ljust(26) for t in temps) + "  apart")
    rows = []
    for th in GRID:
        (m0, l0, h0), (m1, l1, h1) = tables[lo_t][th], tables[hi_t][th]
        apart = h0 < l1
        rows.append({"threshold": th, **{f"T={t:g}": dict(zip(("mean", "lo", "hi"), tables[t][th])) for t in temps},
                     "apart": apart, "gap": l1 - h0})
        print(f"{th:9.2f}  " + "  ".join(f"{tables[t][th][0]:.3f} [{tables[t][th][1]:.3f}, {tables[t][th][2]:.3f}]".ljust(26)
                                          for t in temps) + f"  {'yes' if apart else 'no'}")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"config": vars(args), "prompts": prompts, "rows": rows, "samples": samples}, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
