"""Which rows train, which validate, which never do (MuCE's own `Set` column), and the pair-rule flags.

    parts, stats = split_rows(rows, "Set")                   # {"train": rows, "validation": rows}, counts
    splits.add_pair_rule_flags(parser)                        # --min-score --max-margin --cap-order --split-column

    train, val = split_by_prompt(pairs, val_frac=0.1, seed=0)    # no split column: seeded, by prompt

data.build_split_pairs uses split_rows, then builds pairs inside each split, as the authors do: they split MuCE by `Set`
first (src/crpo/prepare_raw_data.py) and build pairs per split (src/crpo/prepare_crpo_data.py). Held-out rows
(Test, HeldoutItem, HeldoutTask, HeldoutLanguage) are for evaluation only and never reach a pair.
This file imports nothing of the project's data handling, so data.py can import it.
"""
import json
import math
import random

from conversation import prompt_key


# MuCE's `Set` values (compared lower-cased, without spaces and underscores) -> where the rows go; "never" = no split
# that trains or validates (the authors evaluate on them: src/crpo/prepare_raw_data.py)
SPLIT_VALUES = {"training": "train", "train": "train", "validation": "validation", "val": "validation",
                "test": "never", "heldoutitem": "never", "heldouttask": "never", "heldoutlanguage": "never"}


def split_rows(rows, column, source="data"):
    """Rows split by a column's value, MuCE style -> ({"train": rows, "validation": rows}, stats).

    Training -> train, Validation -> validation; Test, HeldoutItem, HeldoutTask, HeldoutLanguage never train
    nor validate (dropped, counted by value in stats["never"]). A row without the column or with another value
    raises ValueError "FILE:LINE: ..." (data.build_split_pairs turns it into a DataError).
    stats["prompts_in_both"]: prompts with rows in train and validation."""
    out, never = {"train": [], "validation": []}, {}
    for r in rows:
        value = r.get(column)
        where = SPLIT_VALUES.get(str(value).lower().replace(" ", "").replace("_", ""))
        if value is None or where is None:
            what = f"has no field {column!r}" if value is None else f"{column} is {json.dumps(value)}"
            raise ValueError(f"{source}:{r.get('line', '?')}: {what} (--split-column {column} takes Training, "
                            f"Validation, Test, HeldoutItem, HeldoutTask, HeldoutLanguage; fix the row or drop the flag)")
        if where == "never":
            never[str(value)] = never.get(str(value), 0) + 1
        else:
            out[where].append(r)
    both = {r["prompt"].strip() for r in out["train"]} & {r["prompt"].strip() for r in out["validation"]}
    return out, {"column": column, "train": len(out["train"]), "validation": len(out["validation"]),
                 "never": never, "prompts_in_both": len(both)}


def split_rows_summary(stats):
    never = ", ".join(f"{v} {n:,}" for v, n in sorted(stats["never"].items()))
    s = (f"split by column {stats['column']}: {stats['train']:,} rows to train, {stats['validation']:,} to validation, "
         f"{sum(stats['never'].values()):,} never trained ({never or 'none'})")
    if stats["prompts_in_both"]:
        s += f"; {stats['prompts_in_both']:,} prompts have rows in both train and validation"
    return s


def _finite(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def add_pair_rule_flags(ap):
    """--min-score, --max-margin, --cap-order, --split-column (data.py's and crpo.py's)."""
    ap.add_argument("--min-score", type=_finite, default=None, help="pairs only between responses both scored >= "
                    "this (the file's own score scale: MuCE's facsco_grm_scaled for the authors' 20; 1-5 in "
                    "data/dt_ratings.jsonl.gz)")
    ap.add_argument("--max-margin", type=_finite, default=None, help="largest score difference that makes a pair "
                    "(the file's own score scale; default: none)")
    ap.add_argument("--cap-order", choices=("margin", "file"), default="margin", help="order in which "
                    "--max-pairs-per-response takes pairs: largest margin first, or file order (the authors')")
    ap.add_argument("--split-column", default=None, help="split rows by this column (MuCE: Set): Training -> train, "
                    "Validation -> validation, Test/HeldoutItem/HeldoutTask/HeldoutLanguage never used; replaces "
                    "--val-frac; '' = none)")


def pair_options(args, score_columns=()):
    """build_pairs' keyword arguments from the flags (min_margin, cap, rules, length balance)."""
    return dict(min_margin=args.min_margin, max_pairs_per_response=args.max_pairs_per_response or None,
                length_balance=args.length_balance, score_columns=score_columns, min_score=args.min_score,
                max_margin=args.max_margin, cap_order=args.cap_order)


def split_by_prompt(pairs, val_frac, seed):
    """(train_pairs, val_pairs): prompts shuffled with `seed`, round(val_frac * n_prompts) of them to val
    (at least 1 and at most n_prompts - 1 when val_frac > 0 and there are >= 2 prompts). No prompt is in
    both; pairs keep their order inside each split."""
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac must be in [0, 1), got {val_frac!r}")
    prompts = list(dict.fromkeys(prompt_key(p["prompt"]) for p in pairs))
    random.Random(seed).shuffle(prompts)
    n_val = round(val_frac * len(prompts))
    if val_frac > 0 and len(prompts) >= 2:
        n_val = min(max(n_val, 1), len(prompts) - 1)
    val_prompts = set(prompts[:n_val])
    train = [p for p in pairs if prompt_key(p["prompt"]) not in val_prompts]
    val = [p for p in pairs if prompt_key(p["prompt"]) in val_prompts]
    return train, val


def split_summary(train, val):
    n_prompts = lambda ps: len({prompt_key(p["prompt"]) for p in ps})  # noqa: E731
    return (f"train: {len(train):,} pairs over {n_prompts(train):,} prompts; "
            f"val: {len(val):,} pairs over {n_prompts(val):,} prompts")
