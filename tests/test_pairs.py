"""pairs.py: the authors' pair files (chosen-only scores) train as they are, the score population, MuCE's split
column through crpo's flags (SFT included)."""
import json
import os

import numpy as np
import pytest
import torch

import crpo
import data
import pairs
import registry
from conftest import ROOT
from fakes import ByteTokenizer

MUCE_STYLE = os.path.join(ROOT, "tests", "data", "muce_style.jsonl")
quiet = lambda *a, **k: None  # noqa: E731


def conversation(prompt, answer):
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


# their layout (src/crpo/data.py convert_to_trl_pref_dataset + extend_crpo_data.py without --include-rejected):
# prompt only inside the messages, score_* the human ratings, creativity scores for the chosen side only
THEIRS = [  # prompt, chosen, rejected, novelty, diversity, surprise (chosen), score_chosen, score_rejected
    ("Use for a brick?", "a doorstop", "a wall", 0.2, 0.9, 0.4, 40.0, 22.0),
    ("Use for a brick?", "pigment for a mural", "a wall", 1.0, 0.0, 0.7, 35.0, 22.0),
    ("Use for a brick?", "pigment for a mural", "a bookend", 1.0, 0.0, 0.7, 35.0, 28.0),
    ("Finish: The door opened and", "the ocean came in", "someone came in", 0.5, 1.0, 0.1, 45.0, 25.0),
    ("Finish: The door opened and", "a cat with a map", "someone came in", 0.0, 0.5, 1.0, 30.0, 25.0),
]


def write_theirs(path):
    with open(path, "w") as f:
        for p, c, r, nov, div, sur, sc, sr in THEIRS:
            f.write(json.dumps({"chosen": conversation(p, c), "rejected": conversation(p, r), "task": "AUT",
                                "dataset": "test", "score_label": "originality", "score_chosen": sc,
                                "score_rejected": sr, "novelty_chosen": nov, "diversity_chosen": div,
                                "surprise_chosen": sur}) + "\n")
    return str(path)


def lambdas_of(args):
    return {k: getattr(args, f"lambda_{k}") for k in registry.DIMENSIONS}


def trained_weights(path, *flags):
    """The pairs crpo trains on from `path` and the weight c of each, through load_pairs -> ensure_scores ->
    tokenize_splits -> Split.batch -> creativity_weights, as crpo.train runs them."""
    args = crpo.parse_args(["--data", path, "--val-frac", "0", *flags])
    train, val, _ = pairs.load_pairs(args, quiet)
    pairs.ensure_scores(train + val, lambdas_of(args), args, None, None, 0, 1)
    split = pairs.tokenize_splits(train, val, ByteTokenizer(), lambdas_of(args), args, quiet)["train"]
    b = split.batch(list(range(len(split.pairs))), 0, "cpu")
    return split.pairs, crpo.creativity_weights(b["scores_chosen"], b["scores_rejected"], lambdas_of(args),
                                                args.strategy, args.weight_on)


@pytest.mark.parametrize("strategy", ["add", "mult"])
def test_their_pair_file_trains_with_lambda_times_chosen_score(tmp_path, strategy):
    path = write_theirs(tmp_path / "theirs.jsonl")
    got_pairs, c = trained_weights(path, "--strategy", strategy, "--lambda-novelty", "0.5", "--lambda-diversity",
                                   "1.5", "--lambda-surprise", "2")
    # the [user, assistant] messages parse: prompt from the user turn, texts from the assistant turns
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in got_pairs] == [t[:3] for t in THEIRS]
    assert [(p["score_chosen"], p["score_rejected"]) for p in got_pairs] == [t[6:8] for t in THEIRS]
    hand = [0.5 * nov + 1.5 * div + 2 * sur if strategy == "add" else (0.5 * nov) * (1.5 * div) * (2 * sur)
            for _, _, _, nov, div, sur, _, _ in THEIRS]
    np.testing.assert_allclose(c.double().numpy(), hand, rtol=1e-6, atol=1e-7)


def test_their_pair_file_with_margin_weights_stops_naming_the_missing_columns(tmp_path):
    path = write_theirs(tmp_path / "theirs.jsonl")
    with pytest.raises(data.DataError) as e:
        trained_weights(path, "--weight-on", "margin")
    assert str(e.value).startswith(f"{path}: --weight-on margin needs novelty_rejected, diversity_rejected, "
                                   f"surprise_rejected, and the file has only novelty_chosen, diversity_chosen, "
                                   f"surprise_chosen")
    assert "\n" not in str(e.value) and "--weight-on chosen" in str(e.value)
    with pytest.raises(data.DataError, match="use --score-population all"):
        pairs.score_population(crpo.parse_args(["--data", path, "--weight-on", "margin", "--score-population",
                                                "chosen"]))


class WordEncoder:
    """Unit vectors from a seeded random matrix, one row per text (deterministic, any text)."""
    name = "word-encoder"

    def embed(self, texts, batch_size=64):
        rows = [np.random.default_rng(sum(map(ord, t)) * 7919 + len(t)).standard_normal(6) for t in texts]
        return torch.tensor(np.stack([r / np.linalg.norm(r) for r in rows]), dtype=torch.float32)


def scored(tmp_path, rows, population):
    """Diversity of each pair's chosen response, scored by crpo's ensure_scores over --score-population."""
    args = crpo.parse_args(["--data", "x.jsonl", "--lambda-novelty", "0", "--lambda-surprise", "0",
                            "--score-population", population, "--score-cache", str(tmp_path / "cache")])
    ps = [dict(zip(("prompt", "chosen", "rejected"), r)) for r in rows]
    pairs.ensure_scores(ps, lambdas_of(args), args, None, None, 0, 1, encoder=WordEncoder())
    return ps


def test_chosen_population_ignores_responses_that_are_only_rejected(tmp_path):
    rows = [("p", "a doorstop", "a wall"), ("p", "pigment for a mural", "a wall"), ("p", "a bed warmer", "a bookend"),
            ("p", "a doorstop", "a bed warmer")]
    other = [(p, c, "zz " + r) for p, c, r in rows[:3]] + [rows[3]]  # other texts that are only ever rejected
    a, b = scored(tmp_path, rows, "chosen"), scored(tmp_path, other, "chosen")
    assert [p["diversity_chosen"] for p in a] == [p["diversity_chosen"] for p in b]
    assert not any("diversity_rejected" in p for p in a)
    # min-max over the chosen set {a doorstop, pigment for a mural, a bed warmer}: its extremes are 0 and 1
    assert sorted({round(p["diversity_chosen"], 9) for p in a})[0] == 0.0 and max(p["diversity_chosen"] for p in a) == 1
    assert a[0]["diversity_chosen"] == a[3]["diversity_chosen"]  # one score per response
    # the "all" population (chosen and rejected) does see them: the test can tell the two apart
    x, y = scored(tmp_path, rows, "all"), scored(tmp_path, other, "all")
    assert [p["diversity_chosen"] for p in x] != [p["diversity_chosen"] for p in y]


def test_split_column_through_crpo_flags_for_pairs_and_sft():
    sets = {json.loads(line)["Response"]: json.loads(line)["Set"] for line in open(MUCE_STYLE)}
    args = crpo.parse_args(["--data", MUCE_STYLE, "--split-column", "Set", "--min-score", "20", "--min-margin", "5",
                            "--max-pairs-per-response", "10", "--cap-order", "file"])
    train, val, _ = pairs.load_pairs(args, quiet)
    assert (len(train), len(val)) == (15, 3)  # A: 9 pairs, B: 6; C: 3 (tests/test_data.py counts them by hand)
    assert {sets[p[s]] for p in train for s in ("chosen", "rejected")} == {"Training"}
    assert {sets[p[s]] for p in val for s in ("chosen", "rejected")} == {"Validation"}
    args = crpo.parse_args(["--data", MUCE_STYLE, "--objective", "sft", "--split-column", "Set", "--sft-min-score", "30"])
    train, val, _ = pairs.load_pairs(args, quiet)
    # Training rows >= 30: a1 40, a3 35, a5 30, b1 50, b3 60, b4 44; Validation: c1 30, c2 45 (Test's 60 and 50: never)
    assert sorted(p["chosen"] for p in train) == sorted(
        ["a doorstop for a windy kitchen", "grind it into pigment for cave paintings", "a bookend on a shelf",
         "a lock pick for a diary", "bend it into a miniature sculpture of the owner", "a zipper pull replacement"])
    assert sorted(p["chosen"] for p in val) == ["the cat walked in holding a map", "the ocean poured into the hallway"]


def test_sft_batches_are_single_sequences_chosen_by_the_objective(tmp_path):
    """--objective sft: SFT examples without a rejected side, an SftSplit whose batches are one row per example
    ([B, T], no rejected rows, scores or reference); the same pairs under --objective crpo: a Split of [2B, T].
    The objective decides, not the keys: pairs that do carry a rejected side tokenize as SFT sequences under sft."""
    path = write_theirs(tmp_path / "theirs.jsonl")
    tok = ByteTokenizer()
    sft_args = crpo.parse_args(["--data", path, "--val-frac", "0", "--objective", "sft"])
    examples, _, _ = pairs.load_pairs(sft_args, quiet)
    # the chosen side of the preference rows, each (prompt, chosen) once
    assert [(e["prompt"], e["chosen"]) for e in examples] == list(dict.fromkeys((t[0], t[1]) for t in THEIRS))
    assert not any("rejected" in e for e in examples)
    crpo_args = crpo.parse_args(["--data", path, "--val-frac", "0", "--lambda-novelty", "1"])
    train, _, _ = pairs.load_pairs(crpo_args, quiet)
    assert all("rejected" in p for p in train)
    for given, args in ((examples, sft_args), (train, sft_args), (train, crpo_args)):
        split = pairs.tokenize_splits(given, [], tok, lambdas_of(args) if args is crpo_args else {}, args,
                                      quiet)["train"]
        idx = [2, 0, 1]
        b = split.batch(idx, tok.pad_id, "cpu")
        chosen = [tok.chat(given[i]["prompt"], given[i]["chosen"]) for i in idx]
        T = max(len(ids) for ids, _ in chosen)
        if args is sft_args:
            assert type(split) is pairs.SftSplit and set(b) == {"input_ids", "attention_mask", "response_mask"}
            assert b["input_ids"].shape == (3, T)
            assert split.response_tokens(idx) == sum(len(ids) - start for ids, start in chosen) \
                == b["response_mask"].sum()
        else:
            rejected = [tok.chat(given[i]["prompt"], given[i]["rejected"])[0] for i in idx]
            assert type(split) is pairs.Split and b["input_ids"].shape == (6, max(T, *map(len, rejected)))
            assert set(b) == {"input_ids", "attention_mask", "response_mask", "scores_chosen", "scores_rejected", "ref"}
            assert [b["input_ids"][3 + r, :len(ids)].tolist() for r, ids in enumerate(rejected)] == rejected
        for r, (ids, start) in enumerate(chosen):  # rows 0..B-1: the chosen sequences either way
            assert b["input_ids"][r, :len(ids)].tolist() == ids and b["attention_mask"][r].sum() == len(ids)
            assert b["response_mask"][r].nonzero().flatten().tolist() == list(range(start, len(ids)))

# ----------------------------------------------------------------------------------------------------
# DivPO pairs (pairs.divpo_pairs)

HAND_VECTORS = {"A": (1.0, 0.0), "B": (0.0, 1.0), "C": (1.0, 0.0), "D": (1.0, 1.0)}


def hand_embed(texts):
    return np.array([HAND_VECTORS[t] for t in texts], dtype=np.float64)


def rating(prompt, response, score):
    return {"kind": "rating", "prompt": prompt, "response": response, "score": score}


def test_divpo_picks_the_most_diverse_high_and_the_least_diverse_low_response_by_hand():
    # cos: A.B 0, A.C 1, A.D B.D C.D 1/sqrt 2 (= .7071); div = mean of (1 - cos) over the 3 others:
    # div(A) = (1 + 0 + .2929) / 3 = .4310, div(B) = (1 + 1 + .2929) / 3 = .7643, div(C) = .4310, div(D) = .2929
    rows = [rating("p", "A", 4.0), rating("p", "B", 3.0), rating("p", "C", 1.0), rating("p", "D", 2.0)]
    got, stats = pairs.divpo_pairs(rows, hand_embed, pool_size=0, high=3.0, low=2.0)
    # high (>= 3): A .431, B .764 -> B (not A, the best rated); low (<= 2): C .431, D .293 -> D (not C, the worst rated)
    assert [(p["chosen"], p["rejected"]) for p in got] == [("B", "D")]
    assert (got[0]["score_chosen"], got[0]["score_rejected"]) == (3.0, 2.0)
    assert got[0]["diversity_pool_chosen"] == pytest.approx((2 + 1 - 2 ** -0.5) / 3, abs=1e-12)
    assert got[0]["diversity_pool_rejected"] == pytest.approx(1 - 2 ** -0.5, abs=1e-12)
    assert (stats["pools"], stats["pairs"], stats["no_high"], stats["no_low"]) == (1, 1, 0, 0)
    # with the threshold at 4 only A is high: the pair is (A, D)
    got, _ = pairs.divpo_pairs(rows, hand_embed, pool_size=0, high=4.0, low=2.0)
    assert [(p["chosen"], p["rejected"]) for p in got] == [("A", "D")]


def test_divpo_pools_are_seeded_disjoint_and_cover_every_response():
    import random
    pools = pairs.divpo_pools(11, 4, random.Random(3))
    assert [len(p) for p in pools] == [5, 6]  # k = 11 // 4 = 2 pools of 11 // 2 and 11 // 2 + 1
    assert sorted(i for p in pools for i in p) == list(range(11))
    assert pools == pairs.divpo_pools(11, 4, random.Random(3))
    assert pairs.divpo_pools(5, 0, random.Random(0))[0] != [] and len(pairs.divpo_pools(5, 0, random.Random(0))) == 1
    assert len(pairs.divpo_pools(3, 8, random.Random(0))) == 1  # fewer responses than a pool: one pool of all


def test_divpo_skips_and_counts_pools_without_a_high_or_a_low_response():
    rows = [rating("good", "A", 4.0), rating("good", "D", 1.0),  # a pair
            rating("all low", "A", 1.0), rating("all low", "B", 2.0),  # no high
            rating("all high", "A", 5.0), rating("all high", "B", 3.5),  # no low
            rating("middle", "A", 2.5), rating("middle", "B", 2.5),  # neither: counted once, as no high
            rating("alone", "A", 5.0)]
    got, stats = pairs.divpo_pairs(rows, hand_embed, pool_size=0, high=3.0, low=2.0)
    assert [(p["prompt"], p["chosen"], p["rejected"]) for p in got] == [("good", "A", "D")]
    assert {k: stats[k] for k in ("prompts", "pools", "no_high", "no_low", "single_response_prompts", "pairs")} == {
        "prompts": 5, "pools": 4, "no_high": 2, "no_low": 1, "single_response_prompts": 1, "pairs": 1}
    with pytest.raises(data.DataError, match="no DivPO pairs: 3 pools, 2 without .* >= --divpo-high 3, 1 without"):
        pairs.divpo_pairs(rows[2:], hand_embed, pool_size=0, high=3.0, low=2.0)
    with pytest.raises(ValueError, match="--divpo-high .* above --divpo-low"):
        pairs.divpo_pairs(rows, hand_embed, high=2.0, low=2.0)


def test_divpo_through_crpo_flags(tmp_path):
    rows = [{"prompt": f"uses for a brick {i}", "response": f"answer {j} with words {'x ' * j}", "score": 1.0 + j % 5}
            for i in range(3) for j in range(10)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = crpo.parse_args(["--data", str(path), "--pairs", "divpo", "--divpo-pool", "5", "--divpo-high", "4",
                            "--divpo-low", "2", "--val-frac", "0", "--score-cache", str(tmp_path / "cache")])
    train, val, _ = pairs.load_pairs(args, quiet)
    assert val == [] and 1 <= len(train) <= 6  # 3 prompts x 2 pools of 5, at most one pair each
    assert all(p["score_chosen"] >= 4 and p["score_rejected"] <= 2 for p in train)
    assert train == pairs.load_pairs(args, quiet)[0]  # seeded pools
