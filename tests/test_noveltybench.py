"""noveltybench.py against the benchmark's published partitions, an independent re-implementation of its partition
loop, and hand computations (short-answer rule, utility, reward thresholds, agreement measures)."""
import json
import math
import os
import random

import numpy as np
import pytest

import eval as evaluation
import noveltybench as nb

CALIBRATION = [json.loads(line) for line in open(nb.CALIBRATION, encoding="utf-8")]


def official_loop(n, equivalent):
    """The benchmark's loop as its code runs it (src/partition.py): each new class takes the first unassigned
    generation i and sweeps every later unassigned j, asking equivalent(i, j)."""
    labels, classes = [-1] * n, 0
    for i in range(n):
        if labels[i] >= 0:
            continue
        labels[i] = classes
        for j in range(i + 1, n):
            if labels[j] == -1 and equivalent(i, j):
                labels[j] = classes
        classes += 1
    return labels


def test_the_data_ships_with_the_repository():
    curated = nb.read_curated()
    assert len(curated) == 100 and len({p["id"] for p in curated}) == 100
    assert len(CALIBRATION) == 48 and all(len(r["generations"]) == 10 for r in CALIBRATION)
    assert os.path.exists(os.path.join(nb.DATA_DIR, "LICENSE"))


def test_partition_reproduces_every_official_calibration_partition():
    """Equivalence replaced by the official labels: our partition equals theirs on all 48 prompts."""
    for row in CALIBRATION:
        gold = row["partition"]
        assert nb.partition(len(gold), lambda r, j: gold[r] == gold[j]) == gold, row["id"]
        same = np.equal.outer(gold, gold)
        assert nb.judged_partition(row["generations"], same, short_answer_rule=False) == gold, row["id"]


def test_published_partitions_predate_the_short_answer_rule():
    """With the benchmark code's short-answer rule in front of the official labels, 41 of 48 partitions are
    reproduced; the other 7 are exactly the prompts where the published labels contradict the rule on a pair of
    short answers (e.g. "Brad Pitt" and "Tom Hanks" in one class, which the rule separates): the published
    gemini-1.5-pro partitions (dated 2025-03-27) were not made with the rule of the released code."""
    differ, contradict = set(), set()
    for row in CALIBRATION:
        gold, gens = row["partition"], row["generations"]
        if nb.judged_partition(gens, np.equal.outer(gold, gold)) != gold:
            differ.add(row["id"])
        for r in range(10):
            for j in range(r + 1, 10):
                rule = nb.short_answer_equivalent(gens[r], gens[j])
                if rule is not None and rule != (gold[r] == gold[j]):
                    contradict.add(row["id"])
    assert differ == contradict == {"curated-50", "curated-68", "curated-69", "curated-70", "curated-87",
                                    "curated-92", "curated-99"}


def test_partition_equals_the_benchmark_loop_on_non_transitive_judges():
    rng = random.Random(0)
    for _ in range(500):
        n = rng.randint(1, 10)
        rel = {(i, j): rng.random() < 0.4 for i in range(n) for j in range(n)}  # asymmetric, not transitive
        assert nb.partition(n, lambda r, j: rel[r, j]) == official_loop(n, lambda i, j: rel[i, j])
    # by hand: 1 ~ 0 and 2 ~ 1 but not 2 ~ 0: 2 is compared with class 0's first member only
    rel = {(0, 1): True, (1, 2): True, (0, 2): False}
    assert nb.partition(3, lambda r, j: rel[r, j]) == [0, 0, 1]
    # a generation equivalent to two class representatives joins the first class
    assert nb.partition(3, lambda r, j: (r, j) in {(0, 2), (1, 2)}) == [0, 1, 0]


@pytest.mark.parametrize("a, b, expected", [
    ("Blue", "blue", True),                      # lower-cased
    ("  Paris ", "paris", True),                 # stripped
    ("Paris.", "Paris", False),                  # punctuation is part of the word in the benchmark's rule
    ("The cat", "A dog", False),                 # 2 * 0 >= 2 fails
    ("red green", "green", True),                # n = 2, shared 1: 2 >= 2
    ("red green blue", "red", False),            # n = 3, shared 1: 2 >= 3 fails
    ("red green blue", "blue red", True),        # n = 3, shared 2: 4 >= 3
    ("a a a b", "a", False),                     # n counts words, shared counts distinct words: 2 >= 4 fails
    ("one two three four five", "five four three", True),  # n = 5, shared 3: 6 >= 5
    ("one two three four five", "one two", False),          # n = 5, shared 2: 4 >= 5 fails
    ("one two three four five six", "one two three four five six", None),  # 6 words: the judge decides
    ("", "", True),
])
def test_short_answer_rule_by_hand(a, b, expected):
    assert nb.short_answer_equivalent(a, b) is expected
    assert nb.short_answer_equivalent(b, a) is expected


def test_short_answer_rule_overrides_the_judge():
    gens = ["Blue", "blue", "Red", "A much longer answer with more than five words in it"]
    never = np.zeros((4, 4), dtype=bool)
    assert nb.judged_partition(gens, never) == [0, 0, 1, 2]
    always = np.ones((4, 4), dtype=bool)
    assert nb.judged_partition(gens, always) == [0, 0, 1, 0]  # short vs long: judge (True) -> joins class 0


def test_utility_by_hand():
    labels, levels = [0, 0, 1, 2, 1], [5, 7, 3, 9, 2]
    u = nb.generation_scores(labels, levels)
    assert u == [5, 0, 3, 0 + 9, 0]
    # sum_i 0.8^i u_i / sum_i 0.8^i = (5 + 0.64*3 + 0.512*9) / (1 + .8 + .64 + .512 + .4096) = 11.528 / 3.3616
    assert nb.utility(u) == pytest.approx(11.528 / 3.3616, rel=1e-12)
    assert nb.utility([10] + [0] * 9) == pytest.approx(10 / sum(0.8 ** i for i in range(10)), rel=1e-12)
    assert nb.utility([4, 4], patience=0.5) == pytest.approx(4.0)


def test_reward_thresholds_at_the_boundaries():
    t = nb.SKYWORK_THRESHOLDS
    assert len(t) == 9 and list(t) == sorted(t)
    assert nb.quality_level(-100.0, t) == 1
    for i, x in enumerate(t):  # equal to a threshold: the lower level (bisect_left); just above: the next one
        assert nb.quality_level(x, t) == i + 1
        assert nb.quality_level(math.nextafter(x, math.inf), t) == i + 2
    assert nb.quality_level(100.0, t) == 10
    p = nb.PROBABILITY_THRESHOLDS
    assert [nb.quality_level(v, p) for v in (0.0, 0.1, 0.1000001, 0.55, 0.9, 0.95, 1.0)] == [1, 1, 2, 6, 9, 10, 10]


def test_quality_mapping_says_what_is_comparable():
    assert nb.quality_mapping("rm /models/Skywork-Reward-Gemma-2-27B-v0.2")[2] is True
    assert nb.quality_mapping("rm /models/Skywork-Reward-Gemma-2-27B-v0.2/")[0] == nb.SKYWORK_THRESHOLDS
    th, transform, comparable, note = nb.quality_mapping("rm /models/other-rm")
    assert not comparable and transform(0.0) == 0.5 and "sigmoid" in note
    assert nb.quality_mapping("judge")[2] is False
    with pytest.raises(nb.BenchmarkError):
        nb.quality_mapping("field score")


def test_agreement_measures_by_hand():
    # a = [0,0,1,1], b = [0,0,1,2]: sum C(n_ij,2) = 1, A = 2, B = 1, E = 2/6, ARI = (1 - 1/3) / (3/2 - 1/3) = 4/7
    assert nb.adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7, rel=1e-12)
    assert nb.adjusted_rand_index([5, 5, 3, 3], [1, 1, 0, 0]) == 1.0  # label names do not matter
    assert nb.adjusted_rand_index([0, 0, 0], [0, 0, 0]) == 1.0
    assert nb.same_class_counts([0, 0, 1, 1], [0, 0, 1, 2]) == (1, 1, 0)
    a = nb.agreement([[0, 0, 1, 1], [0, 1]], [[0, 0, 1, 2], [0, 0]])
    assert (a["precision"], a["recall"]) == (0.5, 0.5)
    assert a["abs_distinct_error"] == pytest.approx((1 + 1) / 2) and a["distinct"] == 2 and a["official_distinct"] == 2


def test_rouge1_by_hand():
    # words: [the, cat, sat] and [the, cat, the, dog]: shared counts 2 -> F1 = 2 * 2 / (3 + 4)
    assert nb.rouge1("the cat sat", "The cat, the dog!") == pytest.approx(4 / 7)
    assert nb.rouge1("", "x") == 0.0


def test_score_command_on_generations_made_elsewhere(tmp_path, capsys):
    src = tmp_path / "gens.jsonl"
    rows = CALIBRATION[:3]
    src.write_text("".join(json.dumps({k: r[k] for k in ("id", "prompt", "generations")}) + "\n" for r in rows))
    out = tmp_path / "scored.jsonl"
    assert nb.main(["score", "--data", str(src), "--out", str(out), "--judge", "unigram",
                    "--cache-dir", str(tmp_path / "cache")]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    ctx = nb.JudgeContext()
    for r, s in zip(rows, scored):
        assert s["generations"] == r["generations"] and s["id"] == r["id"]
        assert s["partition"] == nb.judged_partition(r["generations"], nb.unigram_judge(r["prompt"], r["generations"], ctx))
        assert s["distinct"] == len(set(s["partition"])) and "utility" not in s
    means = json.loads(capsys.readouterr().out.splitlines()[0])
    assert means["distinct"] == pytest.approx(np.mean([s["distinct"] for s in scored]))


def test_score_rows_with_levels_and_summary():
    rows = [{"id": "curated-1", "prompt": "p", "generations": ["red", "Red", "blue"], "partition": [0, 1, 1]},
            {"id": "curated-2", "prompt": "q", "generations": ["x", "y", "x"]}]
    never = lambda prompt, gens, ctx: np.zeros((len(gens), len(gens)), dtype=bool)  # noqa: E731
    scored = nb.score_rows(rows, never, None, levels=[[4, 9, 6], [2, 3, 8]])
    assert [s["partition"] for s in scored] == [[0, 0, 1], [0, 1, 0]]
    assert scored[0]["input_partition"] == [0, 1, 1] and "input_partition" not in scored[1]
    assert [s["generation_scores"] for s in scored] == [[4, 0, 6], [2, 3, 0]]
    assert [s["partition_scores"] for s in scored] == [[4, 6], [2, 3]]
    assert scored[0]["utility"] == pytest.approx((4 + 0.64 * 6) / 2.44)
    s = nb.summarize(scored, {"curated-1": "A", "curated-2": "B"}, n_boot=0)
    assert s["distinct"]["mean"] == 2 and s["utility"]["mean"] == pytest.approx(np.mean([r["utility"] for r in scored]))
    assert s["per_category"]["A"]["distinct"]["mean"] == 2 and s["per_category"]["B"]["prompts"] == 1


def test_bad_generations_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "a", "prompt": "p", "generations": ["x"]}) + "\n" +
                   json.dumps({"id": "b", "prompt": "p", "generations": "x"}) + "\n")
    assert nb.main(["score", "--data", str(bad), "--out", str(tmp_path / "o.jsonl"), "--judge", "unigram"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}:2: `generations` must be a non-empty list of strings"
    bad.write_text('{"id": "a", "prompt": "p"}\n')
    assert nb.main(["score", "--data", str(bad), "--out", str(tmp_path / "o.jsonl"), "--judge", "nope"]) == 1
    assert "not a registered judge" in capsys.readouterr().err


def test_eval_flags_for_the_benchmark():
    args = evaluation.parse_args(["--models", "base=default", "--benchmark", "noveltybench", "--limit", "3"])
    assert args.k == 10 and args.limit == 3 and args.data is None and args.judge == "local"
    assert evaluation.parse_args(["--models", "base=default", "--data", "x.jsonl"]).k == 8
    with pytest.raises(SystemExit):
        evaluation.parse_args(["--models", "base=default"])  # neither --data nor --benchmark
    with pytest.raises(SystemExit):
        evaluation.parse_args(["--models", "base=default", "--benchmark", "noveltybench", "--human-sheet", "d"])
