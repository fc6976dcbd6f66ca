"""What it costs to make the originality scorer itself rate off-topic answers low: a relevance penalty inside
the rating, traded against agreement with people, on the held-out prompts of one prompt-grouped fold.

The shipped originality scorer (originality.py: rating head y_hat and answer head a) leaves answers to other
prompts near the middle of the human answers (results/probes.json: median percentile 0.58), and the relevance
gate (relevance.py) catches them. This measures the other design, the gate folded into the score:

    y_g,c(r) = y_hat(r) + 10 min(0, a(r) - 0.3) + g min(0, p(r) - c),     p = relevance's p(on-topic | r, x, G)

for a grid of (g, c), with g = 0 the shipped scorer. Both scorers are fitted on the other folds' prompts only
(originality.fit, relevance.fit). Per variant: the mean per-prompt Spearman with the human rating over all human
answers of the held-out prompts (G = the prompt's answers, leave-one-out), and each probe kind's median
percentile among 100 human answers per prompt (the probes and protocol of experiments/probe_scores.py).
Language-model signals that do not measure rarity: experiments/contrastive_pmi.py.

    python -m experiments.relevance_tradeoff --out results/relevance_tradeoff.json [--fold 0]
"""
import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np

import cache
import data
import encoder as sentence_encoder
import originality
import relevance
from files import json_safe
from experiments import probe_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = ((0, 0.5), (10, 0.3), (10, 0.5), (30, 0.5), (100, 0.5), (100, 0.4), (100, 0.3), (100, 0.2))


def heads(model, rel, embed, prompt, responses, group):
    """(y_hat, a, p) of each response: rating head, answer head, relevance, against group (None: themselves)."""
    cfg = model.config
    F = originality.group_features(embed, prompt, responses, group, cfg)
    y_hat = originality.apply_head(model.weights, F, cfg)
    answer = {k[len("answer."):]: v for k, v in model.weights.items() if k.startswith("answer.")}
    a = originality.apply_head(answer, F, replace(cfg, mlp_members=cfg.answer_members))
    p = relevance.apply_logistic(rel, relevance.features(embed, prompt, responses,
                                                         responses if group is None else group))
    return y_hat, a, p


def variant(y_hat, a, p, g, c):
    """y_g,c = y_hat + 10 min(0, a - 0.3) + g min(0, p - c) -> [n]."""
    return y_hat + 10.0 * np.minimum(0.0, a - 0.3) + g * np.minimum(0.0, p - c)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "dt_ratings.jsonl.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "relevance_tradeoff.json"))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--cache-dir", help="score cache (default: $CRPO_CACHE or .cache/crpo)")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows, _ = data.read_rows(args.data)
    groups = originality.group_rows(rows)
    test, train = probe_scores.held_out_fold(groups, args.fold)
    train_set = set(train)
    embed = cache.disk_embed(sentence_encoder.load_encoder(None), args.cache_dir)
    model = originality.fit([r for r in rows if r["prompt"] in train_set], embed, originality.Config())
    rel = relevance.fit(groups, train, embed, 0)
    print(f"fitted on {len(train)} prompts ({time.time() - t0:.0f} s)", flush=True)
    humans, sets = probe_scores.humans_and_probes(groups, test)  # probe_scores.py's measuring set
    full = {p: heads(model, rel, embed, p, groups[p][0], None) for p in test}
    sample = {p: {"_humans": heads(model, rel, embed, p, humans[p], None)} for p in test}
    for p in test:
        sample[p].update({k: heads(model, rel, embed, p, texts, humans[p]) for k, texts in sets[p].items()})
    table = []
    for g, c in GRID:
        rho = [originality.spearman(variant(*full[p], g, c), np.array(groups[p][1])) for p in test]
        med = {k: float(np.median(np.concatenate([originality.percentile_in(variant(*sample[p][k], g, c),
                                                                            variant(*sample[p]["_humans"], g, c))
                                                  for p in test]))) for k in probe_scores.KINDS}
        table.append({"g": g, "c": c, "spearman": float(np.mean(rho)), "median_percentile": med})
        print(f"g={g:5.0f} c={c:.1f} spearman {np.mean(rho):+.3f}  "
              + " ".join(f"{k}={v:.2f}" for k, v in med.items()), flush=True)
    out = {"config": dict(vars(args), held_out_prompts=test, training_prompts=len(train),
                          wall_s=round(time.time() - t0, 1)), "variants": table}
    with open(args.out, "w") as f:
        json.dump(json_safe(out), f, indent=1)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
