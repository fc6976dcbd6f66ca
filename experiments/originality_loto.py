"""Leave-one-task-out validity of the originality scorer: fit on the prompts of three tasks (their answers and
negatives built from them only), predict every prompt of the fourth; mean per-prompt Spearman with the human
rating, per held-out task. How far the scorer transfers to a kind of task it never saw.

    python -m experiments.originality_loto --out results/originality_loto.json [--negatives 0.02]
"""
import argparse
import json
import os
import time

import numpy as np

import cache
import data
import encoder as sentence_encoder
import originality as O

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "dt_ratings.jsonl.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "originality_loto.json"))
    ap.add_argument("--negatives", type=float, default=O.Config.negatives, help="0: the scorer without negatives")
    ap.add_argument("--cache-dir", help="embedding cache (default: $CRPO_CACHE or .cache/crpo)")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows, _ = data.read_rows(args.data)
    groups = O.group_rows(rows)
    config = O.Config(negatives=args.negatives)
    embed = cache.disk_embed(sentence_encoder.load_encoder(None), args.cache_dir)
    feats = O.featurise(groups, embed, config)
    diversity_col = O.feature_names(O.embedding_dim(feats[next(iter(feats))].shape[1], config), config).index(
        "a_mean_distance")
    table = {}
    for task in sorted({g[2] for g in groups.values()}):
        train = [p for p in groups if groups[p][2] != task]
        test = [p for p in groups if groups[p][2] == task]
        neg_feats, _ = O.negative_features(groups, train, embed, config)
        weights = O.fit_features(groups, feats, train, config, neg_feats)
        per_prompt = {p: O.prompt_metrics(O.predict_features(weights, feats[p], config), np.array(groups[p][1]),
                                          groups[p][0], feats[p][:, diversity_col]) for p in test}
        table[task] = O.summarise(per_prompt, test)
        print(f"{task}: {len(test)} prompts, spearman {table[task]['spearman']['mean']:+.3f} "
              f"+- {table[task]['spearman']['se']:.3f} ({time.time() - t0:.0f} s)", flush=True)
    with open(args.out, "w") as f:
        json.dump(O.json_safe({"negatives": args.negatives, "per_task": table, "wall_s": round(time.time() - t0, 1)}),
                  f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
