"""experiments/experiment_data.py: the held-out split (whole groups, every task, seeded), sampling, .gz reading."""
import gzip
import json
import os
import sys

import pytest

from experiments import experiment_data as split


def rows_of(prompts_per_task):
    """Rating rows: per task, items -> 3 responses each (scores 1, 2, 3)."""
    rows = []
    for task, items in prompts_per_task.items():
        for item in items:
            rows += [{"task": task, "item": item, "prompt": f"{task}: {item}", "response": f"r{j}", "score": j}
                     for j in (1, 2, 3)]
    return rows


ITEMS = {"Alternate Uses": ["ball", "shoe", "sock"], "Instances": ["round", "soft"],
         "Consequences": ["no sleep", "tiny"],
         # the first two share their first five words: one group, held out together or not at all
         "Sentence Completion": ["When the kids were in the library", "When the kids were in the library they",
                                 "At lunch"]}


def test_group_key_is_task_and_first_five_words():
    assert split.group_key({"task": "T", "item": "When the kids were in the library"}) == ("T", "when the kids were in")


@pytest.mark.parametrize("seed", range(6))
def test_split_holds_out_whole_groups_from_every_task(seed):
    rows = rows_of(ITEMS)
    held, train = split.split_prompts(rows, 1, seed)
    assert not set(held) & set(train) and set(held) | set(train) == {r["prompt"] for r in rows}
    assert {p.split(":")[0] for p in held} == set(ITEMS)
    library = {"Sentence Completion: When the kids were in the library",
               "Sentence Completion: When the kids were in the library they"}
    assert library <= set(held) or not library & set(held)
    assert split.split_prompts(rows, 1, seed) == (held, train)  # seeded


def test_split_needs_a_training_group_per_task():
    with pytest.raises(split.SplitError, match="Instances: only 2 prompt groups; lower --heldout-per-task 2"):
        split.split_prompts(rows_of(ITEMS), 2, 0)


def test_sample_rows_caps_per_prompt_in_file_order():
    rows = rows_of({"Instances": ["round", "soft"]})
    got = split.sample_rows(rows, ["Instances: round"], 2, seed=0)
    assert len(got) == 2 and all(r["prompt"] == "Instances: round" for r in got)
    assert [rows.index(r) for r in got] == sorted(rows.index(r) for r in got)
    assert split.sample_rows(rows, ["Instances: soft"], 0, seed=0) == rows[3:]  # 0: all


def test_read_ratings_reads_gz_and_keeps_the_four_tasks(tmp_path):
    rows = rows_of(ITEMS) + [{"task": "Other", "item": "x", "prompt": "p", "response": "r", "score": 1}]
    with gzip.open(tmp_path / "r.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps({**r, "source": "s"}) for r in rows) + "\n")
    got = split.read_ratings(str(tmp_path / "r.jsonl.gz"))
    assert got == rows[:-1]
    (tmp_path / "bad.jsonl").write_text('{"task": 1}\nnot json\n')
    with pytest.raises(split.SplitError, match=r"bad.jsonl:2: not JSON"):
        split.read_ratings(str(tmp_path / "bad.jsonl"))
    (tmp_path / "list.jsonl").write_text(json.dumps(rows[0]) + "\n[1, 2]\n")  # a line that is JSON but no object
    with pytest.raises(split.SplitError, match=r"list.jsonl:2: expected a JSON object per line"):
        split.read_ratings(str(tmp_path / "list.jsonl"))
    with pytest.raises(split.SplitError, match=r"missing.jsonl: cannot read"):
        split.read_ratings(str(tmp_path / "missing.jsonl"))


def test_evaluator_prompts_must_be_disjoint_from_the_arms_prompts():
    split.check_disjoint(["a", "b"], {"scorer_train": ["c"], "train": ["d", "e"]})  # disjoint: no error
    with pytest.raises(split.SplitError, match=r"evaluator's prompts and train.jsonl's share 1 prompts \(e.g. 'b'\)"):
        split.check_disjoint(["a", "b"], {"scorer_train": ["c"], "train": ["b", "e"]})


def test_prepare_data_writes_the_evaluator_data_from_the_heldout_prompts_only(tmp_path):
    import argparse
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows_of(ITEMS)))
    args = argparse.Namespace(data=str(tmp_path / "r.jsonl"), heldout_per_task=1, split_seed=0, work_dir=str(tmp_path),
                              train_responses_per_prompt=2, scorer_responses_per_prompt=0,
                              evaluator_responses_per_prompt=2, heldout_responses_per_prompt=0, sft_min_score=2)
    info = split.prepare_data(args)
    held = {p["prompt"] for p in info["heldout_prompts"]}
    assert set(info["evaluator_prompts"]) == held and not held & set(info["scorer_prompts"])
    assert set(info["scorer_prompts"]) == set(info["train_prompts"])
    assert info["rows"]["evaluator_train"] == 2 * len(held)  # 2 of each held-out prompt's 3 responses
