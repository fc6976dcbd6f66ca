"""The pairs a run trains on: rating rows -> pairs (or SFT examples) -> splits (prompt-disjoint, or MuCE's `Set`
column) -> seeded samples -> creativity scores (computed by score.py where the data lacks them) -> token ids and
score tensors.

crpo.py calls add_flags (the pair-rule and score-population flags), then load_pairs, ensure_scores and
tokenize_splits in that order; a Split hands out batches of pairs, an SftSplit (--objective sft) batches of single
sequences. Problems with the data raise data.DataError with the file, the line or the flag, and what to do.

--pairs divpo (divpo_pairs): DivPO's pairs (Lanchantin et al. 2025) in place of the score-gap rules: per seeded pool
of a prompt's responses, the most diverse high-rated response against the least diverse low-rated one.

Score population (--score-population): the responses each prompt's scores are computed and min-max normalised
over. "chosen" (the default with --weight-on chosen): the responses that are chosen in that prompt's pairs, as
the paper ("relative to the set of preferred responses") and the authors' src/crpo/extend_crpo_data.py (without
--include-rejected); only s_k(y_w) is computed. "all": chosen and rejected responses of the prompt's pairs (their
--include-rejected), needed by --weight-on margin (its default there).
"""
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist

import data
import encoder as sentence_encoder
import registry
import score
import splits
from conversation import prompt_key
from measures import diversity
from tokenizer import collate_sft, sft_tokens_summary, tokenize_pairs, tokenize_sft, tokens_summary


def add_flags(p):
    """crpo.py's flags for the authors' pair rules and split (splits.py), the score population, and DivPO pairs."""
    splits.add_pair_rule_flags(p)
    add_divpo_flags(p)
    p.add_argument("--score-population", choices=("chosen", "all"), default=None, help="responses each prompt's "
                   "scores are computed and normalised over: those chosen in its pairs (the paper's and the authors'), "
                   "or chosen and rejected (default: chosen; all with --weight-on margin, which needs both)")


def add_divpo_flags(p):
    """--pairs and the DivPO options (divpo_pairs)."""
    p.add_argument("--pairs", choices=("scores", "divpo"), default="scores", help="how rating rows become pairs: "
                   "scores = every pair with a score gap (the min-margin and cap rules above); divpo = DivPO, per pool "
                   "the most diverse high-rated response against the least diverse low-rated one (Lanchantin et al. "
                   "2025; --divpo-*)")
    p.add_argument("--divpo-pool", type=int, default=8, help="divpo: responses per pool (seeded disjoint pools of each "
                   "prompt, one pair per pool; 0 = one pool of all the prompt's responses, the paper's setting)")
    p.add_argument("--divpo-high", type=float, default=3.0, help="divpo: a response is high-rated (a chosen "
                   "candidate) when its score >= this (the file's own scale; 1-5 in data/dt_ratings.jsonl.gz)")
    p.add_argument("--divpo-low", type=float, default=2.0, help="divpo: low-rated (a rejected candidate) when its "
                   "score <= this; must be below --divpo-high")


def divpo_pools(n, pool_size, rng):
    """Indices 0..n-1 shuffled with rng and cut into k = max(1, n // pool_size) disjoint pools of n // k or
    n // k + 1 (pool_size 0 or >= n: one pool of all n)."""
    order = list(range(n))
    rng.shuffle(order)
    k = 1 if pool_size <= 0 else max(1, n // pool_size)
    return [order[i * n // k:(i + 1) * n // k] for i in range(k)]


def divpo_pairs(rows, embed, *, pool_size=8, high=3.0, low=2.0, seed=0):
    """DivPO pairs from rating rows (Lanchantin et al. 2025, "Diverse Preference Optimization", arXiv:2501.18101,
    offline variant with human ratings as the reward) -> (pairs, stats).

    Per prompt x, its responses are cut into seeded disjoint pools P (divpo_pools; random.Random(f"{seed}|{x}")).
    In a pool, with e(y) the unit embedding and s(y) the rating:

        div(y)   = 1/(|P|-1) sum_{y' in P, y' != y} (1 - cos(e(y), e(y')))      (measures.diversity, score.py's)
        Y_high   = {y in P : s(y) >= high},   Y_low = {y in P : s(y) <= low}
        y_w      = argmax_{y in Y_high} div(y)      the most diverse of the well-rated
        y_l      = argmin_{y in Y_low}  div(y)      the least diverse of the poorly rated

    one pair (y_w, y_l) per pool (ties: the earlier in the pool), trained with the plain DPO loss. A pool with
    Y_high empty, or else Y_low empty, gives no pair (counted once, in stats["no_high"] or stats["no_low"]); one
    prompt with one response gives none (stats["single_response_prompts"]). Thresholds are fixed values of the rating scale, not
    the paper's per-pool reward quantile: human ratings share one scale across prompts, and a quantile would
    call the best of a uniformly poor pool "high". high > low, so s(y_w) > s(y_l) and y_w != y_l.
    embed: texts -> [n, d] array (score.embed_texts through an encoder, or a test double).
    ValueError for high <= low or pool_size < 0; data.DataError when no pool gives a pair."""
    if not (math.isfinite(high) and math.isfinite(low) and high > low):
        raise ValueError(f"--divpo-high ({high}) must be a number above --divpo-low ({low})")
    if pool_size < 0:
        raise ValueError(f"--divpo-pool must be >= 0, not {pool_size}")
    groups = {}
    for r in rows:
        groups.setdefault(prompt_key(r["prompt"]), []).append(r)
    stats = {"prompts": len(groups), "single_response_prompts": 0, "pools": 0, "no_high": 0, "no_low": 0,
             "pairs": 0, "pool_size": pool_size, "high": high, "low": low}
    pairs = []
    for key, group in groups.items():
        if len(group) < 2:
            stats["single_response_prompts"] += 1
            continue
        E = np.asarray(embed([r["response"] for r in group]), dtype=np.float64)
        for pool in divpo_pools(len(group), pool_size, random.Random(f"{seed}|{key}")):
            stats["pools"] += 1
            div = diversity(E[pool])
            scores = np.array([group[i]["score"] for i in pool], dtype=np.float64)
            hi, lo = np.flatnonzero(scores >= high), np.flatnonzero(scores <= low)
            stats["no_high"] += not len(hi)
            stats["no_low"] += not len(lo) and len(hi) > 0  # each skipped pool counted once
            if not len(hi) or not len(lo):
                continue
            w, l = pool[hi[np.argmax(div[hi])]], pool[lo[np.argmin(div[lo])]]
            a, b = group[w], group[l]
            pairs.append({"prompt": a["prompt"], "chosen": a["response"], "rejected": b["response"],
                          "score_chosen": a["score"], "score_rejected": b["score"],
                          "diversity_pool_chosen": float(div[hi].max()), "diversity_pool_rejected": float(div[lo].min())})
    stats["pairs"] = len(pairs)
    if not pairs:
        raise data.DataError(f"no DivPO pairs: {stats['pools']} pools, {stats['no_high']} without a response scored "
                             f">= --divpo-high {high:g}, {stats['no_low']} without one <= --divpo-low {low:g} (the "
                             f"file's own score scale: lower --divpo-high, raise --divpo-low or --divpo-pool)")
    return pairs, stats


def divpo_summary(stats):
    return (f"divpo: {stats['pairs']:,} pairs from {stats['pools']:,} pools of {stats['prompts']:,} prompts "
            f"(pool {stats['pool_size'] or 'all'}; {stats['no_high']:,} pools without a response >= {stats['high']:g}, "
            f"{stats['no_low']:,} without one <= {stats['low']:g}, skipped; {stats['single_response_prompts']:,} "
            f"prompts with one response)")


def build_divpo_split(rows, args, log):
    """(train, val) DivPO pairs: rows split by --split-column (pairs inside each part) or pairs split by prompt."""
    if rows and rows[0]["kind"] != "rating":
        raise data.DataError(f"{args.data}: --pairs divpo needs rating rows {{prompt, response, score}}, not "
                             f"preference rows")
    enc = sentence_encoder.load_encoder(args.score_encoder)

    def embed(texts):  # cached like every score.py embedding
        vectors = score.embed_texts(enc, list(texts), cache_dir=args.score_cache, show_progress=False)
        return np.stack([vectors[t] for t in texts])
    options = dict(pool_size=args.divpo_pool, high=args.divpo_high, low=args.divpo_low, seed=args.seed)
    try:
        if not args.split_column:
            built, stats = divpo_pairs(rows, embed, **options)
            log(divpo_summary(stats))
            return splits.split_by_prompt(built, args.val_frac, args.seed)
        parts, split_stats = splits.split_rows(rows, args.split_column, args.data)
        log(splits.split_rows_summary(split_stats))
        train, stats = divpo_pairs(parts["train"], embed, **options)
        log("train: " + divpo_summary(stats))
    except (ValueError, data.DataError) as e:
        raise data.DataError(f"{args.data}: {e}") from None
    val = []
    if parts["validation"]:
        try:
            val, stats = divpo_pairs(parts["validation"], embed, **options)
            log("validation: " + divpo_summary(stats))
        except data.DataError as e:
            log(f"validation: {e}")
    return train, val


def score_population(args):
    """"chosen" or "all" (see the module docstring); --weight-on margin needs the rejected responses' scores."""
    population = args.score_population or ("all" if args.weight_on == "margin" else "chosen")
    if population == "chosen" and args.weight_on == "margin":
        raise data.DataError("--weight-on margin needs scores of the rejected responses, and --score-population "
                             "chosen scores only the chosen ones: use --score-population all, or --weight-on chosen")
    return population


def subsample(pairs, limit, seed, what, flag, log=print):
    """At most `limit` of the pairs (0 = all), a seeded sample in the original order."""
    if not 0 < limit < len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    log(f"using {limit:,} of the {len(pairs):,} {what} pairs ({flag})")
    return [pairs[i] for i in keep]


def sft_examples(rows, args):
    """SFT examples {"prompt", "chosen": the response to imitate, "line"} (no rejected side; tokenize_sft's input):
    rating rows with score >= --sft-min-score, or in the top --sft-top-frac of their prompt; the chosen side of
    preference rows (each (prompt, chosen) once)."""
    if rows and rows[0]["kind"] == "preference":
        unique = {(prompt_key(r["prompt"]), r["chosen"]): r for r in rows}
        return [{"prompt": r["prompt"], "chosen": c, "line": r.get("line")} for (_, c), r in unique.items()]
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
    return [{"prompt": r["prompt"], "chosen": r["response"], "line": r["line"]} for r in keep]


def split_sft(rows, args, log):
    """(train, val) SFT examples, the rows split by --split-column first (Training / Validation; the rest never)."""
    try:
        parts, stats = splits.split_rows(rows, args.split_column, args.data)
    except ValueError as e:
        raise data.DataError(str(e)) from None
    log(splits.split_rows_summary(stats))
    if not parts["train"]:
        raise data.DataError(f"{args.data}: no row has {args.split_column} = Training (nothing to train on)")
    val = []
    try:
        val = sft_examples(parts["validation"], args) if parts["validation"] else []
    except data.DataError as e:
        log(f"validation: no SFT examples ({e})")
    train = sft_examples(parts["train"], args)
    log(f"sft: {len(train):,} responses to train, {len(val):,} to validate")
    return train, val


def load_pairs(args, log):
    """(train, val, population) from --data: pairs (SFT: examples) split by prompt (or --split-column) and optionally
    subsampled, and {prompt_key: every response to that prompt in the file}, what a scorer that compares with others
    (originality) compares with."""
    if not os.path.isfile(args.data):
        raise data.DataError(f"{args.data}: no such file (pass --data with a JSON Lines file)")
    rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows, score_columns=list(registry.DIMENSIONS),
                                  split_column=args.split_column)
    log(report.summary())
    population = {}
    for r in rows:
        population.setdefault(prompt_key(r["prompt"]), {}).update(dict.fromkeys(
            [r["response"]] if r["kind"] == "rating" else [r["chosen"], r["rejected"]]))
    population = {p: list(rs) for p, rs in population.items()}
    if args.objective == "sft" and args.split_column:
        train_pairs, val_pairs = split_sft(rows, args, log)
        pairs = train_pairs + val_pairs
    elif args.objective == "sft":
        pairs = sft_examples(rows, args)
        log(f"sft: {len(pairs):,} responses over {len({prompt_key(p['prompt']) for p in pairs}):,} prompts")
        train_pairs, val_pairs = splits.split_by_prompt(pairs, args.val_frac, args.seed)
    elif getattr(args, "pairs", "scores") == "divpo":
        train_pairs, val_pairs = build_divpo_split(rows, args, log)
        pairs = train_pairs + val_pairs
    else:
        train_pairs, val_pairs = data.build_split_pairs(rows, split_column=args.split_column, val_frac=args.val_frac,
                                                        seed=args.seed, source=args.data, log=log,
                                                        **splits.pair_options(args, list(registry.DIMENSIONS)))
        pairs = train_pairs + val_pairs
    log(splits.split_summary(train_pairs, val_pairs))
    if not train_pairs:
        raise data.DataError(f"{args.data}: all {len(pairs):,} pairs are in validation prompts (--val-frac {args.val_frac} "
                        f"of {len({prompt_key(p['prompt']) for p in pairs})} prompts): lower --val-frac")
    # fixed, seeded samples (before scoring, so only what is used gets scored): quick runs on big files
    train_pairs = subsample(train_pairs, args.max_train_pairs, args.seed, "training", "--max-train-pairs", log)
    max_val = args.max_val_pairs if args.max_val_pairs is not None else min(256, max(32, len(train_pairs) // 4))
    val_pairs = subsample(val_pairs, max_val, args.seed, "held-out", "--max-val-pairs", log)
    return train_pairs, val_pairs, population


def score_sides(args):
    """The sides whose scores the weight reads: s_k(y_w) only with --weight-on chosen, both with margin."""
    return ("chosen",) if args.weight_on == "chosen" else ("chosen", "rejected")


def ensure_scores(pairs, lambdas, args, score_model, tokenizer, rank, world, encoder=None, population=None):
    """Creativity scores for every dimension with lambda > 0 on the sides the weight reads (score_sides): from
    the pairs' own columns ('novelty_chosen', 'novelty_rejected', ...) or, for dimensions they lack, from score.py
    over --score-population. A file with only '*_chosen' columns trains with --weight-on chosen; with margin it
    stops, naming the missing '*_rejected' columns."""
    active = [k for k, lam in lambdas.items() if lam > 0]
    has = lambda k, side: all(f"{k}_{side}" in p for p in pairs)  # noqa: E731
    if args.weight_on == "margin" and any(has(k, "chosen") and not has(k, "rejected") for k in active):
        given = [k for k in active if has(k, "chosen") and not has(k, "rejected")]
        raise data.DataError(f"{args.data}: --weight-on margin needs {', '.join(f'{k}_rejected' for k in given)}, "
                             f"and the file has only {', '.join(f'{k}_chosen' for k in given)} (as the authors' pair "
                             f"files): train with --weight-on chosen (the paper's equation, what their scripts trained "
                             f"with), or add the *_rejected columns (score.py)")
    missing = [k for k in active if not all(has(k, side) for side in score_sides(args))]
    if not missing:
        return
    sides = ("chosen",) if score_population(args) == "chosen" else ("chosen", "rejected")
    keys = [f"{k}_{side}" for k in missing for side in sides]
    error = None
    if rank == 0:
        try:
            options = {k: v for k, v in score.scorer_options(args, prefix="score-").items()
                       if k in missing or k == "relevance"}  # relevance: what --score-gate uses
            reference = score.read_reference(args.score_reference) if args.score_reference else None
            print(f"scoring {len(pairs):,} pairs for {', '.join(missing)} with score.py, over the {' and '.join(sides)} "
                  f"responses of each prompt's pairs (--score-population) ...")
            score.score_pairs(pairs, missing, sides=sides, model=score_model, tokenizer=tokenizer, encoder=encoder,
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


def score_tensors(pairs, lambdas, path, sides=("chosen", "rejected")):
    """{"chosen": {dim: Tensor[n]}, "rejected": {...}} for the dimensions with lambda > 0, on the given sides."""
    out = {"chosen": {}, "rejected": {}}
    for k in (k for k, lam in lambdas.items() if lam > 0):
        for side in sides:
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
    """One split's pairs, token ids (tokenize_pairs' items), score tensors and (optionally precomputed) reference
    log-probs. batch: chosen rows then rejected rows [2B, T] (collate), their scores and reference log-probs."""

    def __init__(self, pairs, items, scores):
        self.pairs, self.items, self.scores, self.ref = pairs, items, scores, None

    def batch(self, idx, pad_id, device):
        b = {k: v.to(device) for k, v in data.collate([self.items[i] for i in idx], pad_id).items()}
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        b["scores_chosen"] = {k: v[t].to(device) for k, v in self.scores["chosen"].items()}
        b["scores_rejected"] = {k: v[t].to(device) for k, v in self.scores["rejected"].items()}
        b["ref"] = None if self.ref is None else self.ref[t.to(self.ref.device)]
        return b


class SftSplit:
    """One split's SFT examples (sft_examples) and their token ids (tokenizer.SftSequence): no rejected side, no
    scores, no reference. batch: one row per example [B, T] (collate_sft)."""

    def __init__(self, examples, items):
        self.pairs, self.items = examples, items  # .pairs: the name the training loop reads for either kind

    def response_tokens(self, idx):
        """Response tokens of the examples idx: what sft_loss averages over in a step."""
        return sum(self.items[i].response_tokens for i in idx)

    def batch(self, idx, pad_id, device):
        return {k: v.to(device) for k, v in collate_sft([self.items[i] for i in idx], pad_id).items()}


def tokenize_splits(train_pairs, val_pairs, tokenizer, lambdas, args, log):
    """{"train": Split, "val": Split} of pairs, or with --objective sft {"train": SftSplit, "val": SftSplit} of
    SFT examples; those that truncation leaves without a response are dropped (counted)."""
    splits = {}
    for name, ps in (("train", train_pairs), ("val", val_pairs)):
        if args.objective == "sft":
            items, tok_stats = tokenize_sft(ps, tokenizer, max_len=args.max_len) if ps else ([], None)
            kept = [ps[it.index] for it in items]
            splits[name], summary = SftSplit(kept, items), sft_tokens_summary
        else:
            items, tok_stats = tokenize_pairs(ps, tokenizer, max_len=args.max_len) if ps else ([], None)
            kept = [ps[it["index"]] for it in items]
            splits[name] = Split(kept, items, score_tensors(kept, lambdas, args.data, score_sides(args)))
            summary = tokens_summary
        log(f"{name}: {len({prompt_key(p['prompt']) for p in kept}):,} prompts; "
            + (summary(tok_stats) if tok_stats else "no pairs"))
        if name == "train" and not items:
            raise data.DataError(f"{args.data}: all {len(ps):,} training pairs were dropped by truncation: --max-len "
                            f"{args.max_len} leaves no room for a response after the prompt; raise --max-len")
    return splits
