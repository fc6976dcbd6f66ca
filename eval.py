"""Generation-based creativity evaluation: several models side by side on the same prompts.

    python eval.py --models base=default crpo=out/ --data heldout.jsonl --k 8 --out out/eval.json --report out/eval.md

For each model, k samples per prompt (generate.generate: batched, KV cache, seeded). Per prompt p with
generations g_1..g_k, e(t) the unit-norm sentence embedding, d(u, v) = 1 - cos(u, v):

    novelty_p    = mean_i 2 |DSI(g_i) - DSI(C_p)|        score.py's DSI novelty, RAW (not min-max normalised);
                   C_p = the human responses to p when the data has rating rows, else the k generations
    diversity_p  = mean_i mean_{j != i} d(e(g_i), e(g_j))  score.py's diversity, raw, among the k generations
    surprise_p   = mean_i ppl(g_i | p)                     perplexity under ONE scoring model for every model
    quality_p    = mean_i p(Yes | judge question, p, g_i)   score.py's judge, with the same scoring model
    distinct_p   = |classes| / k                           classes: g_i joins the FIRST class whose representative
                                                            (its first member) has cos(e(g_i), e(rep)) >= threshold,
                                                            else starts a new class (greedy, NoveltyBench-style)
    length_p     = mean_i |words(g_i)|
    distinct-n_p = |unique n-grams| / |n-grams|            over the k generations (n-grams inside each text)
    on_topic_p   = mean_i [relevance(g_i) >= 0.5]          score.py's relevance: share of generations that answer
                                                            p, judged against the human answers when there are some

and, for held-out human pairs (x, y_w, y_l) of the evaluated prompts,

    pref_accuracy = mean over pairs of [ell(y_w | x) > ell(y_l | x)]   (a tie counts 1/2)
    ell(y | x)    = (1/|y|) sum_t log pi(y_t | x, y_<t) = -log ppl(y | x)   under the EVALUATED model.

Every metric is averaged over prompts; [lo, hi] is a 95% percentile bootstrap interval over prompts (seeded).
"""
import argparse
import json
import math
import os
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from tqdm import tqdm

import checkpoint
import data
import encoder as sentence_encoder
import files
import generate
import humaneval
import noveltybench
import plot
import originality
import relevance
import score
from conversation import prompt_key
from intervals import bootstrap_interval
from measures import unit_rows, word_tokens
from model import ModelError

OTHER_METRICS = ("distinct", "length", "distinct_1", "distinct_2", "pref_accuracy")  # after the score dimensions
# Two generations are one "class" when their embeddings' cosine is >= this. Calibrated with
# experiments/calibrate_distinct.py (results/distinct_calibration.json, README): 12 real prompts x k=8 x 48 tokens of
# the default model at temperatures 0.3 and 1.0; the threshold whose intervals lie furthest apart (upper bound at
# 0.3 vs lower bound at 1.0). At the old 0.9, every sample at 1.0 was its own class (distinct 1.0 [1.0, 1.0]).
DISTINCT_THRESHOLD = 0.5
DISTINCT_EXTRA = (0.7, 0.9)  # also reported as distinct@t
PREF_RESPONSES_PER_PROMPT = 32  # rated responses sampled per prompt before pairing (1,500 ratings: no 1M pairs)


def eval_dims():
    """The score dimensions eval reports, as score.py's raw values: the paper's four and originality."""
    return [*score.paper_dims(), "originality"]


def metrics(per_prompt=()):
    """The reported metrics in table order (per_prompt rows add their distinct@t columns)."""
    extra = sorted({k for r in per_prompt for k in r if k.startswith("distinct@")})
    dims = [d for d in score.DIMENSIONS if not per_prompt or any(d in r for r in per_prompt)]
    on_topic = ["on_topic"] if not per_prompt or any("on_topic" in r for r in per_prompt) else []
    return [*dims, *on_topic, *OTHER_METRICS[:1], *extra, *OTHER_METRICS[1:]]


class EvalError(Exception):
    """A user-facing problem (bad --models spec, missing path): the CLI prints it and exits 1."""


# ----------------------------------------------------------------------------------------------------
# Inputs


def parse_model_specs(specs):
    """["NAME=PATH", ...] -> [(name, path)]; PATH "default" -> None (the embedded default). Paths must exist."""
    out, seen = [], set()
    for spec in specs:
        name, sep, path = spec.partition("=")
        name, path = name.strip(), path.strip()
        if not sep or not name or not path:
            raise EvalError(f"--models {spec!r}: expected NAME=PATH (e.g. base=default or crpo=out/)")
        if name in seen:
            raise EvalError(f"--models {spec!r}: the name {name!r} is given twice (names must be unique)")
        if path != "default" and not os.path.exists(os.path.expanduser(path)):
            raise EvalError(f"--models {spec!r}: {path}: no such file or folder "
                            "(give an HF folder, a .gguf file, or 'default' for the embedded model)")
        seen.add(name)
        out.append((name, None if path == "default" else os.path.expanduser(path)))
    return out


def read_prompts(rows, max_prompts=None):
    """Unique prompts in file order (the same by conversation.prompt_key), the first max_prompts.
    -> (prompts, reference): reference = {prompt: [human responses]} for rating rows, None for preference rows."""
    first = {}
    for r in rows:
        first.setdefault(prompt_key(r["prompt"]), r["prompt"])
    prompts = list(first.values())[:max_prompts]
    if rows[0]["kind"] != "rating":
        return prompts, None
    keep = {prompt_key(p): p for p in prompts}
    reference = defaultdict(list)
    for r in rows:
        if prompt_key(r["prompt"]) in keep:
            reference[keep[prompt_key(r["prompt"])]].append(r["response"])
    return prompts, dict(reference)


# ----------------------------------------------------------------------------------------------------
# Generation


def generate_all(m, tokenizer, prompts, *, k, max_new_tokens, temperature, top_p, seed, batch_size,
                 show_progress=True):
    """{prompt: [k texts]}: prompts in chunks of max(1, batch_size // k) (chunk*k sequences per batch);
    chunk c is sampled with seed + c, so the same seed and batch size give the same texts."""
    per_call = max(1, batch_size // k)
    out = {}
    chunks = [prompts[i:i + per_call] for i in range(0, len(prompts), per_call)]
    for c, chunk in enumerate(tqdm(chunks, desc="generate", unit="batch", disable=not show_progress)):
        texts = generate.generate(m, tokenizer, chunk, n=k, max_new_tokens=max_new_tokens, temperature=temperature,
                                  top_p=top_p, seed=seed + c)
        out.update(zip(chunk, texts))
    return out


# ----------------------------------------------------------------------------------------------------
# Metrics on one prompt's k generations


def distinct_n(texts, n):
    """|unique n-grams| / |n-grams| over the texts, n-grams taken inside each text; 0 when there is none."""
    grams = [tuple(t[i:i + n]) for t in map(word_tokens, texts) for i in range(len(t) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def equivalence_classes(E, threshold):
    """Class label per row of E [k, d]: row i joins the first class whose representative r (the class's first
    member) has cos(e_i, e_r) >= threshold, else opens a new class. Greedy, in generation order, as in
    NoveltyBench's partition (which compares against one representative per class)."""
    E = unit_rows(E)
    reps, labels = [], []
    for i in range(len(E)):
        label = next((c for c, r in enumerate(reps) if E[i] @ E[r] >= threshold), None)
        if label is None:
            label = len(reps)
            reps.append(i)
        labels.append(label)
    return labels


def score_generations(generations, *, scorer, tokenizer, encoder, reference=None, threshold=DISTINCT_THRESHOLD,
                      extra_thresholds=(), cache_dir=None, batch_size=16, show_progress=True, options=None, dims=None,
                      gate=None):
    """Per-prompt metrics of {prompt: [k texts]} -> list of dicts (prompt order). Novelty, diversity, surprise
    and quality are score.py's RAW values (score_groups' "<dim>_raw"), averaged over the k generations;
    duplicates stay in the group (k identical texts: diversity 0). distinct uses `threshold`; each of
    extra_thresholds t adds "distinct@t". dims: the score dimensions (default eval_dims()). on_topic: the share
    with relevance >= relevance.THRESHOLD (always scored); gate: score.py's relevance gate (None: off)."""
    dims = eval_dims() if dims is None else list(dims)
    scored = dims + ["relevance"] * ("relevance" not in dims)
    prompts = list(generations)
    groups = [{"prompt": p, "responses": list(generations[p])} for p in prompts]
    results, _ = score.score_groups(groups, scored, model=scorer, tokenizer=tokenizer, encoder=encoder,
                                    cache_dir=cache_dir, reference=reference, population=reference,
                                    batch_size=batch_size, gate=gate, **(options or {}),
                                    show_progress=show_progress)
    vectors = score.embed_texts(encoder, [t for g in groups for t in g["responses"]], cache_dir=cache_dir,
                                desc="embed generations", show_progress=show_progress)
    rows = []
    for p, res in zip(prompts, results):
        texts = generations[p]
        labels = equivalence_classes(np.stack([vectors[t] for t in texts]), threshold)
        lengths = [len(word_tokens(t)) for t in texts]
        row = {"prompt": p}
        row.update({d: float(np.mean(res[f"{d}_raw"])) for d in dims})
        row["on_topic"] = float(np.mean(res["relevance_raw"] >= relevance.THRESHOLD))
        row.update(distinct=len(set(labels)) / len(texts), classes=len(set(labels)), length=float(np.mean(lengths)),
                   distinct_1=distinct_n(texts, 1), distinct_2=distinct_n(texts, 2))
        for t in extra_thresholds:
            row[f"distinct@{t:g}"] = len(set(equivalence_classes(np.stack([vectors[x] for x in texts]), t))) / len(texts)
        row["per_generation"] = {**{d: [float(v) for v in res[f"{d}_raw"]] for d in scored},
                                 "class": labels, "length": lengths}
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# Preference accuracy on human pairs


def preference_pairs(rows, prompts, *, min_margin=1.0, max_pairs=200, seed=0):
    """Human pairs of the evaluated prompts. Rating rows: at most PREF_RESPONSES_PER_PROMPT responses per prompt
    (sampled, seeded), then data.build_pairs(min_margin); preference rows pass through. At most max_pairs
    (sampled, seeded, file order kept). [] when there is none."""
    keep = {prompt_key(p) for p in prompts}
    rows = [r for r in rows if prompt_key(r["prompt"]) in keep]
    if not rows or max_pairs <= 0:
        return []
    rng = random.Random(seed)
    if rows[0]["kind"] == "rating":
        by_prompt = defaultdict(list)
        for i, r in enumerate(rows):
            by_prompt[prompt_key(r["prompt"])].append(i)
        chosen = sorted(i for idx in by_prompt.values()
                        for i in (rng.sample(idx, PREF_RESPONSES_PER_PROMPT) if len(idx) > PREF_RESPONSES_PER_PROMPT else idx))
        rows = [rows[i] for i in chosen]
    try:
        pairs, _ = data.build_pairs(rows, min_margin=min_margin)
    except data.DataError:
        return []
    if len(pairs) > max_pairs:
        pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), max_pairs))]
    return pairs


def preference_accuracy(m, tokenizer, pairs, *, cache_dir=None, batch_size=16, show_progress=True):
    """{prompt: (correct, n_pairs)}: a pair is right when ell(chosen) > ell(rejected), ell(y|x) = -log ppl(y|x),
    the mean log-prob per response token (end-of-turn included) from score.py's perplexity under model m;
    a tie counts 1/2."""
    by_prompt = defaultdict(dict)
    for p in pairs:
        key = prompt_key(p["prompt"])
        by_prompt[key].setdefault("prompt", p["prompt"])
        for side in ("chosen", "rejected"):
            by_prompt[key].setdefault("responses", {})[p[side]] = None
    keys = list(by_prompt)
    groups = [{"prompt": by_prompt[k]["prompt"], "responses": list(by_prompt[k]["responses"])} for k in keys]
    results, _ = score.score_groups(groups, ["surprise"], model=m, tokenizer=tokenizer, cache_dir=cache_dir,
                                    batch_size=batch_size, show_progress=show_progress)
    ppl = {(k, r): v for k, g, res in zip(keys, groups, results) for r, v in zip(g["responses"], res["surprise_raw"])}
    out = {}
    for p in pairs:
        k = prompt_key(p["prompt"])
        ell_w, ell_l = -math.log(ppl[k, p["chosen"]]), -math.log(ppl[k, p["rejected"]])
        right = 1.0 if ell_w > ell_l else 0.5 if ell_w == ell_l else 0.0
        c, n = out.get(by_prompt[k]["prompt"], (0.0, 0))
        out[by_prompt[k]["prompt"]] = (c + right, n + 1)
    return out


# ----------------------------------------------------------------------------------------------------
# Aggregation


def summarize(per_prompt, pref=None, *, n_boot=1000, seed=0):
    """{metric: {"mean", "lo", "hi"}} over prompts; pref_accuracy (pairs-weighted over prompts) when pref has pairs."""
    out = {}
    for metric in metrics(per_prompt)[:-1]:
        mean, lo, hi = bootstrap_interval([r[metric] for r in per_prompt], n_boot=n_boot, seed=seed)
        out[metric] = {"mean": mean, "lo": lo, "hi": hi}
    if pref:
        correct, n = zip(*pref.values())
        acc = [c / k for c, k in zip(correct, n)]
        mean, lo, hi = bootstrap_interval(acc, n, n_boot=n_boot, seed=seed)
        out["pref_accuracy"] = {"mean": mean, "lo": lo, "hi": hi, "pairs": int(sum(n))}
    return out


def fmt(x):
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def table(results, markdown=False):
    """One row per model: mean [lo, hi] per metric."""
    shown = [m for m in metrics([{k: 0 for r in results.values() for k in r}]) if any(m in r for r in results.values())]
    head = ["model"] + shown
    rows = [[name] + [f"{fmt(r[m]['mean'])} [{fmt(r[m]['lo'])}, {fmt(r[m]['hi'])}]" if m in r else "-" for m in shown]
            for name, r in results.items()]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] +
                         ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(x[i]) for x in [head] + rows) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])


def markdown_report(out, n_examples=3):
    c = out["config"]
    lines = [f"# eval.py: {', '.join(out['models'])}", "",
             f"Data `{c['data']}`: {c['n_prompts']} prompts, k = {c['k']} samples each, {c['max_new_tokens']} new "
             f"tokens at most, temperature {c['temperature']}, top-p {c['top_p']}, seed {c['seed']}. Scoring model "
             f"`{c['scorer_model'] or 'default'}`, encoder `{c['encoder'] or 'default'}`, distinct threshold "
             f"{c['distinct_threshold']}, novelty against {c['novelty_reference']}. Git {c['git_revision']}.", "",
             f"Mean over prompts [95% bootstrap interval over prompts, {c['bootstrap']} resamples]:", "",
             table(out["models"], markdown=True), "",
             "Novelty, diversity, distinct, distinct-1/2: higher = more varied/original. Surprise: perplexity of the "
             "generations under the one scoring model. Quality: judge p(Yes) that a generation is a sensible answer. "
             "on_topic: share of generations the relevance scorer calls an answer to the prompt (a degenerate or off-topic "
             "model shows here, whatever its novelty). Length: words. pref_accuracy: how often the model's per-token log-likelihood ranks the higher-rated "
             "human response first (0.5 = chance). Intervals that do not overlap mark differences larger than the "
             "prompt-to-prompt noise.", "", "## Sample generations", ""]
    prompts = list(next(iter(out["models"].values()))["generations"])[:n_examples]
    for p in prompts:
        lines.append(f"**{p}**\n")
        for name, r in out["models"].items():
            for t in r["generations"][p][:n_examples]:
                lines.append(f"- {name}: {json.dumps(t, ensure_ascii=False)}")
        lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# CLI


def originality_leakage(spec, prompts):
    """The evaluated prompts the originality scorer was trained on (its card lists them)."""
    _, arg = score.parse_variant("originality", spec)
    fitted, _ = score.load_originality(arg or originality.default_path())
    seen = {prompt_key(p) for p in fitted.card.get("training_prompts", [])}
    return [p for p in prompts if prompt_key(p) in seen]


def _scorer_flags_ok(args):
    try:
        score.scorer_options(args, prefix="score-")
        return True
    except ValueError:
        return False


def _thresholds(text):
    """"0.7,0.8" -> [0.7, 0.8]; None when a value is not a cosine."""
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        return None
    return values if all(-1 <= v <= 1 for v in values) else None


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description="Sample k responses per prompt from each model and compare novelty, "
                                             "diversity, surprise, quality, distinct, ... (mean and 95% bootstrap interval).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--models", nargs="+", required=True, metavar="NAME=PATH",
                    help="models to evaluate; PATH = HF folder, .gguf file, or 'default' (embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--data", help="rating or preference rows (JSON Lines); its unique prompts are used")
    ap.add_argument("--k", type=int, help="samples per prompt per model (default 8; 10 with --benchmark)")
    ap.add_argument("--benchmark", choices=("noveltybench",), help="run a benchmark's prompts instead of --data (README)")
    ap.add_argument("--limit", type=int, help="--benchmark: only its first N prompts")
    ap.add_argument("--judge", default="local", help="--benchmark noveltybench: equivalence judge (noveltybench.py)")
    ap.add_argument("--human-sheet", metavar="DIR", help="also write a blinded pairwise sheet for human raters here "
                                                         "(humaneval.py; two or more models)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed")
    ap.add_argument("--out", default=os.path.join("out", "eval.json"), help="JSON with everything (default out/eval.json)")
    ap.add_argument("--report", help="also write a short Markdown report here")
    ap.add_argument("--max-prompts", type=int, help="only the first N unique prompts of --data")
    ap.add_argument("--scorer-model", help="the ONE model that scores surprise and quality for every evaluated model "
                                           "(default: the embedded default)")
    ap.add_argument("--encoder", help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--distinct-threshold", type=float, default=DISTINCT_THRESHOLD,
                    help="two generations are one class when their embeddings' cosine >= this (calibrated, see README)")
    ap.add_argument("--distinct-extra", default=",".join(f"{t:g}" for t in DISTINCT_EXTRA),
                    help="more thresholds, reported as distinct@t ('' for none)")
    ap.add_argument("--plot", help="also draw each metric per model with its interval to this PNG (needs matplotlib)")
    score.add_scorer_flags(ap, prefix="score-")
    ap.add_argument("--dims", default=",".join(eval_dims()), help="score dimensions to report (raw values)")
    ap.add_argument("--batch-size", type=int, default=64, help="sequences per generation batch (and LM scoring batch)")
    ap.add_argument("--max-pref-pairs", type=int, default=200, help="human pairs for preference accuracy (0: skip)")
    ap.add_argument("--pref-margin", type=float, default=1.0, help="min rating difference of a human pair")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--cache-dir", help="score cache (default: $CRPO_CACHE or .cache/crpo)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--skip-bad-rows", action="store_true")
    args = ap.parse_args(argv)
    args.k = args.k or (noveltybench.K if args.benchmark else 8)
    checks = [((args.data is None) != (args.benchmark is None), "give --data or --benchmark (one of them)"),
              (args.limit is None or args.limit >= 1, "--limit must be >= 1"),
              (not args.human_sheet or len(args.models) >= 2, "--human-sheet needs two or more --models"),
              (args.k >= 1, "--k must be >= 1"), (args.max_new_tokens >= 1, "--max-new-tokens must be >= 1"),
              (args.temperature >= 0, "--temperature must be >= 0"), (0 < args.top_p <= 1, "--top-p must be in (0, 1]"),
              (args.max_prompts is None or args.max_prompts >= 1, "--max-prompts must be >= 1"),
              (-1 <= args.distinct_threshold <= 1, "--distinct-threshold must be a cosine in [-1, 1]"),
              (_thresholds(args.distinct_extra) is not None, "--distinct-extra must be cosines in [-1, 1], e.g. 0.7,0.8"),
              (args.batch_size >= 1, "--batch-size must be >= 1"), (args.bootstrap >= 0, "--bootstrap must be >= 0"),
              (args.max_pref_pairs >= 0, "--max-pref-pairs must be >= 0"),
              (_scorer_flags_ok(args), "--score-*: not a registered scorer (see --help)"),
              (math.isfinite(args.pref_margin) and args.pref_margin >= 0, "--pref-margin must be >= 0")]
    for ok, message in checks:
        if not ok:
            ap.error(message)
    args.dims = [d.strip() for d in args.dims.split(",") if d.strip()]
    unknown = [d for d in args.dims if d not in score.DIMENSIONS]
    if unknown:
        ap.error(f"--dims: unknown {', '.join(unknown)} (registered: {', '.join(score.DIMENSIONS)})")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def run(args):
    """The whole evaluation -> the JSON-able result {"models": {...}, "config": {...}}."""
    t_start = time.perf_counter()
    specs = parse_model_specs(args.models)
    rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows)
    print(report.summary())
    prompts, reference = read_prompts(rows, args.max_prompts)
    pairs = preference_pairs(rows, prompts, min_margin=args.pref_margin, max_pairs=args.max_pref_pairs, seed=args.seed)
    print(f"{len(prompts)} prompts, k = {args.k}; novelty against "
          f"{'the human responses of each prompt' if reference else 'the generations of each prompt'}; "
          f"{len(pairs)} human pairs for preference accuracy")

    t0 = time.perf_counter()
    scorer_path = None if args.scorer_model in (None, "default") else os.path.expanduser(args.scorer_model)
    scorer, scorer_tok = checkpoint.load(scorer_path, device=args.device)  # loaded once, for every model
    encoder = sentence_encoder.load_encoder(args.encoder, device=args.device)
    print(f"scoring model and encoder loaded in {time.perf_counter() - t0:.1f} s")
    options = score.scorer_options(args, prefix="score-")
    leak = originality_leakage(options["originality"], prompts) if "originality" in args.dims else []
    if leak:
        print(f"warning: {len(leak)} of the {len(prompts)} evaluated prompts are among the originality scorer's "
              f"training prompts (e.g. {leak[0]!r}): its originality there is not an unseen-prompt measurement; "
              f"fit one on other prompts (score.py fit) and pass --score-originality model DIR", file=sys.stderr)

    results, timing = {}, {}
    for name, path in specs:
        t0 = time.perf_counter()
        if path == scorer_path or (path and scorer_path and os.path.realpath(path) == os.path.realpath(scorer_path)):
            m, tok = scorer, scorer_tok  # the same checkpoint: one copy in memory
        else:
            m, tok = checkpoint.load(path, device=args.device)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        generations = generate_all(m, tok, prompts, k=args.k, max_new_tokens=args.max_new_tokens,
                                   temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                                   batch_size=args.batch_size)
        t_gen = time.perf_counter() - t0
        t0 = time.perf_counter()
        per_prompt = score_generations(generations, scorer=scorer, tokenizer=scorer_tok, encoder=encoder,
                                       reference=reference, threshold=args.distinct_threshold, options=options,
                                       dims=args.dims, gate=args.score_gate,
                                       extra_thresholds=[t for t in _thresholds(args.distinct_extra)
                                                         if t != args.distinct_threshold],
                                       cache_dir=args.cache_dir, batch_size=args.batch_size)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        pref = preference_accuracy(m, tok, pairs, cache_dir=args.cache_dir, batch_size=args.batch_size) if pairs else {}
        for r in per_prompt:
            if r["prompt"] in pref:
                r["pref_correct"], r["pref_pairs"] = pref[r["prompt"]]
        t_pref = time.perf_counter() - t0
        results[name] = summarize(per_prompt, pref, n_boot=args.bootstrap, seed=args.seed)
        results[name]["per_prompt"] = per_prompt
        results[name]["generations"] = generations
        timing[name] = {"load_s": t_load, "generate_s": t_gen, "score_s": t_score, "pref_s": t_pref}
        print(f"{name}: generated {len(prompts) * args.k} texts in {t_gen:.1f} s, scored in {t_score:.1f} s"
              + (f", preference accuracy on {len(pairs)} pairs in {t_pref:.1f} s" if pairs else ""))
        del m, tok
    config = dict(vars(args), n_prompts=len(prompts), n_pref_pairs=len(pairs), git_revision=files.git_revision()[0],
                  novelty_reference="the human responses of each prompt" if reference else "the generations of each prompt",
                  distinct_method="greedy: join the first class whose representative has cosine >= threshold",
                  scorer_name=scorer_tok.name, encoder_name=str(encoder.name), timing=timing,
                  total_s=time.perf_counter() - t_start)
    return {"models": results, "config": config}


def main(argv=None):
    args = parse_args(argv)
    try:
        out = (noveltybench.run_models(args, parse_model_specs(args.models), generate_all, checkpoint.load)
               if args.benchmark else run(args))
        if args.human_sheet:
            print(humaneval.write_sheet(args.human_sheet, {n: r["generations"] for n, r in out["models"].items()},
                                        seed=args.seed))
    except (EvalError, data.DataError, ModelError, noveltybench.BenchmarkError, humaneval.SheetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.benchmark:
        return noveltybench.report(out, args.out)
    print()
    print(table(out["models"]))
    files.write_text(args.out, json.dumps(out, ensure_ascii=False, indent=1))
    print(f"wrote {args.out}")
    if args.report:
        files.write_text(args.report, markdown_report(out) + "\n")
        print(f"wrote {args.report}")
    if args.plot:
        try:
            plot.draw_intervals(plot.eval_series(out), args.plot, title=f"eval.py: {args.data}",
                                xlabel="mean [95% bootstrap interval over prompts]")
            print(f"wrote {args.plot}")
        except plot.PlotError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
