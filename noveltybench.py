"""NoveltyBench (Zhang et al. 2025, arXiv:2504.05228): distinct classes among k generations and their
quality-weighted utility, with the benchmark's own partition, short-answer rule, patience and reward thresholds
(facts from novelty-bench/novelty-bench, src/partition.py and src/score.py, commit 5b22b53), and a pluggable
equivalence judge (the benchmark's fine-tuned DeBERTa judge is not available here; crpo's local one is calibrated
on the published calibration partitions, see README "NoveltyBench").

For one prompt with generations g_0..g_{k-1} (in sampling order):

    partition: g_0 opens class 0; g_j joins the first class c whose FIRST member r_c is equivalent to it,
               equivalent(r_c, g_j), else opens a new class          (labels = 0, 1, ... in order of opening)
    short-answer rule: when the longer of the two has n <= 5 lower-cased whitespace words,
               equivalent  <=>  2 |set(words(a)) & set(words(b))| >= n   (the judge is not asked)
    distinct = number of classes                                         (1..k)
    u_i      = q_i if g_i opens a class, else 0;  q_i = quality level of g_i in 1..10
    utility  = sum_i p^i u_i / sum_i p^i,  patience p = 0.8             (0..10)
    q_i      = 1 + |{t in thresholds : t < reward_i}|                    (bisect_left over 9 increasing thresholds)

    python noveltybench.py score --data generations.jsonl --out scored.jsonl [--quality rm PATH | judge | none]
    python noveltybench.py agreement [--judge local]     # vs the official partitions of the calibration file
    python noveltybench.py calibrate                      # fits the local judge's constants (prints them)
"""
import argparse
import bisect
import json
import math
import os
import re
import sys
import time
from collections import Counter

import numpy as np

import checkpoint
import data
import encoder as sentence_encoder
import files
import score
from intervals import bootstrap_interval
from measures import unit_rows
from model import ModelError

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "noveltybench")
CURATED = os.path.join(DATA_DIR, "curated.jsonl")
CALIBRATION = os.path.join(DATA_DIR, "gemini-1.5-pro_partitions_calibration.jsonl")
K = 10  # generations per prompt, as the benchmark
PATIENCE = 0.8
SHORT_ANSWER_WORDS = 5
# Skywork-Reward-Gemma-2-27B-v0.2 reward -> level 1..10 (the benchmark's src/score.py reward_thresholds).
SKYWORK_THRESHOLDS = (-7.71875, -6.28125, -6.0, -5.71875, -5.5, -5.0, -4.375, -3.4375, -2.046875)
# Any score in [0, 1] (the default judge's p(Yes); sigmoid(reward) of another reward model): ten equal bins.
PROBABILITY_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
UNIGRAM_THRESHOLD = 0.458  # the benchmark's "unigram" judge: ROUGE-1 F1 > this
# The local judge: equivalent  <=>  LOCAL_COSINE_WEIGHT cos(e(a), e(b)) + (1 - LOCAL_COSINE_WEIGHT) rouge1(a, b)
# >= LOCAL_THRESHOLD. Fitted by `python noveltybench.py calibrate` on the 48 calibration prompts (README).
LOCAL_COSINE_WEIGHT = 0.4
LOCAL_THRESHOLD = 0.53


class BenchmarkError(Exception):
    """Bad input (a generations file, a flag): the CLI prints it on one line and exits 1."""


# ----------------------------------------------------------------------------------------------------
# Partition


def short_answer_equivalent(a, b):
    """The benchmark's short-answer rule: with wa, wb the lower-cased whitespace words of a and b and
    n = max(|wa|, |wb|): n <= 5 -> (2 |set(wa) & set(wb)| >= n); longer -> None (ask the judge).
    Two empty texts (n = 0) are equivalent."""
    wa, wb = a.strip().lower().split(), b.strip().lower().split()
    n = max(len(wa), len(wb))
    if n > SHORT_ANSWER_WORDS:
        return None
    return 2 * len(set(wa) & set(wb)) >= n


def partition(n, equivalent):
    """Class label of each of n generations: generation j joins the first class whose first member r has
    equivalent(r, j) (r < j; asked in order of the classes), else opens the next class. -> [int] * n.
    The benchmark's loop (each class sweeps the unassigned later generations) gives the same labels."""
    reps, labels = [], []
    for j in range(n):
        label = next((c for c, r in enumerate(reps) if equivalent(r, j)), None)
        if label is None:
            label = len(reps)
            reps.append(j)
        labels.append(label)
    return labels


def judged_partition(generations, same, short_answer_rule=True):
    """partition() with the short-answer rule first (unless short_answer_rule is False) and same[r, j] (the judge's
    bool matrix) otherwise."""
    def equivalent(r, j):
        rule = short_answer_equivalent(generations[r], generations[j]) if short_answer_rule else None
        return bool(same[r, j]) if rule is None else rule
    return partition(len(generations), equivalent)


# ----------------------------------------------------------------------------------------------------
# Equivalence judges: fn(prompt, generations, ctx) -> bool matrix [k, k], [r, j] = "g_j is equivalent to g_r"
# (only r < j is read). Register a new one with @judge("name"); pick it with --judge name.

JUDGES = {}


def judge(name):
    def register(fn):
        JUDGES[name] = fn
        return fn
    return register


class JudgeContext:
    """What judges share: the sentence encoder (the embedded default unless given) and the embedding cache."""

    def __init__(self, encoder=None, cache_dir=None, show_progress=False):
        self.encoder, self.cache_dir, self.show_progress = encoder, cache_dir, show_progress

    def embed(self, texts):
        if self.encoder is None:
            self.encoder = sentence_encoder.load_encoder(None)
        vectors = score.embed_texts(self.encoder, list(texts), cache_dir=self.cache_dir, desc="embed generations",
                                    show_progress=self.show_progress)
        return unit_rows(np.stack([vectors[t] for t in texts]))


def rouge_words(text):
    """ROUGE's default tokens: lower-cased, every run of characters outside [a-z0-9] is a separator."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def rouge1(a, b):
    """ROUGE-1 F1 = 2 P R / (P + R), P = m / |b|, R = m / |a|, m = sum_w min(count_a(w), count_b(w)); 0 if m = 0."""
    ca, cb = Counter(rouge_words(a)), Counter(rouge_words(b))
    m = sum((ca & cb).values())
    return 0.0 if m == 0 else 2 * m / (sum(ca.values()) + sum(cb.values()))


def pair_features(generations, ctx):
    """(cos [k, k], rouge1 [k, k]) of every pair of generations (float64)."""
    E = ctx.embed(generations)
    k = len(generations)
    overlap = np.array([[rouge1(generations[i], generations[j]) for j in range(k)] for i in range(k)])
    return E @ E.T, overlap


@judge("local")
def local_judge(prompt, generations, ctx):
    """w cos(e(r), e(g)) + (1 - w) rouge1(r, g) >= t with the calibrated w, t (LOCAL_COSINE_WEIGHT, LOCAL_THRESHOLD)."""
    cos, overlap = pair_features(generations, ctx)
    return LOCAL_COSINE_WEIGHT * cos + (1 - LOCAL_COSINE_WEIGHT) * overlap >= LOCAL_THRESHOLD


@judge("unigram")
def unigram_judge(prompt, generations, ctx):
    """The benchmark's own "unigram" alternative: ROUGE-1 F1 > 0.458 (no embeddings)."""
    k = len(generations)
    return np.array([[rouge1(generations[i], generations[j]) > UNIGRAM_THRESHOLD for j in range(k)] for i in range(k)])


def get_judge(name):
    if name not in JUDGES:
        raise BenchmarkError(f"--judge {name}: not a registered judge (choose from: {', '.join(JUDGES)})")
    return JUDGES[name]


# ----------------------------------------------------------------------------------------------------
# Agreement of a judge's partitions with reference (official) partitions


def same_class_counts(pred, gold):
    """(tp, fp, fn) over the pairs i < j of "same class": tp = same in both, fp = same only in pred, fn = only in gold."""
    tp = fp = fn = 0
    for i in range(len(gold)):
        for j in range(i + 1, len(gold)):
            p, g = pred[i] == pred[j], gold[i] == gold[j]
            tp, fp, fn = tp + (p and g), fp + (p and not g), fn + (g and not p)
    return tp, fp, fn


def adjusted_rand_index(a, b):
    """ARI (Hubert & Arabie 1985) = (sum_ij C(n_ij, 2) - E) / ((A + B) / 2 - E), A = sum_i C(a_i, 2),
    B = sum_j C(b_j, 2), E = A B / C(n, 2), n_ij the contingency table of the two labelings. When both put
    everything in one class (or both make singletons) the denominator is 0: 1.0 (identical), as scikit-learn."""
    c2 = lambda x: x * (x - 1) / 2  # noqa: E731
    n = len(a)
    nij = sum(c2(v) for v in Counter(zip(a, b)).values())
    A, B = sum(c2(v) for v in Counter(a).values()), sum(c2(v) for v in Counter(b).values())
    expected = A * B / c2(n) if n > 1 else 0.0
    denom = (A + B) / 2 - expected
    return 1.0 if denom == 0 else (nij - expected) / denom


def agreement(pred_partitions, gold_partitions):
    """{"precision", "recall"} of "same class" over all pairs pooled, mean "ari" over prompts, mean
    "abs_distinct_error" = mean_p |distinct_pred - distinct_gold|, mean distinct of each, "prompts"."""
    counts = np.array([same_class_counts(p, g) for p, g in zip(pred_partitions, gold_partitions)]).sum(0)
    tp, fp, fn = (int(x) for x in counts)
    dp = [len(set(p)) for p in pred_partitions]
    dg = [len(set(g)) for g in gold_partitions]
    return {"precision": tp / (tp + fp) if tp + fp else float("nan"), "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "ari": float(np.mean([adjusted_rand_index(p, g) for p, g in zip(pred_partitions, gold_partitions)])),
            "abs_distinct_error": float(np.mean(np.abs(np.subtract(dp, dg)))), "distinct": float(np.mean(dp)),
            "official_distinct": float(np.mean(dg)), "prompts": len(gold_partitions)}


def calibrate(rows, feature_sets, *, weights=np.linspace(0, 1, 11), thresholds=np.arange(0.2, 1.0, 0.01), folds=4,
              short_answer_rule=True):
    """Fit the local judge: the (w, t) maximising mean ARI with the rows' official partitions, over the grid
    weights x thresholds; feature_sets[i] = pair_features of row i. Also a `folds`-fold cross-validation over
    prompts (fit on the other folds, partition the held-out fold): the agreement to expect on unseen prompts.
    -> {"weight", "threshold", "in_sample": agreement(...), "cross_validated": agreement(...)}."""
    def partitions(idx, w, t):
        return [judged_partition(rows[i]["generations"], w * feature_sets[i][0] + (1 - w) * feature_sets[i][1] >= t,
                                 short_answer_rule) for i in idx]

    def fit(idx):
        gold = [rows[i]["partition"] for i in idx]
        best = max(((np.mean([adjusted_rand_index(p, g) for p, g in zip(partitions(idx, w, t), gold)]), -abs(w - 0.5), w, t)
                    for w in weights for t in thresholds))  # ties: the weight nearer 0.5, then the higher threshold
        return float(best[2]), round(float(best[3]), 4)

    everything = list(range(len(rows)))
    w, t = fit(everything)
    held_out_pred, held_out_gold = [], []
    for f in range(folds):
        test = everything[f::folds]
        wf, tf = fit([i for i in everything if i % folds != f])
        held_out_pred += partitions(test, wf, tf)
        held_out_gold += [rows[i]["partition"] for i in test]
    return {"weight": w, "threshold": t, "in_sample": agreement(partitions(everything, w, t), [r["partition"] for r in rows]),
            "cross_validated": agreement(held_out_pred, held_out_gold), "folds": folds}


# ----------------------------------------------------------------------------------------------------
# Quality and utility


def quality_level(reward, thresholds):
    """1 + |{t in thresholds : t < reward}| (bisect_left, as the benchmark): 9 increasing thresholds -> 1..10;
    a reward equal to a threshold stays in the lower level."""
    return bisect.bisect_left(thresholds, reward) + 1


def quality_mapping(spec):
    """How a quality scorer's raw value becomes a level 1..10: (thresholds, transform, comparable, note).
    rm PATH of Skywork-Reward-Gemma-2-27B-v0.2 -> the benchmark's thresholds on the raw reward (comparable);
    another rm -> sigmoid(reward) in ten equal bins; judge (p(Yes)) -> p in ten equal bins (not comparable)."""
    variant, arg = score.parse_variant("quality", spec)
    if variant == "rm" and "skywork-reward-gemma-2-27b-v0.2" in os.path.normpath(arg).lower():
        return SKYWORK_THRESHOLDS, float, True, "Skywork-Reward-Gemma-2-27B-v0.2 with the benchmark's 9 thresholds"
    if variant == "rm":
        return (PROBABILITY_THRESHOLDS, lambda r: 1 / (1 + math.exp(-r)), False,
                "level = 1 + floor(10 sigmoid(reward)) (capped at 10): not the benchmark's reward model")
    if variant == "judge":
        return (PROBABILITY_THRESHOLDS, float, False,
                "level = 1 + floor(10 p(Yes)) of crpo's judge (capped at 10): not the benchmark's reward model")
    raise BenchmarkError(f"--quality {spec}: NoveltyBench needs a per-generation scorer (judge or rm PATH)")


def generation_scores(labels, levels):
    """u_i = levels[i] when generation i opens its class (labels[i] not seen before), else 0."""
    seen, out = set(), []
    for label, q in zip(labels, levels):
        out.append(0 if label in seen else q)
        seen.add(label)
    return out


def utility(scores, patience=PATIENCE):
    """sum_i p^i u_i / sum_i p^i over the generations in order (i = 0, 1, ...)."""
    w = patience ** np.arange(len(scores), dtype=np.float64)
    return float((w * np.asarray(scores, dtype=np.float64)).sum() / w.sum())


def quality_levels(rows, spec, *, model=None, tokenizer=None, cache_dir=None, batch_size=16, show_progress=True):
    """Level 1..10 of every generation of every row with the quality scorer `spec` (score.py's registry),
    -> ([[level] per row], mapping note, comparable)."""
    thresholds, transform, comparable, note = quality_mapping(spec)
    groups = [{"prompt": r["prompt"], "responses": list(dict.fromkeys(r["generations"]))} for r in rows]
    results, _ = score.score_groups(groups, ["quality"], model=model, tokenizer=tokenizer, cache_dir=cache_dir,
                                    batch_size=batch_size, show_progress=show_progress, quality=spec)
    levels = []
    for r, g, res in zip(rows, groups, results):
        raw = dict(zip(g["responses"], res["quality_raw"]))
        levels.append([quality_level(transform(raw[t]), thresholds) for t in r["generations"]])
    return levels, note, comparable


# ----------------------------------------------------------------------------------------------------
# Files, scoring rows, summaries


def read_jsonl(path, required):
    """Rows of a JSON Lines file, each an object with the `required` fields; BenchmarkError 'FILE:LINE: ...'."""
    rows = []
    for n, row in files.read_json_objects(path, BenchmarkError):
        missing = [f for f in required if f not in row]
        if missing:
            raise BenchmarkError(f"{path}:{n}: no {', '.join(missing)} field (each row needs {', '.join(required)})")
        if "generations" in required and (not isinstance(row["generations"], list) or not row["generations"]
                                          or not all(isinstance(g, str) for g in row["generations"])):
            raise BenchmarkError(f"{path}:{n}: `generations` must be a non-empty list of strings")
        rows.append(row)
    if not rows:
        raise BenchmarkError(f"{path}: no rows")
    return rows


def read_curated(path=CURATED, limit=None):
    """The curated prompts [{"id", "category", "prompt", ...}], the first `limit` of them."""
    return read_jsonl(path, ("id", "category", "prompt"))[:limit]


def score_rows(rows, judge_fn, ctx, levels=None, patience=PATIENCE, short_answer_rule=True):
    """Each row (id, prompt, generations) copied with "partition" and "distinct" (classes; a "partition" already
    there is kept as "input_partition"), and given quality
    levels [[1..10] per row]: "generation_scores" (u_i), "partition_scores" (u of each class's first member)
    and "utility"."""
    out = []
    for i, r in enumerate(rows):
        labels = judged_partition(r["generations"], judge_fn(r["prompt"], r["generations"], ctx), short_answer_rule)
        row = {**r, "partition": labels, "distinct": len(set(labels))}
        if "partition" in r:  # a partition the input brought (e.g. the official one) is kept, renamed
            row["input_partition"] = r["partition"]
        if levels is not None:
            u = generation_scores(labels, levels[i])
            first = {}
            for label, q in zip(labels, levels[i]):
                first.setdefault(label, q)
            row.update(generation_scores=u, partition_scores=list(first.values()), utility=utility(u, patience))
        out.append(row)
    return out


def summarize(rows, categories=None, *, n_boot=1000, seed=0):
    """{"distinct": {"mean", "lo", "hi"}, "utility": {...} (when scored), "prompts", "per_category": {name: {...}}}:
    means over prompts with 95% bootstrap intervals over prompts; categories = {id: category} (curated.jsonl)."""
    def block(rs):
        out = {"prompts": len(rs)}
        for m in ("distinct", "utility"):
            if rs and all(m in r for r in rs):
                mean, lo, hi = bootstrap_interval([r[m] for r in rs], n_boot=n_boot, seed=seed)
                out[m] = {"mean": mean, "lo": lo, "hi": hi}
        return out
    summary = block(rows)
    if categories:
        names = sorted({categories.get(r.get("id"), "unknown") for r in rows})
        summary["per_category"] = {c: block([r for r in rows if categories.get(r.get("id"), "unknown") == c]) for c in names}
    return summary


def summary_lines(name, s):
    """Human-readable lines: distinct and utility [interval], then per category."""
    def cell(b, m):
        return f"{b[m]['mean']:.3g} [{b[m]['lo']:.3g}, {b[m]['hi']:.3g}]" if m in b else "-"
    lines = [f"{name}: distinct {cell(s, 'distinct')}  utility {cell(s, 'utility')}  ({s['prompts']} prompts)"]
    for c, b in s.get("per_category", {}).items():
        lines.append(f"  {c}: distinct {cell(b, 'distinct')}  utility {cell(b, 'utility')}  ({b['prompts']} prompts)")
    return lines


def run_models(args, specs, generate_all, load_model):
    """eval.py --benchmark noveltybench: k generations of each model on the curated prompts (the first --limit),
    partitioned by --judge, utility with --score-quality mapped to 1..10. -> {"models": {...}, "config": {...}}.
    generate_all / load_model: eval.py's sampler and checkpoint loader."""
    prompts = read_curated(limit=args.limit)
    categories = {p["id"]: p["category"] for p in prompts}
    judge_fn, spec = get_judge(args.judge), " ".join(args.score_quality)
    _, _, comparable, note = quality_mapping(spec)  # bad flags fail before any model loads
    scorer_path = None if args.scorer_model in (None, "default") else os.path.expanduser(args.scorer_model)
    scorer, scorer_tok = load_model(scorer_path, device=args.device)
    ctx = JudgeContext(sentence_encoder.load_encoder(args.encoder, device=args.device), args.cache_dir)
    print(f"NoveltyBench: {len(prompts)} curated prompts, k = {args.k}, temperature {args.temperature}, judge "
          f"{args.judge}, quality {spec}: {note}")
    results = {}
    for name, path in specs:
        m, tok = (scorer, scorer_tok) if path == scorer_path else load_model(path, device=args.device)
        t0 = time.perf_counter()
        texts = generate_all(m, tok, [p["prompt"] for p in prompts], k=args.k, max_new_tokens=args.max_new_tokens,
                             temperature=args.temperature, top_p=args.top_p, seed=args.seed, batch_size=args.batch_size)
        rows = [{"id": p["id"], "prompt": p["prompt"], "generations": texts[p["prompt"]]} for p in prompts]
        levels, _, _ = quality_levels(rows, spec, model=scorer, tokenizer=scorer_tok, cache_dir=args.cache_dir,
                                      batch_size=args.batch_size)
        scored = score_rows(rows, judge_fn, ctx, levels)
        print(f"{name}: {len(prompts) * args.k} generations sampled, judged and partitioned in "
              f"{time.perf_counter() - t0:.1f} s")
        del m, tok
        results[name] = {**summarize(scored, categories, n_boot=args.bootstrap, seed=args.seed), "rows": scored,
                         "generations": texts}
    caveats = [f"classes come from crpo's '{args.judge}' judge, not the benchmark's DeBERTa judge (README, NoveltyBench)"]
    if not comparable:
        caveats.insert(0, f"utility uses {note}, so it is not comparable to published NoveltyBench utility "
                          "(Skywork-Reward-Gemma-2-27B-v0.2: --score-quality rm PATH)")
    caveat = "caveat: " + "; ".join(caveats)
    config = {"benchmark": "noveltybench", "k": args.k, "temperature": args.temperature, "top_p": args.top_p,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed, "judge": args.judge, "quality": spec,
              "quality_mapping": note, "comparable_utility": comparable, "caveat": caveat, "n_prompts": len(prompts)}
    return {"models": results, "config": config}


def report(out, path):
    """Print each model's distinct and utility (and per category) with the caveat; write the JSON to path. -> 0."""
    print()
    for name, s in out["models"].items():
        print("\n".join(summary_lines(name, s)))
    print(out["config"]["caveat"])
    files.write_text(path, json.dumps(out, ensure_ascii=False, indent=1))
    print(f"wrote {path}")
    return 0


# ----------------------------------------------------------------------------------------------------
# CLI


def main(argv=None):
    ap = argparse.ArgumentParser(description="NoveltyBench scoring of generations made anywhere, and the local "
                                             "equivalence judge's agreement with the official partitions.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("score", help="partition (and score) a generations file: rows with id, prompt, generations")
    s.add_argument("--data", required=True, help="JSON Lines: id, prompt, generations (the benchmark's layout)")
    s.add_argument("--out", required=True, help="the rows with partition, distinct (and generation_scores, utility)")
    s.add_argument("--quality", nargs="+", default=["none"], metavar="VARIANT",
                   help="judge | rm PATH | none (default: none = partition only)")
    s.add_argument("--patience", type=float, default=PATIENCE)
    s.add_argument("--scorer-model", help="LM of the judge quality scorer (default: the embedded default)")
    a = sub.add_parser("agreement", help="a judge's partitions vs the official ones (precision/recall, ARI, distinct)")
    a.add_argument("--data", default=CALIBRATION, help="rows with id, prompt, generations, partition")
    c = sub.add_parser("calibrate", help="fit the local judge's weight and threshold on the calibration partitions")
    c.add_argument("--data", default=CALIBRATION)
    c.add_argument("--out", help="also write the fit and its agreement as JSON here")
    for p in (s, a):
        p.add_argument("--judge", default="local", help=f"equivalence judge: {' | '.join(JUDGES)}")
    for p in (s, a, c):
        p.add_argument("--encoder", help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
        p.add_argument("--cache-dir", help="embedding cache (default: $CRPO_CACHE or .cache/crpo)")
        p.add_argument("--no-short-answer-rule", dest="rule", action="store_false",
                       help="let the judge decide short answers too (the published partitions predate the rule, README)")
    args = ap.parse_args(argv)
    try:
        ctx = JudgeContext(sentence_encoder.load_encoder(args.encoder) if args.encoder else None, args.cache_dir)
        if args.command == "calibrate":
            rows = read_jsonl(args.data, ("prompt", "generations", "partition"))
            fit = calibrate(rows, [pair_features(r["generations"], ctx) for r in rows], short_answer_rule=args.rule)
            text = json.dumps({"data": os.path.relpath(args.data), "short_answer_rule": args.rule,
                               "command": "python noveltybench.py calibrate", **fit}, indent=1)
            print(text)
            if args.out:
                files.write_text(args.out, text + "\n")
            return 0
        judge_fn = get_judge(args.judge)
        if args.command == "agreement":
            rows = read_jsonl(args.data, ("prompt", "generations", "partition"))
            pred = [judged_partition(r["generations"], judge_fn(r["prompt"], r["generations"], ctx), args.rule) for r in rows]
            print(json.dumps({"judge": args.judge, "data": os.path.relpath(args.data), "short_answer_rule": args.rule,
                              **agreement(pred, [r["partition"] for r in rows])}))
            return 0
        rows = read_jsonl(args.data, ("id", "prompt", "generations"))
        spec = " ".join(args.quality)
        levels = note = None
        if spec != "none":
            model, tok = (None, None)
            if args.scorer_model:
                model, tok = checkpoint.load(os.path.expanduser(args.scorer_model))
            levels, note, comparable = quality_levels(rows, spec, model=model, tokenizer=tok, cache_dir=args.cache_dir)
        scored = score_rows(rows, judge_fn, ctx, levels, args.patience, args.rule)
        files.write_text(args.out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in scored))
        means = {"distinct": float(np.mean([r["distinct"] for r in scored]))}
        if levels is not None:
            means["utility"] = float(np.mean([r["utility"] for r in scored]))
        print(json.dumps({"rows": len(scored), "judge": args.judge, "quality": spec, **means}))
        if note:
            print(f"quality levels: {note}" + ("" if comparable else " (utility not comparable to published numbers)"))
        print(f"wrote {args.out}")
        return 0
    except (BenchmarkError, data.DataError, ModelError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
