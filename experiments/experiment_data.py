"""Data of experiments/experiment.py: the held-out prompt split and the data subsets every run reads.

Per task, `per_task` prompt groups are held out with random.Random(split_seed); a group is the prompts sharing a task
and the first five words of the item, so near-duplicate stems ("When the kids were in the library" / "... they
found") never sit on both sides. The subsets are written as JSON Lines with their sha256, which the experiment
records in every run's fingerprint (a changed split cannot be mixed with old runs).
"""
import hashlib
import json
import os
import random
import re
from collections import defaultdict

import files

TASKS = ("Alternate Uses", "Instances", "Consequences", "Sentence Completion")


class SplitError(Exception):
    """A user-facing data problem: experiment.py prints it in one line and exits 1."""


def read_ratings(path):
    """Rating rows {prompt, response, score, task, item} of the four tasks from a .jsonl or .jsonl.gz file."""
    rows = []
    for _, r in files.read_json_objects(path, SplitError):
        if (r.get("task") in TASKS and r.get("item") and r.get("prompt") and r.get("response")
                and isinstance(r.get("score"), (int, float))):
            rows.append({k: r[k] for k in ("prompt", "response", "score", "task", "item")})
    if not rows:
        raise SplitError(f"--data {path}: no rating rows with task ({', '.join(TASKS)}), item, prompt, "
                              f"response and score")
    return rows


def group_key(row):
    """Prompts in one group are held out together: same task, same first five words of the item."""
    return row["task"], " ".join(re.findall(r"[\w']+", row["item"].lower())[:5])


def split_prompts(rows, per_task, seed):
    """-> (held-out prompts, training prompts), both sorted; per task, per_task groups sampled with the seed."""
    groups = defaultdict(set)
    for r in rows:
        groups[group_key(r)].add(r["prompt"])
    rng = random.Random(seed)
    held = set()
    for task in TASKS:
        keys = sorted(k for k in groups if k[0] == task)
        if len(keys) <= per_task:
            raise SplitError(f"{task}: only {len(keys)} prompt groups; lower --heldout-per-task {per_task}")
        for k in rng.sample(keys, per_task):
            held |= groups[k]
    return sorted(held), sorted({r["prompt"] for r in rows} - held)


def sample_rows(rows, prompts, per_prompt, seed):
    """At most per_prompt rows of each prompt (random.Random(seed) sample; per_prompt 0: all), in file order."""
    by_prompt = defaultdict(list)
    for i, r in enumerate(rows):
        by_prompt[r["prompt"]].append(i)
    rng = random.Random(seed)
    keep = []
    for p in prompts:
        idx = by_prompt[p]
        keep += rng.sample(idx, per_prompt) if 0 < per_prompt < len(idx) else idx
    return [rows[i] for i in sorted(keep)]


def write_rows(path, rows):
    """JSON Lines, atomically; -> sha256 of the bytes written (part of every run's fingerprint)."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    write_atomic(path, text)
    return hashlib.sha256(text).hexdigest()


def prepare_data(args):
    """Write WORK/data/{train,scorer_train,evaluator_train,heldout}.jsonl -> info dict (paths, hashes, prompts,
    counts). SplitError when the evaluator's prompts (held-out) meet the training or scorer prompts."""
    rows = read_ratings(args.data)
    heldout, train_prompts = split_prompts(rows, args.heldout_per_task, args.split_seed)
    d = os.path.join(args.work_dir, "data")
    files = {"train": sample_rows(rows, train_prompts, args.train_responses_per_prompt, args.split_seed),
             "scorer_train": sample_rows(rows, train_prompts, args.scorer_responses_per_prompt, args.split_seed),
             "evaluator_train": sample_rows(rows, heldout, args.evaluator_responses_per_prompt, args.split_seed),
             "heldout": sample_rows(rows, heldout, args.heldout_responses_per_prompt, args.split_seed)}
    info = {"paths": {}, "sha256": {}, "rows": {}}
    for name, subset in files.items():
        info["paths"][name] = os.path.join(d, f"{name}.jsonl")
        info["sha256"][name] = write_rows(info["paths"][name], subset)
        info["rows"][name] = len(subset)
    task_of = {r["prompt"]: r["task"] for r in rows}
    info["heldout_prompts"] = [{"prompt": p, "task": task_of[p]} for p in heldout]
    info["train_prompts"] = train_prompts
    prompts_of = lambda name: sorted({r["prompt"] for r in files[name]})  # noqa: E731
    info["scorer_prompts"], info["evaluator_prompts"] = prompts_of("scorer_train"), prompts_of("evaluator_train")
    check_disjoint(info["evaluator_prompts"], {"scorer_train": info["scorer_prompts"],
                                               "train": prompts_of("train")})
    info["sft_rows"] = sum(r["score"] >= args.sft_min_score for r in files["train"])
    return info


def check_disjoint(evaluator_prompts, others):
    """SplitError naming the first shared prompt when the evaluator's prompts meet any of others {name: prompts}:
    an arm trained with (or on) a prompt the evaluator was fitted on would be judged by a scorer that saw it."""
    for name, prompts in others.items():
        shared = sorted(set(evaluator_prompts) & set(prompts))
        if shared:
            raise SplitError(f"the originality evaluator's prompts and {name}.jsonl's share {len(shared)} prompts "
                             f"(e.g. {shared[0]!r}): the held-out split is broken; check --data and --split-seed")


def write_atomic(path, data):
    """PATH whole or not at all (files.write_atomic), from text or bytes."""
    files.write_atomic(path, lambda f: f.write(data if isinstance(data, bytes) else data.encode("utf-8")))
