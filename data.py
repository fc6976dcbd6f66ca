"""Data for CrPO: read and validate JSON Lines rows, build preference pairs (splits: splits.py; token ids and
batches: tokenizer.py, re-exported here).

    rows, report = read_rows("muce.jsonl")                 # validated rows + what was read/kept/skipped
    pairs, stats = build_pairs(rows, min_margin=1.0)       # (prompt, chosen, rejected) from ratings
    train, val = splits.split_by_prompt(pairs, val_frac=0.1, seed=0)      # prompt-disjoint (splits.py)
    train, val = build_split_pairs(rows, split_column="Set", min_score=20, min_margin=5)  # MuCE's Set column
    items, tstats = tokenize_pairs(train, tokenizer, max_len=512)
    batch = collate(items[:8], tokenizer.pad_id)           # input_ids / attention_mask / response_mask [2B, T]

Two row kinds, one per file (the kind of the first good row):
- rating rows (MuCE style): {"prompt", "response", "score", "task"?, "item"?, "language"?, ...}; MuCE's
  column names are aliases: FullPrompt/Prompt -> prompt, Response -> response, facsco_grm_scaled -> score,
  TasksNamesFull -> task, Language -> language, Dataset -> dataset. Precomputed creativity scores (a column
  per registered dimension, registry.DIMENSIONS: "novelty", "diversity", ..., as score.py writes them) ride
  along into the pairs.
- preference rows (TRL style): {"prompt", "chosen", "rejected"}, each a string or a list of chat messages
  [{"role", "content"}], optionally with "novelty_chosen", "novelty_rejected", "diversity_chosen", ...

Bad input never crashes with a traceback and never disappears silently: every problem is a DataError
"FILE:LINE: what is wrong (what to do)", or, with skip_bad_rows=True, a skipped row counted by reason.
Run `python data.py FILE [--min-margin M ...]` to check a file and see the pairs it gives.
"""
import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

import files
import registry
import splits
from conversation import PromptError, as_prompt, completion_text, has_control_string, implicit_prompt, prompt_key
from tokenizer import collate, pad_batch, tokenize_pairs, tokens_summary  # noqa: F401 (data.collate, data.pad_batch)

RATING_FIELDS = {  # canonical name -> accepted names, first present wins
    "prompt": ("prompt", "FullPrompt", "Prompt"),
    "response": ("response", "Response"),
    "score": ("score", "facsco_grm_scaled"),
    "task": ("task", "TasksNamesFull"),
    "language": ("language", "Language"),
    "dataset": ("dataset", "Dataset"),
}
PAIR_DEFAULTS = {"min_margin": 0.0, "max_pairs_per_response": 4, "val_frac": 0.1}  # crpo.py and data.py share them
EPS = 1e-9  # scores closer than this are equal; margins within this of min_margin pass (3.3 - 1.3 >= 2.0)


class DataError(Exception):
    """Bad input. The message is 'FILE:LINE: what is wrong (what to do)' or a file-level reason."""


class _BadRow(Exception):
    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason, self.detail = reason, detail  # reason: the category it is counted under


# ----------------------------------------------------------------------------------------------------
# reading and validation

@dataclass
class ReadReport:
    """What read_rows saw. Every non-blank line is accounted for: read == kept + skipped + duplicates_merged."""
    path: str
    kind: str = None              # "rating" or "preference"
    lines: int = 0                # physical lines in the file
    blank: int = 0                # whitespace-only lines (ignored, not rows)
    read: int = 0                 # non-blank lines = rows read
    kept: int = 0                 # rows returned (after merging duplicates)
    skipped: dict = field(default_factory=dict)    # reason -> count
    examples: dict = field(default_factory=dict)   # reason -> first message of that kind
    duplicates_merged: int = 0    # rows folded into an earlier row with the same (prompt, response)
    prompts: int = 0              # distinct prompts among the kept rows (conversation.prompt_key)
    conversations: int = 0        # kept rows whose prompt is a list of chat messages (rendered turn by turn)
    transcripts: int = 0          # kept rows whose prompt was an already rendered chat transcript (parsed into turns)
    control_strings: int = 0      # kept rows with a control-token string ("<|im_end|>") in their text (stays text)

    @property
    def n_skipped(self):
        return sum(self.skipped.values())

    def summary(self):
        kind = f" ({self.kind} rows)" if self.kind else ""
        s = (f"{self.path}: {self.read:,} rows read{kind}, {self.kept:,} kept, {self.n_skipped:,} skipped, "
             f"{self.duplicates_merged:,} duplicates merged (mean score); {self.prompts:,} prompts")
        if self.blank:
            s += f"; {self.blank:,} blank lines ignored"
        if self.conversations:
            s += f"\n  {self.conversations:,} rows with the prompt as chat messages (every turn kept, system included)"
        if self.transcripts:
            s += (f"\n  {self.transcripts:,} rows with the prompt written as a rendered chat transcript: parsed into its "
                  "turns, rendered once by the model's chat format")
        if self.control_strings:
            s += (f"\n  {self.control_strings:,} rows with control-token strings (e.g. <|im_end|>) in their text: "
                  "encoded as plain characters, not as control tokens")
        for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]):
            s += f"\n  skipped {n:,} x {reason}, first: {self.examples[reason]}"
        return s


def _json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _field(obj, name, aliases=None):
    """The value of the first present name in aliases (default: name itself), or _BadRow 'missing field'."""
    for key in aliases or (name,):
        if key in obj and obj[key] is not None:
            return obj[key]
    also = f" (or {', '.join(aliases[1:])})" if aliases and len(aliases) > 1 else ""
    raise _BadRow("missing field", f"missing field '{name}'{also}")


def _text(value, name):
    if not isinstance(value, str):
        raise _BadRow("wrong type", f"field '{name}' must be a string, got {_json_type(value)}")
    if not value.strip():
        raise _BadRow(f"empty {name}" if name in ("prompt", "response") else "empty response",
                      f"field '{name}' is empty")
    return value


def _number(value, name, unit_range=False):
    """A finite int/float (bool is not a number); unit_range: also in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadRow("wrong type", f"field '{name}' must be a number, got {_json_type(value)} {json.dumps(value)[:40]}")
    value = float(value)
    if not math.isfinite(value):
        raise _BadRow("non-finite score", f"field '{name}' is {value} (must be a finite number)")
    if unit_range and not 0.0 <= value <= 1.0:
        raise _BadRow("score out of range", f"field '{name}' is {value} (creativity scores are in [0, 1]; "
                                             f"score.py writes them so)")
    return value


def _conversation(fn, *args):
    """fn(*args) of conversation.py; its PromptError is a bad row."""
    try:
        return fn(*args)
    except PromptError as e:
        raise _BadRow("unrenderable conversation", str(e)) from None


def _prompt(value, name="prompt"):
    """A row's prompt: text, a rendered chat transcript (parsed into its turns) or a list of chat messages ending
    with a user turn (conversation.as_prompt: several turns give a Conversation, which the chat format renders)."""
    if isinstance(value, str):
        _text(value, name)
    elif not isinstance(value, list):
        raise _BadRow("wrong type", f"field '{name}' must be a string or a list of chat messages, got {_json_type(value)}")
    return _conversation(as_prompt, value, f"field '{name}'")


def _response(value, name, prompt):
    """A response field: a string, or chat messages (conversation.completion_text: the answer after prompt)."""
    if isinstance(value, list):
        value = _conversation(completion_text, value, prompt, f"field '{name}'")
    elif not isinstance(value, str):
        raise _BadRow("wrong type", f"field '{name}' must be a string or a list of chat messages, got {_json_type(value)}")
    return _text(value, name)


def _parse_rating(obj, score_columns=()):
    row = {k: v for k, v in obj.items() if not any(k in names[1:] for names in RATING_FIELDS.values())}
    row["kind"] = "rating"
    row["prompt"] = _prompt(_field(obj, "prompt", RATING_FIELDS["prompt"]))
    row["response"] = _response(_field(obj, "response", RATING_FIELDS["response"]), "response", row["prompt"])
    row["score"] = _number(_field(obj, "score", RATING_FIELDS["score"]), "score")
    for name in ("task", "language", "dataset"):
        for key in RATING_FIELDS[name]:
            if obj.get(key) is not None:
                row[name] = obj[key]
                break
    for name in score_columns:  # precomputed creativity scores (names from registry.py)
        if obj.get(name) is not None:
            row[name] = _number(obj[name], name, unit_range=True)
    return row


def _parse_preference(obj, score_columns=()):
    row = dict(obj)
    row["kind"] = "preference"
    if obj.get("prompt") is not None:  # TRL "explicit prompt": text or messages
        row["prompt"] = _prompt(obj["prompt"])
        row["chosen"] = _response(_field(obj, "chosen"), "chosen", row["prompt"])
        row["rejected"] = _response(_field(obj, "rejected"), "rejected", row["prompt"])
    elif isinstance(obj.get("chosen"), list) and isinstance(obj.get("rejected"), list):
        # TRL "implicit prompt": chosen and rejected are whole conversations; their shared turns are the prompt
        row["prompt"], chosen, rejected = _conversation(implicit_prompt, obj["chosen"], obj["rejected"])
        row["chosen"], row["rejected"] = _text(chosen, "chosen"), _text(rejected, "rejected")
    else:
        _field(obj, "prompt")
    for key in [f"{name}_{side}" for name in score_columns for side in ("chosen", "rejected")]:
        if obj.get(key) is not None:
            row[key] = _number(obj[key], key, unit_range=True)
    for key in ("score_chosen", "score_rejected"):  # e.g. UltraFeedback's ratings; only logged
        if obj.get(key) is not None:
            row[key] = _number(obj[key], key)
    return row


def _parse_line(raw, file_kind, score_columns):
    """One non-blank line (bytes) -> (kind, the JSON object, the parsed row); _BadRow names what is wrong.
    file_kind: the kind set by the file's first good row (None before it)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadRow("not UTF-8", f"not valid UTF-8 (byte {e.start + 1} of the line)") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise _BadRow("not JSON", f"not valid JSON: {e.msg} at column {e.colno}") from None
    if not isinstance(obj, dict):
        raise _BadRow("not a JSON object", f"expected a JSON object {{...}}, got {_json_type(obj)}")
    kind = "preference" if ("chosen" in obj or "rejected" in obj) else "rating"
    if file_kind is not None and kind != file_kind:
        raise _BadRow("other row kind", f"a {kind} row in a file of {file_kind} rows "
                                        f"(one kind per file, set by the first good row)")
    return kind, obj, (_parse_preference(obj, score_columns) if kind == "preference" else _parse_rating(obj, score_columns))


def _merge_duplicates(rows, merged, score_columns):
    """Each first row of a duplicated (prompt, response) gets the mean of its duplicates' score and creativity
    scores, and "merged_lines"; merged: {index into rows: [the duplicate rows, the first included]}."""
    for i, group in merged.items():
        first = rows[i]
        first["score"] = sum(r["score"] for r in group) / len(group)
        for name in score_columns:
            values = [r[name] for r in group if name in r]
            if values:
                first[name] = sum(values) / len(values)
        first["merged_lines"] = [r["line"] for r in group]


def read_rows(path, *, skip_bad_rows=False, score_columns=(), split_column=None):
    """Read a JSON Lines file (or a gzipped one, .jsonl.gz) of rating or preference rows -> (rows, ReadReport).

    Each row is a dict with "kind" and "line" (1-based source line) added. A bad row (not UTF-8, not JSON,
    not an object, missing field, wrong type, empty text, non-finite score, a row of the other kind) raises
    DataError("FILE:LINE: ...") or, with skip_bad_rows, is skipped and counted by reason. Rating rows with
    the same (prompt, response) (surrounding whitespace ignored) are merged into the first one:
    score = mean of their scores (creativity scores likewise), "merged_lines" lists the lines.
    score_columns: names of precomputed creativity scores to read and check (in [0, 1]): `name` in rating
    rows, `name_chosen` / `name_rejected` in preference rows (the CLIs pass registry.DIMENSIONS).
    split_column: rows merge only within one value of this column (a Test row never joins a Training row).
    """
    path = str(path)
    try:
        lines = files.read_lines(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, expected a JSON Lines file") from None
    except (OSError, EOFError) as e:  # EOFError, gzip.BadGzipFile: a damaged .gz file
        what = " (not a readable gzip file)" if isinstance(e, EOFError) or "gzip" in type(e).__name__.lower() else ""
        raise DataError(f"{path}: cannot read{what}: {getattr(e, 'strerror', None) or e}") from None

    report = ReadReport(path=path, lines=len(lines))
    rows, first_row_of = [], {}  # (prompt, response) -> index into rows
    merged = {}                  # index into rows -> list of merged rows (the first included)
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip():
            report.blank += 1
            continue
        report.read += 1
        try:
            kind, obj, row = _parse_line(raw, report.kind, score_columns)
        except _BadRow as bad:
            message = f"{path}:{lineno}: {bad.detail}"
            if not skip_bad_rows:
                raise DataError(f"{message} (fix the row, or skip such rows with --skip-bad-rows)") from None
            report.skipped[bad.reason] = report.skipped.get(bad.reason, 0) + 1
            report.examples.setdefault(bad.reason, message)
            continue
        report.kind = report.kind or kind
        row["line"] = lineno
        given = ((obj["prompt"] if obj.get("prompt") is not None else obj.get("chosen")) if kind == "preference"
                 else next((obj[k] for k in RATING_FIELDS["prompt"] if obj.get(k) is not None), None))
        report.conversations += isinstance(given, list)
        report.transcripts += isinstance(given, str) and row["prompt"] != given
        report.control_strings += any(has_control_string(row[k]) for k in ("prompt", "response", "chosen", "rejected")
                                      if isinstance(row.get(k), str))
        if kind == "rating":
            key = (prompt_key(row["prompt"]), row["response"].strip(), str(row.get(split_column)))
            if key in first_row_of:
                merged.setdefault(first_row_of[key], [rows[first_row_of[key]]]).append(row)
                report.duplicates_merged += 1
                continue
            first_row_of[key] = len(rows)
        rows.append(row)

    _merge_duplicates(rows, merged, score_columns)
    report.kept = len(rows)
    report.prompts = len({prompt_key(r["prompt"]) for r in rows})
    if report.read == 0:
        raise DataError(f"{path}: empty file (expected JSON Lines: one JSON object per line)")
    if not rows:
        reasons = ", ".join(f"{n} x {r}" for r, n in report.skipped.items())
        first = next(iter(report.examples.values()))
        raise DataError(f"{path}: no usable rows: {report.read:,} read, all skipped ({reasons}); "
                        f"first problem: {first}")
    assert report.read == report.kept + report.n_skipped + report.duplicates_merged
    return rows, report


# ----------------------------------------------------------------------------------------------------
# preference pairs

def _candidate_pairs(scores, min_margin):
    """All (chosen, rejected) index pairs of one prompt group with s_c - s_r >= min_margin and s_c > s_r.

    Returns (chosen, rejected, n_equal): index arrays in the order "largest margin first, then chosen
    index, then rejected index" (indices = row order in the file), and the number of pairs with equal
    scores. Vectorised: sorted by score, each response's partners form a suffix of the sorted array.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = len(s)
    order = np.argsort(s, kind="stable")
    ss = s[order]
    pos = np.arange(n)
    first_ok = np.maximum(np.searchsorted(ss, ss + max(min_margin, 0.0) - EPS, side="left"),
                          np.searchsorted(ss, ss + EPS, side="right"))   # first partner strictly above
    n_equal = int((np.searchsorted(ss, ss + EPS, side="right") - pos - 1).sum())
    counts = n - first_ok
    total = int(counts.sum())
    low = np.repeat(pos, counts)
    high = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(first_ok, counts)
    chosen, rejected = order[high], order[low]
    margin = np.round(s[chosen] - s[rejected], 9)
    by = np.lexsort((rejected, chosen, -margin))
    return chosen[by], rejected[by], n_equal


def _greedy_cap(chosen, rejected, n, cap):
    """Keep candidate k (in the given order) iff both of its responses have joined fewer than cap pairs."""
    joined = [0] * n
    keep = []
    open_responses = n
    for k, (c, r) in enumerate(zip(chosen.tolist(), rejected.tolist())):
        if joined[c] < cap and joined[r] < cap:
            keep.append(k)
            joined[c] += 1
            joined[r] += 1
            open_responses -= (joined[c] == cap) + (joined[r] == cap)
            if open_responses < 2:
                break
    return keep


def _length_balance(pairs, seed, stats):
    """Keep equally many pairs with len(chosen) > len(rejected) and < (characters); drop at random
    (seeded) from the larger side. Equal-length pairs favour neither side and are all kept."""
    longer = [i for i, p in enumerate(pairs) if len(p["chosen"]) > len(p["rejected"])]
    shorter = [i for i, p in enumerate(pairs) if len(p["chosen"]) < len(p["rejected"])]
    larger, smaller = (longer, shorter) if len(longer) > len(shorter) else (shorter, longer)
    drop = set(random.Random(seed).sample(larger, len(larger) - len(smaller)))
    stats["length_dropped"] = len(drop)
    return [p for i, p in enumerate(pairs) if i not in drop]


def build_pairs(rows, *, min_margin=0.0, max_pairs_per_response=None, length_balance=False, seed=0,
                source=None, score_columns=(), min_score=None, max_margin=None, cap_order="margin"):
    """Preference pairs from rows -> (pairs, stats).

    Rating rows, per prompt group: every pair (a, b) with s_a > s_b, s_a - s_b >= min_margin, both
    s_a, s_b >= min_score (when given) and s_a - s_b <= max_margin (when given) becomes {chosen: a,
    rejected: b} (equal scores give no preference). Thresholds are in the file's own score units.
    max_pairs_per_response = m: greedy over the candidates in cap_order, keep a pair iff both responses have
    joined < m kept pairs; cap_order "margin": largest margin first (ties: earlier chosen row, then earlier
    rejected row); "file": pairs (i, j), i < j, in the rows' file order, as the authors' prepare_preference_data
    (src/crpo/data.py: min score 20, margin 5, 10 pairs per response on MuCE). length_balance: see _length_balance.
    Each pair: {"prompt", "chosen", "rejected", "score_chosen", "score_rejected"} plus "<k>_chosen",
    "<k>_rejected" for each creativity score k both rows carry.
    Preference rows pass through (min_margin and max_pairs_per_response do not apply: no scores; rows
    with chosen == rejected are dropped and counted). No pairs at all is a DataError; source names the
    file in that message. stats: counts, with candidate_pairs == below_min_score + equal_score + below_margin +
    above_max_margin + capped + length_dropped + pairs for rating rows.
    """
    for name, v in (("min_score", min_score), ("max_margin", max_margin)):
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number or None, got {v!r}")
    if cap_order not in ("margin", "file"):
        raise ValueError(f"cap_order must be 'margin' or 'file', not {cap_order!r}")
    if not (isinstance(min_margin, (int, float)) and math.isfinite(min_margin) and min_margin >= 0):
        raise ValueError(f"min_margin must be a finite number >= 0, got {min_margin!r}")
    if max_pairs_per_response is not None and (not isinstance(max_pairs_per_response, int) or max_pairs_per_response < 1):
        raise ValueError(f"max_pairs_per_response must be an integer >= 1 or None, got {max_pairs_per_response!r}")
    source = source or "data"
    kinds = {r["kind"] for r in rows}
    if len(kinds) > 1:
        raise ValueError("rows of both kinds: read_rows gives one kind per file")
    stats = {"kind": kinds.pop() if kinds else "rating", "rows": len(rows), "length_dropped": 0}
    pairs = []
    if stats["kind"] == "preference":
        pairs = _preference_pairs(rows, score_columns, stats)
    else:
        groups = {}  # prompt_key -> its rows
        for r in rows:
            groups.setdefault(prompt_key(r["prompt"]), []).append(r)
        stats.update(prompts=len(groups), single_response_prompts=0, prompts_with_pairs=0, candidate_pairs=0,
                     below_min_score=0, equal_score=0, below_margin=0, above_max_margin=0, capped=0,
                     min_margin=min_margin, max_pairs_per_response=max_pairs_per_response, min_score=min_score,
                     max_margin=max_margin, cap_order=cap_order)
        for group in tqdm(groups.values(), desc="pairs", unit="prompt", disable=len(rows) < 20000, leave=False):
            prompt, n = group[0]["prompt"], len(group)
            if n == 1:
                stats["single_response_prompts"] += 1
                continue
            scores = np.array([r["score"] for r in group], dtype=np.float64)
            ok = np.arange(n) if min_score is None else np.flatnonzero(scores >= min_score - EPS)
            chosen, rejected, n_equal = _candidate_pairs(scores[ok], min_margin)
            chosen, rejected = ok[chosen], ok[rejected]  # indices into the group again
            n_candidates, n_ok = n * (n - 1) // 2, len(ok) * (len(ok) - 1) // 2
            stats["candidate_pairs"] += n_candidates
            stats["below_min_score"] += n_candidates - n_ok
            stats["equal_score"] += n_equal
            stats["below_margin"] += n_ok - n_equal - len(chosen)
            if max_margin is not None:
                within = scores[chosen] - scores[rejected] <= max_margin + EPS
                stats["above_max_margin"] += int((~within).sum())
                chosen, rejected = chosen[within], rejected[within]
            if cap_order == "file":  # the authors' loop: i over the rows, j > i, in file order
                by = np.lexsort((np.maximum(chosen, rejected), np.minimum(chosen, rejected)))
                chosen, rejected = chosen[by], rejected[by]
            keep = range(len(chosen)) if max_pairs_per_response is None else _greedy_cap(chosen, rejected, n, max_pairs_per_response)
            stats["capped"] += len(chosen) - len(keep)
            stats["prompts_with_pairs"] += len(keep) > 0
            for k in keep:
                a, b = group[chosen[k]], group[rejected[k]]
                p = {"prompt": prompt, "chosen": a["response"], "rejected": b["response"],
                     "score_chosen": a["score"], "score_rejected": b["score"]}
                for name in score_columns:
                    if name in a and name in b:
                        p[f"{name}_chosen"], p[f"{name}_rejected"] = a[name], b[name]
                pairs.append(p)
    if length_balance:
        pairs = _length_balance(pairs, seed, stats)
    stats["chosen_longer"] = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs)
    stats["chosen_shorter"] = sum(len(p["chosen"]) < len(p["rejected"]) for p in pairs)
    stats["equal_length"] = len(pairs) - stats["chosen_longer"] - stats["chosen_shorter"]
    stats["pairs"] = len(pairs)
    if not pairs:
        raise DataError(_no_pairs_message(rows, stats, source, min_margin, min_score, max_margin))
    return pairs, stats


def _preference_pairs(rows, score_columns, stats):
    """Preference rows as pairs (their creativity score columns kept); rows with chosen == rejected are dropped
    and counted in stats["identical_dropped"]."""
    pairs, identical = [], 0
    for r in rows:
        if r["chosen"].strip() == r["rejected"].strip():
            identical += 1
            continue
        p = {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"],
             "score_chosen": r.get("score_chosen"), "score_rejected": r.get("score_rejected")}
        p.update({k: r[k] for k in r if k.endswith(("_chosen", "_rejected")) and k.rsplit("_", 1)[0] in score_columns})
        pairs.append(p)
    stats.update(prompts=len({prompt_key(r["prompt"]) for r in rows}), identical_dropped=identical)
    return pairs


def _no_pairs_message(rows, stats, source, min_margin, min_score, max_margin):
    """Why build_pairs made no pairs, and what to do, in one line (the DataError's message)."""
    if stats["kind"] == "preference":
        why = f"{stats['identical_dropped']} rows with chosen == rejected"
        todo = "give chosen and rejected different texts"
    else:
        why = (f"{stats['prompts']} prompts ({stats['single_response_prompts']} with a single response), "
               f"{stats['equal_score']:,} pairs with equal scores, {stats['below_margin']:,} below "
               f"--min-margin {min_margin:g}")
        todo = ("lower --min-margin, or give each prompt several responses with different scores"
                if stats["below_margin"] else "give each prompt several responses with different scores")
        if stats["below_min_score"] or stats["above_max_margin"]:
            lo, hi = min(r["score"] for r in rows), max(r["score"] for r in rows)
            if min_score is not None:
                why += f", {stats['below_min_score']:,} with a response below --min-score {min_score:g}"
            if max_margin is not None:
                why += f", {stats['above_max_margin']:,} above --max-margin {max_margin:g}"
            todo = (f"thresholds are in the file's own score scale, here {lo:g} to {hi:g}: pass --min-score, "
                    f"--min-margin and --max-margin in that scale")
    if stats["length_dropped"]:
        why += f", {stats['length_dropped']} dropped by --length-balance"
        todo += ", or drop --length-balance"
    return f"{source}: no preference pairs: {why} ({todo})"


def pairs_summary(stats):
    """One or two lines describing build_pairs' stats, for the CLIs."""
    if stats["kind"] == "preference":
        s = f"{stats['pairs']:,} pairs from {stats['rows']:,} preference rows over {stats['prompts']:,} prompts"
        if stats["identical_dropped"]:
            s += f" ({stats['identical_dropped']:,} with chosen == rejected dropped)"
    else:
        cap, order = stats["max_pairs_per_response"], {"margin": "largest margin first", "file": "in file order"}
        s = (f"{stats['pairs']:,} pairs from {stats['prompts']:,} prompts ({stats['prompts_with_pairs']:,} give pairs, "
             f"{stats['single_response_prompts']:,} have one response): of {stats['candidate_pairs']:,} response "
             f"pairs, " + (f"{stats['below_min_score']:,} with a response below min score {stats['min_score']:g}, "
                           if stats["min_score"] is not None else "")
             + f"{stats['equal_score']:,} equal scores, {stats['below_margin']:,} below min margin {stats['min_margin']:g}"
             + (f", {stats['above_max_margin']:,} above max margin {stats['max_margin']:g}"
                if stats["max_margin"] is not None else "")
             + (f", {stats['capped']:,} over {cap} pairs per response ({order[stats['cap_order']]})" if cap else ""))
    if stats["length_dropped"]:
        s += f", {stats['length_dropped']:,} dropped to balance lengths"
    s += (f"\n  chosen longer in {stats['chosen_longer']:,}, shorter in {stats['chosen_shorter']:,}, "
          f"equal length in {stats['equal_length']:,}")
    return s


def build_split_pairs(rows, *, split_column=None, val_frac=PAIR_DEFAULTS["val_frac"], seed=0, source=None,
                      log=print, **pair_options):
    """(train_pairs, val_pairs) from rows, with the counts logged. split_column None or "": build_pairs over all rows,
    then split_by_prompt(val_frac, seed). split_column (e.g. MuCE's "Set"): split_rows first, then build_pairs
    inside each split (as the authors do), so no Test/Heldout row is in any pair and val_frac is not used; a
    validation split without pairs is empty. pair_options: build_pairs' keyword arguments."""
    if not split_column:
        pairs, stats = build_pairs(rows, seed=seed, source=source, **pair_options)
        log(pairs_summary(stats))
        return splits.split_by_prompt(pairs, val_frac, seed)
    try:
        parts, stats = splits.split_rows(rows, split_column, source or "data")
    except ValueError as e:  # a row without the column or with another value
        raise DataError(str(e)) from None
    log(splits.split_rows_summary(stats))
    if not parts["train"]:
        raise DataError(f"{source}: no row has {split_column} = Training (nothing to train on; drop --split-column "
                        f"to split by --val-frac instead)")
    train, stats = build_pairs(parts["train"], seed=seed, source=source, **pair_options)
    log("train: " + pairs_summary(stats))
    val = []
    if parts["validation"]:
        try:
            val, stats = build_pairs(parts["validation"], seed=seed, source=source, **pair_options)
            log("validation: " + pairs_summary(stats))
        except DataError as e:
            log(f"validation: no pairs ({str(e).split(': ', 2)[-1]})")
    return train, val


# ----------------------------------------------------------------------------------------------------
# CLI: check a file

def main(argv=None):
    ap = argparse.ArgumentParser(description="Check a CrPO data file: validate rows, build pairs, split, count tokens "
                                 "(with crpo.py's defaults, so it shows what training will use).",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("file", help="JSON Lines file (.jsonl or .jsonl.gz) of rating rows (MuCE style) or preference rows")
    ap.add_argument("--min-margin", type=float, default=PAIR_DEFAULTS["min_margin"],
                    help="smallest score difference that makes a pair (the file's own score scale)")
    ap.add_argument("--max-pairs-per-response", type=int, default=PAIR_DEFAULTS["max_pairs_per_response"],
                    help="cap on pairs any one response joins (0 = no cap)")
    ap.add_argument("--length-balance", action="store_true", help="as many pairs with the chosen longer as shorter")
    splits.add_pair_rule_flags(ap)
    ap.add_argument("--val-frac", type=float, default=PAIR_DEFAULTS["val_frac"],
                    help="fraction of prompts held out for validation")
    ap.add_argument("--show", type=int, default=0, help="print the first N training pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-bad-rows", action="store_true", help="skip and count bad rows instead of stopping")
    ap.add_argument("--tokens", action="store_true", help="also tokenize (loads the tokenizer of --model)")
    ap.add_argument("--model", default=None, help="model whose tokenizer --tokens uses (default: embedded default)")
    ap.add_argument("--max-len", type=int, default=512, help="longest sequence, prompt + response, in tokens")
    args = ap.parse_args(argv)
    checks = {"--min-margin must be a number >= 0": math.isfinite(args.min_margin) and args.min_margin >= 0,
              "--max-pairs-per-response must be >= 0 (0 = no cap)": args.max_pairs_per_response >= 0,
              "--val-frac must be in [0, 1)": 0 <= args.val_frac < 1, "--max-len must be >= 2": args.max_len >= 2}
    for message in (m for m, ok in checks.items() if not ok):
        ap.error(message)  # exits at the first
    try:
        columns = list(registry.DIMENSIONS)  # precomputed score columns to check
        rows, report = read_rows(args.file, skip_bad_rows=args.skip_bad_rows, score_columns=columns,
                                 split_column=args.split_column)
        print(report.summary())
        train, val = build_split_pairs(rows, split_column=args.split_column, val_frac=args.val_frac, seed=args.seed,
                                       source=args.file, **splits.pair_options(args, columns))
        print(splits.split_summary(train, val))
        for i, p in enumerate(train[:args.show]):
            print(f"pair {i + 1}: {p['prompt'][:70]!r}\n  chosen   ({p.get('score_chosen')}): {p['chosen'][:100]!r}"
                  f"\n  rejected ({p.get('score_rejected')}): {p['rejected'][:100]!r}")
        if args.tokens:
            import checkpoint
            _, tokenizer = checkpoint.load(args.model)
            for name, split in (("train", train), ("val", val)):
                if split:
                    print(f"{name}: " + tokens_summary(tokenize_pairs(split, tokenizer, args.max_len)[1]))
    except DataError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
