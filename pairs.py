"""The pairs a run trains on: rating rows -> pairs (or SFT examples) -> prompt-disjoint splits -> seeded
samples -> creativity scores (computed by score.py where the data lacks them) -> token ids and score tensors.

crpo.py calls load_pairs, ensure_scores and tokenize_splits in that order; a Split hands out batches.
Problems with the data raise data.DataError with the file, the line or the flag, and what to do.
"""
import os
import random

import numpy as np
import torch
import torch.distributed as dist

import data
import registry
import score
from conversation import prompt_key
from tokenizer import tokenize_pairs, tokens_summary




def subsample(pairs, limit, seed, what, flag, log=print):
    """At most `limit` of the pairs (0 = all), a seeded sample in the original order."""
    if not 0 < limit < len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    log(f"using {limit:,} of the {len(pairs):,} {what} pairs ({flag})")
    return [pairs[i] for i in keep]


def sft_examples(rows, args):
    """SFT sequences as pairs whose chosen is the response (tokenize_pairs' format; the rejected side is
    dropped after tokenization): rating rows with score >= --sft-min-score, or in the top --sft-top-frac of
    their prompt; the chosen side of preference rows (each (prompt, chosen) once)."""
    if rows and rows[0]["kind"] == "preference":
        unique = {(prompt_key(r["prompt"]), r["chosen"]): r for r in rows}
        return [{"prompt": r["prompt"], "chosen": c, "rejected": c, "line": r.get("line")} for (_, c), r in unique.items()]
    keep = rows
    if args.sft_min_score is not None:
        keep = [r for r in rows if r["score"] >= args.sft_min_score]
    elif args.sft_top_frac is not None:
        by_prompt = {}
        for r in rows:
            by_prompt.setdefault(prompt_key(r["prompt"]), []).append(r)
        keep = [r for g in by_prompt.values()
                for r in sorted(g, key=lambda r: -r["score"])[:max(1, round(args.sft_top_frac * len(g)))]]
    if not keep:
        raise data.DataError(f"{args.data}: no rating row has score >= --sft-min-score {args.sft_min_score} "
                        f"(scores run from {min(r['score'] for r in rows):g} to {max(r['score'] for r in rows):g})")
    return [{"prompt": r["prompt"], "chosen": r["response"], "rejected": r["response"], "line": r["line"]}
            for r in keep]


def load_pairs(args, log):
    """(train, val, population) from --data: pairs (SFT: examples) split by prompt and optionally subsampled, and
    {prompt_key: every response to that prompt in the file}, what a scorer that compares with others (originality) compares with."""
    if not os.path.isfile(args.data):
        raise data.DataError(f"{args.data}: no such file (pass --data with a JSON Lines file)")
    rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows, score_columns=list(registry.DIMENSIONS))
    log(report.summary())
    population = {}
    for r in rows:
        population.setdefault(prompt_key(r["prompt"]), {}).update(dict.fromkeys(
            [r["response"]] if r["kind"] == "rating" else [r["chosen"], r["rejected"]]))
    population = {p: list(rs) for p, rs in population.items()}
    if args.objective == "sft":
        pairs = sft_examples(rows, args)
        log(f"sft: {len(pairs):,} responses over {len({prompt_key(p['prompt']) for p in pairs}):,} prompts")
    else:
        pairs, pair_stats = data.build_pairs(rows, min_margin=args.min_margin,
                                             max_pairs_per_response=args.max_pairs_per_response or None,
                                             length_balance=args.length_balance, seed=args.seed, source=args.data,
                                             score_columns=list(registry.DIMENSIONS))
        log(data.pairs_summary(pair_stats))
    train_pairs, val_pairs = data.split_by_prompt(pairs, args.val_frac, args.seed)
    log(data.split_summary(train_pairs, val_pairs))
    if not train_pairs:
        raise data.DataError(f"{args.data}: all {len(pairs):,} pairs are in validation prompts (--val-frac {args.val_frac} "
                        f"of {len({prompt_key(p['prompt']) for p in pairs})} prompts): lower --val-frac")
    # fixed, seeded samples (before scoring, so only what is used gets scored): quick runs on big files
    train_pairs = subsample(train_pairs, args.max_train_pairs, args.seed, "training", "--max-train-pairs", log)
    max_val = args.max_val_pairs if args.max_val_pairs is not None else min(256, max(32, len(train_pairs) // 4))
    val_pairs = subsample(val_pairs, max_val, args.seed, "held-out", "--max-val-pairs", log)
    return train_pairs, val_pairs, population


def ensure_scores(pairs, lambdas, args, score_model, tokenizer, rank, world, encoder=None, population=None):
    """Creativity scores for every dimension with lambda > 0: from the pairs' own columns
    ('novelty_chosen', 'novelty_rejected', ...) or, for dimensions they lack, from score.py."""
    missing = [k for k, lam in lambdas.items() if lam > 0
               and any(f"{k}_chosen" not in p or f"{k}_rejected" not in p for p in pairs)]
    if not missing:
        return
    keys = [f"{k}_{side}" for k in missing for side in ("chosen", "rejected")]
    error = None
    if rank == 0:
        try:
            options = {k: v for k, v in score.scorer_options(args, prefix="score-").items()
                       if k in missing or k == "relevance"}  # relevance: what --score-gate uses
            reference = score.read_reference(args.score_reference) if args.score_reference else None
            print(f"scoring {len(pairs):,} pairs for {', '.join(missing)} with score.py ...")
            score.score_pairs(pairs, missing, model=score_model, tokenizer=tokenizer, encoder=encoder,
                              cache_dir=args.score_cache, reference=reference, population=population, source=args.data,
                              normalize=args.score_normalize, gate=getattr(args, "score_gate", None), **options)
        except (data.DataError, ValueError) as e:  # ValueError: a bad option, e.g. --score-quality
            error = data.DataError(f"score.py: {e}")
    if world > 1:  # rank 0 scored; the others take its numbers (or its error)
        box = [(str(error) if error else None, [{k: p[k] for k in keys} for p in pairs] if rank == 0 and not error
                else None)]
        dist.broadcast_object_list(box, src=0)
        message, scores = box[0]
        if message:
            raise data.DataError(message)
        for p, s in zip(pairs, scores):
            p.update(s)
    elif error:
        raise error


def score_tensors(pairs, lambdas, path):
    """{"chosen": {dim: Tensor[n]}, "rejected": {...}} for the dimensions with lambda > 0."""
    out = {"chosen": {}, "rejected": {}}
    for k in (k for k, lam in lambdas.items() if lam > 0):
        for side in ("chosen", "rejected"):
            values = torch.tensor([float(p[f"{k}_{side}"]) for p in pairs], dtype=torch.float32)
            bad = (~torch.isfinite(values)).nonzero()
            if len(bad):
                i = int(bad[0])
                where = f"line {pairs[i]['line']}" if "line" in pairs[i] else f"prompt {pairs[i]['prompt'][:60]!r}"
                raise data.DataError(f"{path}: {where}: {k}_{side} is {values[i].item()} (scores must be finite "
                                f"numbers; fix or drop the row, or pass --lambda-{k} 0)")
            out[side][k] = values
    return out


class Split:
    """One split's pairs, token ids, score tensors and (optionally precomputed) reference log-probs."""

    def __init__(self, pairs, items, scores):
        self.pairs, self.items, self.scores, self.ref = pairs, items, scores, None

    def response_tokens(self, idx):
        return sum(len(self.items[i]["chosen_ids"]) - self.items[i]["chosen_start"] for i in idx)

    def batch(self, idx, pad_id, device):
        b = {k: v.to(device) for k, v in data.collate([self.items[i] for i in idx], pad_id).items()}
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        b["scores_chosen"] = {k: v[t].to(device) for k, v in self.scores["chosen"].items()}
        b["scores_rejected"] = {k: v[t].to(device) for k, v in self.scores["rejected"].items()}
        b["ref"] = None if self.ref is None else self.ref[t.to(self.ref.device)]
        return b


def tokenize_splits(train_pairs, val_pairs, tokenizer, lambdas, args, log):
    """{"train": Split, "val": Split}; pairs that truncation leaves without a response are dropped (counted)."""
    splits = {}
    for name, ps in (("train", train_pairs), ("val", val_pairs)):
        items, tok_stats = (tokenize_pairs(ps, tokenizer, max_len=args.max_len, keep_identical=args.objective == "sft")
                            if ps else ([], None))
        if args.objective == "sft":
            for it in items:
                del it["rejected_ids"], it["rejected_start"]
        kept = [ps[it["index"]] for it in items]
        splits[name] = Split(kept, items, score_tensors(kept, lambdas, args.data))
        log(f"{name}: {len({prompt_key(p['prompt']) for p in kept}):,} prompts; "
            + (tokens_summary(tok_stats) if tok_stats else "no pairs"))
        if name == "train" and not items:
            raise data.DataError(f"{args.data}: all {len(ps):,} training pairs were dropped by truncation: --max-len "
                            f"{args.max_len} leaves no room for a response after the prompt; raise --max-len")
    return splits
