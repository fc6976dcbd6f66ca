"""`python score.py fit`: the one command that fits a learned scorer (originality.py, relevance.py) on rating rows
and writes the folder that `--originality model DIR` / `--relevance model DIR` (score.py, crpo.py --score-*) read.
Each scorer first reports prompt-grouped cross-validation (no prompt on both sides of a fold), then fits on all
prompts.

    python score.py fit --data data/dt_ratings.jsonl.gz --out scorers/originality          (--scorer originality)
    python score.py fit --scorer relevance --data data/dt_ratings.jsonl.gz --out scorers/relevance
"""
import argparse
import sys

import torch

import data
import encoder as sentence_encoder
import originality
import relevance

SCORERS = {"originality": originality.fit_and_save, "relevance": relevance.fit_and_save}


def main(argv=None):
    """python score.py fit [--scorer originality|relevance] --data RATINGS --out DIR [--folds K] [--seed S] ...;
    a bad input stops with one line (exit 1)."""
    ap = argparse.ArgumentParser(prog="score.py fit", description="Fit a learned scorer on rating rows: "
                                 "prompt-grouped cross-validation report, then a fit on all prompts written to --out.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--scorer", choices=tuple(SCORERS), default="originality", help="which scorer to fit")
    ap.add_argument("--data", required=True, help="rating rows (JSON Lines, .gz ok): prompt, response, score[, task]")
    ap.add_argument("--out", required=True, help="folder for the fitted scorer (card.json, originality: "
                    "model.safetensors)")
    ap.add_argument("--folds", type=int, default=5, help="prompt-grouped CV folds (0: skip the CV report)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default=None, help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--skip-bad-rows", action="store_true")
    ap.add_argument("--cache-dir", help="embedding cache (default: $CRPO_CACHE or .cache/crpo)")
    ap.add_argument("--negatives", type=float, default=originality.Config.negatives,
                    help="originality: negatives of each probe kind per prompt, as a share of its answers (0: none)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.folds == 1 or args.folds < 0:
        ap.error(f"--folds {args.folds}: use 0 (no CV) or at least 2")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows)
    except data.DataError as e:
        sys.exit(f"error: {e}")
    print(report.summary())
    if report.kind != "rating":
        sys.exit(f"error: {args.data}: {report.kind} rows; `fit` needs rating rows (prompt, response, score)")
    if args.folds > report.prompts:
        sys.exit(f"error: --folds {args.folds}: {args.data} has only {report.prompts} prompts "
                 f"(use --folds {report.prompts} or fewer, 0 to skip the CV report)")
    try:
        encoder = sentence_encoder.load_encoder(args.encoder)
    except (ValueError, OSError) as e:  # model.ModelError is a ValueError
        sys.exit(f"error: --encoder: {e}")
    extra = {"negatives": args.negatives} if args.scorer == "originality" else {}
    SCORERS[args.scorer](rows, args.out, encoder=encoder, data_path=args.data, folds=args.folds, seed=args.seed,
                         cache_dir=args.cache_dir, **extra)
    return 0
