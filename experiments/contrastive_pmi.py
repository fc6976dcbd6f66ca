"""A candidate appropriateness signal that does not confuse rarity with being off topic: is a response more
likely after its own prompt than after other prompts of the same task?

Similarity to the other answers (relevance.py, originality's answer head) flags a rare on-topic answer and an
answer to another prompt alike (experiments/relevance_tradeoff.py: the price in agreement with people). With the
language model's mean per-token log-likelihood l(r | x) (lm_scores.perplexity's tokens, the embedded default
model), the contrastive pointwise mutual information

    cpmi(r; x) = l(r | x) - log mean_{x' in X'} exp l(r | x'),      X' = up to m other prompts of x's task

is high when x explains r better than its siblings do, whatever r's rarity. On the held-out prompts of one
prompt-grouped fold (the probes and human sample of experiments/probe_scores.py): each signal's mean per-prompt
Spearman with the human rating (0 = no cost to agreement with people when used as a penalty) and its AUC of
human answers against each probe kind (1 = every human answer above every probe). Nothing is fitted.

    python -m experiments.contrastive_pmi --out results/contrastive_pmi.json [--fold 0] [--others 4]
"""
import argparse
import json
import os
import time

import numpy as np

import checkpoint
import data
import lm_scores
import originality
import relevance
from files import json_safe
from experiments import probe_scores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEUTRAL_PROMPT = "Say something."


def mean_logp(lm, tokenizer, prompt, responses):
    """l(r | prompt): mean per-token log-likelihood of each response after the prompt -> [n]."""
    out = np.zeros(len(responses))
    for idx, ppl in lm_scores.perplexity(lm, tokenizer, prompt, responses, batch_size=32):
        out[idx] = -np.log(ppl)
    return out


def logmeanexp(rows):
    """log mean_j exp(rows[j]) over the first axis -> [n]."""
    rows = np.asarray(rows)
    top = rows.max(0)
    return top + np.log(np.exp(rows - top).mean(0))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "dt_ratings.jsonl.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "contrastive_pmi.json"))
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--others", type=int, default=4, help="m: other prompts of the same task per prompt")
    args = ap.parse_args(argv)
    t0 = time.time()
    rows, _ = data.read_rows(args.data)
    groups = originality.group_rows(rows)
    test, _ = probe_scores.held_out_fold(groups, args.fold)
    humans, sets = probe_scores.humans_and_probes(groups, test)  # probe_scores.py's measuring set
    lm, tokenizer = checkpoint.load(None)
    pick = np.random.default_rng(0)
    signals = ("conditional", "pmi_neutral", "cpmi")
    table = {s: {"spearman": [], **{k: [] for k in probe_scores.KINDS}} for s in signals}
    siblings = {}
    for p in test:
        same = [q for q in groups if q != p and groups[q][2] == groups[p][2]]
        siblings[p] = [same[i] for i in sorted(pick.choice(len(same), min(args.others, len(same)), replace=False))]
        texts = humans[p] + [t for k in probe_scores.KINDS for t in sets[p][k]]
        own = mean_logp(lm, tokenizer, p, texts)
        values = {"conditional": own, "pmi_neutral": own - mean_logp(lm, tokenizer, NEUTRAL_PROMPT, texts),
                  "cpmi": own - logmeanexp([mean_logp(lm, tokenizer, q, texts) for q in siblings[p]])}
        ratings = np.array([groups[p][1][groups[p][0].index(h)] for h in humans[p]])
        n = len(humans[p])
        for s, v in values.items():
            table[s]["spearman"].append(originality.spearman(v[:n], ratings))
            start = n
            for k in probe_scores.KINDS:
                table[s][k].append(relevance.auc(v[:n], v[start:start + len(sets[p][k])]))
                start += len(sets[p][k])
        print(f"{p[:60]}: {time.time() - t0:.0f} s", flush=True)
    summary = {s: {k: float(np.nanmean(v)) for k, v in cols.items()} for s, cols in table.items()}
    for s, cols in summary.items():
        print(f"{s:12s} spearman with rating {cols['spearman']:+.3f}; AUC humans vs "
              + " ".join(f"{k}={cols[k]:.2f}" for k in probe_scores.KINDS))
    out = {"config": dict(vars(args), held_out_prompts=test, siblings=siblings, wall_s=round(time.time() - t0, 1)),
           "mean_over_prompts": summary, "per_prompt": table}
    with open(args.out, "w") as f:
        json.dump(json_safe(out), f, indent=1)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
