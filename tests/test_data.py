import gzip
import itertools
import json
import os
import random
import subprocess
import sys

import pytest
import torch

import data
import splits
import tokenizer as tokenization
from conftest import ROOT, SHARED_DATA

FIELD = os.path.join(os.path.dirname(__file__), "data", "field_cases")

SCORES = ("novelty", "diversity", "surprise", "quality")  # the score columns these rows carry (crpo passes score.py's)
READ_ROWS, BUILD_PAIRS = data.read_rows, data.build_pairs


@pytest.fixture(autouse=True)
def score_columns(monkeypatch):
    """data.py reads only the score columns its caller names: here, these tests' four."""
    monkeypatch.setattr(data, "read_rows", lambda *a, **k: READ_ROWS(*a, **{"score_columns": SCORES, **k}))
    monkeypatch.setattr(data, "build_pairs", lambda *a, **k: BUILD_PAIRS(*a, **{"score_columns": SCORES, **k}))


def write(tmp_path, lines, name="rows.jsonl"):
    """lines: dicts (written as JSON), str (written as is) or bytes; one per line."""
    path = tmp_path / name
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line.encode() if isinstance(line, str) else line) + b"\n")
    return str(path)


def rating(prompt="p", response="r", score=1.0, **extra):
    return {"prompt": prompt, "response": response, "score": score, **extra}


def pref(prompt="p", chosen="good", rejected="bad", **extra):
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **extra}


def accounted(report):
    return report.read == report.kept + sum(report.skipped.values()) + report.duplicates_merged


# ---------------------------------------------------------------------------------------------------------------------
# validation: each bad row stops with FILE:LINE, or is skipped and counted under its reason

BAD_RATING_ROWS = [
    ('{"prompt": "p", "response": "r", "score": 1', "not JSON", "not valid JSON"),
    ("[1, 2, 3]", "not a JSON object", "expected a JSON object"),
    ('"just a string"', "not a JSON object", "got a string"),
    ({"prompt": "p", "score": 1.0}, "missing field", "missing field 'response'"),
    ({"prompt": "p", "response": "r"}, "missing field", "missing field 'score'"),
    ({"response": "r", "score": 1.0}, "missing field", "missing field 'prompt'"),
    ({"prompt": "p", "response": None, "score": 1.0}, "missing field", "missing field 'response'"),
    ({"prompt": "p", "response": 5, "score": 1.0}, "wrong type", "'response' must be a string"),
    ({"prompt": 3, "response": "r", "score": 1.0}, "wrong type", "'prompt' must be a string"),
    ({"prompt": ["p"], "response": "r", "score": 1.0}, "unrenderable conversation", "'prompt' message 0 must be"),
    ({"prompt": [{"role": "user", "content": "p"}, {"role": "user", "content": "q"}], "response": "r", "score": 1.0},
     "unrenderable conversation", "'prompt' message 1 is 'user' where 'assistant' was expected"),
    ({"prompt": "<|im_start|>user\np", "response": "r", "score": 1.0}, "unrenderable conversation",
     "starts like a rendered ChatML chat transcript but does not parse"),
    ({"prompt": "p", "response": "r", "score": "3.5"}, "wrong type", "'score' must be a number"),
    ({"prompt": "p", "response": "r", "score": True}, "wrong type", "'score' must be a number"),
    ({"prompt": "p", "response": "", "score": 1.0}, "empty response", "'response' is empty"),
    ({"prompt": "p", "response": " \t\n ", "score": 1.0}, "empty response", "'response' is empty"),
    ({"prompt": "  ", "response": "r", "score": 1.0}, "empty prompt", "'prompt' is empty"),
    ('{"prompt": "p", "response": "r", "score": NaN}', "non-finite score", "'score' is nan"),
    ('{"prompt": "p", "response": "r", "score": Infinity}', "non-finite score", "'score' is inf"),
    ('{"prompt": "p", "response": "r", "score": -Infinity}', "non-finite score", "'score' is -inf"),
    ('{"prompt": "p", "response": "r", "score": 1e999}', "non-finite score", "'score' is inf"),
    (b'{"prompt": "p", "response": "caf\xe9", "score": 1}', "not UTF-8", "not valid UTF-8"),
    (pref(), "other row kind", "a preference row in a file of rating rows"),
    (rating(novelty=1.5), "score out of range", "'novelty' is 1.5"),
    (rating(diversity="high"), "wrong type", "'diversity' must be a number"),
    ('{"prompt": "p", "response": "r", "score": 2, "quality": NaN}', "non-finite score", "'quality' is nan"),
]


@pytest.mark.parametrize("bad,reason,detail", BAD_RATING_ROWS)
def test_bad_rating_row_stops_with_file_and_line(tmp_path, bad, reason, detail):
    path = write(tmp_path, [rating("p1", "a", 1.0), bad, rating("p1", "b", 3.0)])
    with pytest.raises(data.DataError) as e:
        data.read_rows(path)
    message = str(e.value)
    assert message.startswith(f"{path}:2: "), message
    assert detail in message
    assert "--skip-bad-rows" in message  # says what to do


@pytest.mark.parametrize("bad,reason,detail", BAD_RATING_ROWS)
def test_bad_rating_row_skipped_and_counted(tmp_path, bad, reason, detail):
    path = write(tmp_path, [rating("p1", "a", 1.0), bad, rating("p1", "b", 3.0)])
    rows, report = data.read_rows(path, skip_bad_rows=True)
    assert [r["response"] for r in rows] == ["a", "b"]
    assert [r["line"] for r in rows] == [1, 3]
    assert (report.read, report.kept, report.duplicates_merged) == (3, 2, 0)
    assert report.skipped == {reason: 1}
    assert report.examples[reason].startswith(f"{path}:2: ") and detail in report.examples[reason]
    assert accounted(report)
    assert f"skipped 1 x {reason}" in report.summary()


BAD_PREFERENCE_ROWS = [
    ({"prompt": "p", "chosen": "c"}, "missing field", "missing field 'rejected'"),
    ({"chosen": "c", "rejected": "r"}, "missing field", "missing field 'prompt'"),
    (pref(chosen=""), "empty response", "'chosen' is empty"),
    (pref(rejected="   "), "empty response", "'rejected' is empty"),
    (pref(chosen=3), "wrong type", "'chosen' must be a string or a list of chat messages"),
    (pref(chosen=[{"role": "assistant"}]), "unrenderable conversation", "'chosen' message 0 must be"),
    (pref(chosen=["hello"]), "unrenderable conversation", "'chosen' message 0 must be"),
    (pref(chosen=[{"role": "user", "content": "hi"}]), "unrenderable conversation",
     "'chosen' is a conversation that does not start with the prompt's turns"),
    (pref(chosen=[{"role": "user", "content": "p"}]), "unrenderable conversation",
     "'chosen' must end in exactly one assistant message after the prompt, got nothing"),
    (pref(chosen=[{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}]),
     "unrenderable conversation", "'chosen' must end in exactly one assistant message after the prompt, got assistant, user"),
    (pref(prompt=[{"role": "system", "content": "s"}]), "unrenderable conversation", "'prompt' ends with a system turn"),
    ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
      "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]},
     "unrenderable conversation", "share no prompt turns"),
    (pref(novelty_chosen=-0.1), "score out of range", "'novelty_chosen' is -0.1"),
    ('{"prompt": "p", "chosen": "c", "rejected": "r", "surprise_rejected": NaN}', "non-finite score",
     "'surprise_rejected' is nan"),
    (rating(), "other row kind", "a rating row in a file of preference rows"),
    ("not json at all", "not JSON", "not valid JSON"),
]


@pytest.mark.parametrize("bad,reason,detail", BAD_PREFERENCE_ROWS)
def test_bad_preference_row(tmp_path, bad, reason, detail):
    path = write(tmp_path, [pref("p1"), bad, pref("p2")])
    with pytest.raises(data.DataError) as e:
        data.read_rows(path)
    assert str(e.value).startswith(f"{path}:2: ") and detail in str(e.value)
    rows, report = data.read_rows(path, skip_bad_rows=True)
    assert [r["prompt"] for r in rows] == ["p1", "p2"]
    assert report.skipped == {reason: 1} and report.kind == "preference" and accounted(report)


def test_kind_is_set_by_first_good_row(tmp_path):
    # line 1 is a broken preference row, so the file's kind comes from line 2 (rating); line 3 is the other kind
    path = write(tmp_path, [{"prompt": "p", "chosen": "c"}, rating("p", "a", 1.0), pref(), rating("p", "b", 2.0)])
    rows, report = data.read_rows(path, skip_bad_rows=True)
    assert report.kind == "rating" and [r["line"] for r in rows] == [2, 4]
    assert report.skipped == {"missing field": 1, "other row kind": 1}
    assert accounted(report)


def test_file_level_errors(tmp_path):
    for lines in ([], ["", "   ", "\t"]):
        path = write(tmp_path, lines, name=f"empty{len(lines)}.jsonl")
        with pytest.raises(data.DataError, match=r"empty file") as e:
            data.read_rows(path, skip_bad_rows=True)
        assert str(e.value).startswith(f"{path}: ")
    path = write(tmp_path, ["{bad", rating(response=""), "[]"], name="allbad.jsonl")
    with pytest.raises(data.DataError) as e:
        data.read_rows(path, skip_bad_rows=True)
    message = str(e.value)
    assert message.startswith(f"{path}: no usable rows: 3 read")
    assert "1 x not JSON" in message and "1 x empty response" in message and "1 x not a JSON object" in message
    assert f"{path}:1: not valid JSON" in message  # points at the first problem
    with pytest.raises(data.DataError, match="no such file"):
        data.read_rows(str(tmp_path / "nope.jsonl"))
    with pytest.raises(data.DataError, match="is a directory"):
        data.read_rows(str(tmp_path))


def test_blank_lines_bom_crlf_and_line_numbers(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = [json.dumps(rating("p", "a", 1.0)), "", "   ", json.dumps(rating("p", "b", 2.0)), "", "{oops"]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())  # BOM, CRLF, no final newline
    with pytest.raises(data.DataError, match=rf"^{path}:6: not valid JSON"):
        data.read_rows(str(path))
    rows, report = data.read_rows(str(path), skip_bad_rows=True)
    assert [(r["response"], r["line"]) for r in rows] == [("a", 1), ("b", 4)]
    assert (report.lines, report.blank, report.read, report.kept) == (6, 3, 3, 2)
    assert report.skipped == {"not JSON": 1} and accounted(report)
    assert "3 blank lines ignored" in report.summary()


def test_counts_add_up_on_a_mixed_file(tmp_path):
    lines = [rating("p1", "a", 1.0), rating("p1", "b", 2.0), "", rating("p1", "a", 3.0), "{x", rating("p2", "c", 5),
             rating("p1", " a ", 2.0), rating("p2", "c", 1), rating("p2", "", 1), "", rating("p2", "d", 4.0)]
    rows, report = data.read_rows(write(tmp_path, lines), skip_bad_rows=True)
    assert (report.lines, report.blank, report.read) == (11, 2, 9)
    assert (report.kept, report.duplicates_merged, report.skipped) == (4, 3, {"not JSON": 1, "empty response": 1})
    assert report.prompts == 2 and accounted(report)
    assert "9 rows read (rating rows), 4 kept, 2 skipped, 3 duplicates merged" in report.summary()


def test_duplicates_merge_to_the_mean(tmp_path):
    lines = [rating("p", "same", 1.0, novelty=0.2, task="AUT"), rating("p", "other", 2.0),
             rating("p", "same ", 2.0, novelty=0.4), rating("q", "same", 9.0), rating(" p", "\tsame", 4.5, novelty=0.9)]
    rows, report = data.read_rows(write(tmp_path, lines))
    assert report.duplicates_merged == 2 and report.kept == 3 and accounted(report)
    first = rows[0]
    assert first["response"] == "same" and first["line"] == 1 and first["merged_lines"] == [1, 3, 5]
    assert first["score"] == pytest.approx((1.0 + 2.0 + 4.5) / 3, abs=1e-12)
    assert first["novelty"] == pytest.approx((0.2 + 0.4 + 0.9) / 3, abs=1e-12)
    assert first["task"] == "AUT"
    assert rows[2]["prompt"] == "q" and rows[2]["score"] == 9.0  # same response, other prompt: not a duplicate
    assert "merged_lines" not in rows[1]


def test_muce_aliases(tmp_path):
    muce = {"FullPrompt": "Name a use for a brick.", "Prompt": "brick", "Response": "doorstop",
            "facsco_grm_scaled": -0.25, "TasksNamesFull": "Alternate Uses Task", "Language": "eng",
            "Dataset": "muce-01", "Participant": 17}
    rows, report = data.read_rows(write(tmp_path, [muce, {"Prompt": "short", "Response": "x", "score": 2}]))
    r = rows[0]
    assert (r["kind"], r["prompt"], r["response"], r["score"]) == ("rating", "Name a use for a brick.", "doorstop", -0.25)
    assert (r["task"], r["language"], r["dataset"], r["Participant"]) == ("Alternate Uses Task", "eng", "muce-01", 17)
    assert not {"FullPrompt", "Prompt", "Response", "facsco_grm_scaled"} & set(r)
    assert rows[1]["prompt"] == "short" and rows[1]["score"] == 2.0


def test_preference_rows_strings_and_chat_messages(tmp_path):
    lines = [
        pref("plain", "yes", "no", novelty_chosen=0.75, novelty_rejected=0.25, score_chosen=5, extra="kept"),
        {"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "ok"}, {"role": "user", "content": "second"}],
         "chosen": [{"role": "assistant", "content": "C"}], "rejected": [{"role": "assistant", "content": "R"}]},
        {"chosen": [{"role": "user", "content": "implicit"}, {"role": "assistant", "content": "C2"}],
         "rejected": [{"role": "user", "content": "implicit"}, {"role": "assistant", "content": "R2"}]},
    ]
    rows, report = data.read_rows(write(tmp_path, lines))
    assert report.kind == "preference" and report.kept == 3
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows] == [
        ("plain", "yes", "no"), ("System: be brief\n\nUser: first\n\nAssistant: ok\n\nUser: second", "C", "R"),
        ("implicit", "C2", "R2")]
    assert rows[1]["prompt"].messages == (("system", "be brief"), ("user", "first"), ("assistant", "ok"), ("user", "second"))
    assert report.conversations == 2 and "2 rows with the prompt as chat messages" in report.summary()
    assert rows[0]["extra"] == "kept" and rows[0]["novelty_chosen"] == 0.75
    pairs, stats = data.build_pairs(rows)
    assert pairs[0] == {"prompt": "plain", "chosen": "yes", "rejected": "no", "score_chosen": 5.0,
                        "score_rejected": None, "novelty_chosen": 0.75, "novelty_rejected": 0.25}
    assert pairs[1]["score_chosen"] is None and "novelty_chosen" not in pairs[1]
    assert stats["pairs"] == 3 and stats["identical_dropped"] == 0


def test_conversation_layouts_keep_every_turn(tmp_path):
    """The handed rows (explicit [system, user, assistant, user] prompt; TRL implicit prompt with a system message),
    a rating row whose prompt is a message list, UltraFeedback's layout (chosen repeats the prompt), a multi-turn
    implicit prompt, and a transcript prompt with control-token strings: every turn and system message kept."""
    rows, report = data.read_rows(os.path.join(FIELD, "multiturn_system_prompt_dropped.jsonl"))
    assert [r["prompt"].messages for r in rows] == [
        (("system", "Always answer in exactly three words."), ("user", "Name a use for a brick."),
         ("assistant", "Build a wall."), ("user", "Now a more unusual one, please.")),
        (("system", "Reply like a pirate."), ("user", "Use for a spoon?"))]
    assert [(r["chosen"], r["rejected"]) for r in rows] == [("Miniature moss garden.", "Another wall, maybe."),
                                                            ("Arr, a tiny catapult for peas!", "Eating soup.")]
    assert (report.kept, report.conversations, report.n_skipped) == (2, 2, 0)
    turns = [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
             {"role": "user", "content": "u2"}]
    lines = [{"prompt": turns, "response": [{"role": "assistant", "content": "R"}], "score": 2},
             {"prompt": turns, "response": "R2", "score": 1}]
    rows, report = data.read_rows(write(tmp_path, lines, "ratings.jsonl"))
    assert rows[0]["prompt"] == rows[1]["prompt"] and rows[0]["prompt"].messages[0] == ("system", "S")
    assert [r["response"] for r in rows] == ["R", "R2"] and report.prompts == 1
    pairs, _ = data.build_pairs(rows)
    assert [(p["prompt"].messages, p["chosen"], p["rejected"]) for p in pairs] == [(rows[0]["prompt"].messages, "R", "R2")]
    lines = [{"prompt": "A use?", "chosen": [{"role": "user", "content": "A use?"}, {"role": "assistant", "content": "C"}],
              "rejected": [{"role": "user", "content": "A use?"}, {"role": "assistant", "content": "R"}]},
             {"chosen": turns + [{"role": "assistant", "content": "C"}], "rejected": turns + [{"role": "assistant", "content": "R"}]}]
    rows, report = data.read_rows(write(tmp_path, lines, "prefs.jsonl"))
    assert [(r["prompt"], r["chosen"], r["rejected"]) for r in rows][0] == ("A use?", "C", "R")
    assert rows[1]["prompt"].messages == tuple((m["role"], m["content"]) for m in turns)
    bad = pref("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu1 <|im_end|> text<|im_end|>\n")
    with pytest.raises(data.DataError, match=r"bad.jsonl:1: the prompt starts like a rendered ChatML chat transcript"):
        data.read_rows(write(tmp_path, [bad], "bad.jsonl"))
    rows, report = data.read_rows(write(tmp_path, lines[:2] + [pref("<|im_start|>user\nu1 <|im_end|>\n", "C", "R")],
                                        "prefs2.jsonl"))
    assert rows[2]["prompt"] == "u1 " and (report.conversations, report.transcripts) == (1, 1)


def test_preference_identical_pairs_dropped_and_counted(tmp_path):
    rows, _ = data.read_rows(write(tmp_path, [pref("a", "x", "x"), pref("b", "x", "y")]))
    pairs, stats = data.build_pairs(rows)
    assert [p["prompt"] for p in pairs] == ["b"] and stats["identical_dropped"] == 1
    rows, _ = data.read_rows(write(tmp_path, [pref("a", "x", "x ")], name="only.jsonl"))
    with pytest.raises(data.DataError, match="no preference pairs: 1 rows with chosen == rejected"):
        data.build_pairs(rows, source="only.jsonl")


# ---------------------------------------------------------------------------------------------------------------------
# pairs

def rows_of(*groups):
    """groups: (prompt, [(response, score), ...]) -> rating rows as read_rows makes them."""
    rows = []
    for prompt, responses in groups:
        for response, score in responses:
            rows.append({"kind": "rating", "prompt": prompt, "response": response, "score": score, "line": len(rows) + 1})
    return rows


GROUP_A = ("A", [("r1", 1.0), ("r2", 3.0), ("r3", 3.0), ("r4", 4.5), ("r5", 2.0)])


def pair_tuples(pairs):
    return [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]


def test_pairs_by_hand_min_margin():
    rows = rows_of(GROUP_A, ("solo", [("only", 3.0)]))
    pairs, stats = data.build_pairs(rows, min_margin=1.5)
    # margins: r4-r1 3.5, r4-r5 2.5, r2-r1 2, r3-r1 2, r4-r2 1.5, r4-r3 1.5 | below: r5-r1, r2-r5, r3-r5 (1.0) | r2=r3
    assert pair_tuples(pairs) == [("A", "r4", "r1"), ("A", "r4", "r5"), ("A", "r2", "r1"), ("A", "r3", "r1"),
                                  ("A", "r4", "r2"), ("A", "r4", "r3")]
    assert [(p["score_chosen"], p["score_rejected"]) for p in pairs[:2]] == [(4.5, 1.0), (4.5, 2.0)]
    assert (stats["prompts"], stats["single_response_prompts"], stats["prompts_with_pairs"]) == (2, 1, 1)
    assert (stats["candidate_pairs"], stats["equal_score"], stats["below_margin"], stats["capped"]) == (10, 1, 3, 0)
    assert stats["pairs"] == 6
    pairs0, stats0 = data.build_pairs(rows)  # min_margin 0: every pair with different scores
    assert len(pairs0) == 9 and stats0["equal_score"] == 1 and stats0["below_margin"] == 0
    assert all(p["score_chosen"] > p["score_rejected"] for p in pairs0)


def test_pairs_group_by_prompt_ignoring_surrounding_whitespace():
    pairs, stats = data.build_pairs(rows_of(("p", [("a", 1.0)]), ("p ", [("b", 2.0)]), ("\np", [("c", 3.0)])))
    assert pair_tuples(pairs) == [("p", "c", "a"), ("p", "b", "a"), ("p", "c", "b")] and stats["prompts"] == 1


def test_pairs_margin_is_robust_to_float_rounding():
    assert 3.3 - 1.3 < 2.0  # the float trap this guards against
    pairs, stats = data.build_pairs(rows_of(("p", [("hi", 3.3), ("lo", 1.3), ("mid", 1.31)])), min_margin=2.0)
    assert pair_tuples(pairs) == [("p", "hi", "lo")] and stats["below_margin"] == 2


def test_pairs_max_pairs_per_response_greedy_by_hand():
    pairs, stats = data.build_pairs(rows_of(GROUP_A), min_margin=1.5, max_pairs_per_response=2)
    # greedy, largest margin first: r4-r1 (r4:1 r1:1), r4-r5 (r4:2), r2-r1 (r1:2), r3-r1 (r1 full), r4-r2, r4-r3 (r4 full)
    assert pair_tuples(pairs) == [("A", "r4", "r1"), ("A", "r4", "r5"), ("A", "r2", "r1")]
    assert stats["capped"] == 3 and stats["pairs"] == 3
    pairs, stats = data.build_pairs(rows_of(GROUP_A), min_margin=1.5, max_pairs_per_response=1)
    # r4-r1, then r2-r5? margin 1 < 1.5; r2-r1 (r1 full) ... r4-r5 (r4 full): only one pair
    assert pair_tuples(pairs) == [("A", "r4", "r1")] and stats["capped"] == 5


def reference_pairs(groups, min_margin, cap):
    """Brute force: all pairs over every (i<j), sorted by (-margin, chosen index, rejected index), greedy cap."""
    out = []
    for prompt, responses in groups:
        cands = []
        for i, j in itertools.combinations(range(len(responses)), 2):
            (ri, si), (rj, sj) = responses[i], responses[j]
            if round(abs(si - sj), 9) == 0 or round(abs(si - sj), 9) < min_margin:
                continue
            c, r = (i, j) if si > sj else (j, i)
            cands.append((-round(abs(si - sj), 9), c, r))
        cands.sort()
        joined = [0] * len(responses)
        for _, c, r in cands:
            if cap is None or (joined[c] < cap and joined[r] < cap):
                joined[c] += 1
                joined[r] += 1
                out.append((prompt, responses[c][0], responses[r][0]))
    return out


@pytest.mark.parametrize("min_margin,cap", [(0.0, None), (0.5, None), (1.0, 2), (0.0, 1), (2.0, 3)])
def test_pairs_match_brute_force(min_margin, cap):
    rng = random.Random(7)
    groups = [(f"p{g}", [(f"g{g}r{i}", rng.choice([1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0])) for i in range(rng.randint(1, 14))])
              for g in range(12)]
    pairs, stats = data.build_pairs(rows_of(*groups), min_margin=min_margin, max_pairs_per_response=cap)
    assert pair_tuples(pairs) == reference_pairs(groups, min_margin, cap)
    assert stats["candidate_pairs"] == sum(len(r) * (len(r) - 1) // 2 for _, r in groups)
    assert stats["candidate_pairs"] == stats["equal_score"] + stats["below_margin"] + stats["capped"] + stats["pairs"]
    assert stats["single_response_prompts"] == sum(len(r) == 1 for _, r in groups)


def test_pairs_carry_creativity_scores():
    rows = rows_of(("p", [("a", 1.0), ("b", 2.0), ("c", 3.0)]))
    rows[0].update(novelty=0.1, diversity=0.3)
    rows[1].update(novelty=0.5)
    rows[2].update(novelty=0.9, diversity=0.7)
    pairs, _ = data.build_pairs(rows)
    by = {(p["chosen"], p["rejected"]): p for p in pairs}
    assert by["c", "a"]["novelty_chosen"] == 0.9 and by["c", "a"]["novelty_rejected"] == 0.1
    assert by["c", "a"]["diversity_chosen"] == 0.7 and by["c", "a"]["diversity_rejected"] == 0.3
    assert by["b", "a"]["novelty_chosen"] == 0.5 and "diversity_chosen" not in by["b", "a"]  # b has none


def test_length_balance_by_hand():
    # chosen longer: (xxxx > a), (yyy > b), (zzzzz > c); chosen shorter: (d < eeeeee); equal length: (ff = gg)
    rows = rows_of(("p1", [("xxxx", 5.0), ("a", 1.0)]), ("p2", [("yyy", 5.0), ("b", 1.0)]),
                   ("p3", [("zzzzz", 5.0), ("c", 1.0)]), ("p4", [("d", 5.0), ("eeeeee", 1.0)]),
                   ("p5", [("ff", 5.0), ("gg", 1.0)]))
    pairs, stats = data.build_pairs(rows, length_balance=True, seed=3)
    assert (stats["chosen_longer"], stats["chosen_shorter"], stats["equal_length"]) == (1, 1, 1)
    assert stats["length_dropped"] == 2 and stats["pairs"] == 3
    assert ("p4", "d", "eeeeee") in pair_tuples(pairs) and ("p5", "ff", "gg") in pair_tuples(pairs)
    assert stats["candidate_pairs"] == stats["equal_score"] + stats["below_margin"] + stats["capped"] + \
        stats["length_dropped"] + stats["pairs"]
    kept_longer = {frozenset(pair_tuples(data.build_pairs(rows, length_balance=True, seed=s)[0])) for s in range(20)}
    assert len(kept_longer) == 3  # the seed picks which longer pair survives; each seed is deterministic
    assert pair_tuples(data.build_pairs(rows, length_balance=True, seed=3)[0]) == pair_tuples(pairs)
    assert [p["prompt"] for p in pairs] == sorted(p["prompt"] for p in pairs)  # input order kept


def test_no_pairs_is_a_file_level_error():
    with pytest.raises(data.DataError) as e:
        data.build_pairs(rows_of(("p", [("a", 1.0), ("b", 1.5)]), ("q", [("c", 2.0)])), min_margin=1.0, source="f.jsonl")
    message = str(e.value)
    assert message.startswith("f.jsonl: no preference pairs") and "1 with a single response" in message
    assert "1 below --min-margin 1" in message and "lower --min-margin" in message
    with pytest.raises(data.DataError, match="2 pairs with equal scores"):
        data.build_pairs(rows_of(("p", [("a", 2.0), ("b", 2.0)]), ("q", [("c", 3.0), ("d", 3.0)])))
    with pytest.raises(data.DataError, match="--length-balance"):
        data.build_pairs(rows_of(("p", [("long", 2.0), ("s", 1.0)])), length_balance=True)


def test_pair_argument_errors():
    with pytest.raises(ValueError):
        data.build_pairs(rows_of(GROUP_A), min_margin=-1)
    with pytest.raises(ValueError):
        data.build_pairs(rows_of(GROUP_A), max_pairs_per_response=0)


# ---------------------------------------------------------------------------------------------------------------------
# splits

def test_split_by_prompt_is_disjoint_and_seeded():
    pairs = [{"prompt": f"p{i % 10}", "chosen": f"c{i}", "rejected": "r"} for i in range(100)]
    train, val = splits.split_by_prompt(pairs, 0.2, seed=1)
    train_prompts, val_prompts = {p["prompt"] for p in train}, {p["prompt"] for p in val}
    assert not train_prompts & val_prompts and len(val_prompts) == 2 and len(train_prompts) == 8
    assert len(train) + len(val) == 100
    assert train == [p for p in pairs if p["prompt"] in train_prompts]  # order kept
    assert splits.split_by_prompt(pairs, 0.2, seed=1) == (train, val)
    assert len({frozenset(p["prompt"] for p in splits.split_by_prompt(pairs, 0.2, seed=s)[1]) for s in range(10)}) > 1
    assert splits.split_by_prompt(pairs, 0.0, seed=1) == (pairs, [])


def test_split_keeps_both_sides_non_empty():
    pairs = [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}]
    for frac in (0.01, 0.5, 0.99):
        train, val = splits.split_by_prompt(pairs, frac, seed=0)
        assert len({p["prompt"] for p in train}) == 1 and len({p["prompt"] for p in val}) == 1
    assert splits.split_by_prompt([{"prompt": "a"}] * 3, 0.5, seed=0) == ([{"prompt": "a"}] * 3, [])
    with pytest.raises(ValueError):
        splits.split_by_prompt(pairs, 1.0, seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# tokens and batches

class CharTokenizer:
    """Char-level ids with a fake chat template: [SYS EOT USER] prompt [EOT ASSISTANT] | response [EOT]."""
    SYS, EOT, USER, ASSISTANT = 1, 2, 3, 4

    def encode(self, text):
        return [ord(c) for c in text]

    def chat(self, prompt, response=None):
        ids = [self.SYS, self.EOT, self.USER] + self.encode(prompt) + [self.EOT, self.ASSISTANT]
        start = len(ids)
        if response is not None:
            ids = ids + self.encode(response) + [self.EOT]
        return ids, start


S, E, U, A = 1, 2, 3, 4


def chars(s):
    return [ord(c) for c in s]


def test_tokenize_without_truncation():
    pairs = [{"prompt": "hi", "chosen": "abc", "rejected": "de"}]
    items, stats = tokenization.tokenize_pairs(pairs, CharTokenizer(), max_len=100)
    assert items == [{"chosen_ids": [S, E, U] + chars("hi") + [E, A] + chars("abc") + [E], "chosen_start": 7,
                      "rejected_ids": [S, E, U] + chars("hi") + [E, A] + chars("de") + [E], "rejected_start": 7,
                      "index": 0}]
    assert (stats["tokens"], stats["response_tokens"], stats["longest"]) == (11 + 10, 4 + 3, 11)
    assert stats["truncated_prompt"] == stats["truncated_response"] == stats["dropped_empty_response"] == 0


def test_tokenize_truncates_prompt_left_then_response_right():
    pairs = [{"prompt": "abcdefgh", "chosen": "xyz", "rejected": "q"}]
    head, tail = [S, E, U], [E, A]
    # prompt part 3 + 8 + 2 = 13 tokens; chosen response 4 (with EOT), rejected 2
    items, stats = tokenization.tokenize_pairs(pairs, CharTokenizer(), max_len=15)  # 2 over: drop "ab", same for both
    assert items[0]["chosen_ids"] == head + chars("cdefgh") + tail + chars("xyz") + [E]
    assert items[0]["rejected_ids"] == head + chars("cdefgh") + tail + chars("q") + [E]
    assert items[0]["chosen_start"] == items[0]["rejected_start"] == 11
    assert (stats["truncated_prompt"], stats["truncated_response"]) == (1, 0)

    items, stats = tokenization.tokenize_pairs(pairs, CharTokenizer(), max_len=8)  # whole prompt text, then chosen's EOT
    assert items[0]["chosen_ids"] == head + tail + chars("xyz") and items[0]["chosen_start"] == 5
    assert items[0]["rejected_ids"] == head + tail + chars("q") + [E]
    assert (stats["truncated_prompt"], stats["truncated_response"], stats["longest"]) == (1, 1, 8)

    items, stats = tokenization.tokenize_pairs(pairs + pairs[:1], CharTokenizer(), max_len=5)  # no room for any response
    assert items == [] and stats["dropped_empty_response"] == 2 and stats["items"] == 0

    pairs2 = [{"prompt": "p", "chosen": "long answer", "rejected": "no"}, {"prompt": "abcdef", "chosen": "c", "rejected": "r"}]
    items, stats = tokenization.tokenize_pairs(pairs2, CharTokenizer(), max_len=9)
    # pair 0: 6 + 12 is 9 over: the prompt text "p" goes first (even though the response is the long part),
    # then the chosen response is cut to the 4 tokens left; rejected "no" + EOT fits.
    # pair 1: 11 + 2 is 4 over: drop "abcd"
    assert items[0]["chosen_ids"] == head + tail + chars("long") and items[0]["chosen_start"] == 5
    assert items[0]["rejected_ids"] == head + tail + chars("no") + [E]
    assert items[1]["chosen_ids"] == head + chars("ef") + tail + chars("c") + [E] and items[1]["index"] == 1
    assert (stats["truncated_prompt"], stats["truncated_response"]) == (2, 1)
    assert all(len(it["chosen_ids"]) <= 9 and len(it["rejected_ids"]) <= 9 for it in items)


def test_tokenize_keeps_template_with_a_real_bpe():
    """A byte-level BPE (trained here) with a ChatML template: truncation keeps the template's head and the
    assistant header even where BPE merges could blur the boundary between template and prompt text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "user assistant system", "a brick is a doorstop"] * 20
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))

    class ChatML:
        def chat(self, prompt, response=None):
            text = (f"<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
                    "<|im_start|>assistant\n")
            ids = tok.encode(text).ids
            start = len(ids)
            if response is not None:
                ids = ids + tok.encode(response).ids + [tok.token_to_id("<|im_end|>")]
            return ids, start

    chat = ChatML()
    head = tok.encode("<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n").ids
    tail = tok.encode("<|im_end|>\n<|im_start|>assistant\n").ids
    prompt = "the quick brown fox jumps over the lazy dog " * 3
    items, stats = tokenization.tokenize_pairs([{"prompt": prompt, "chosen": "a brick", "rejected": "a dog"}], chat, max_len=40)
    ids, start = items[0]["chosen_ids"], items[0]["chosen_start"]
    assert start == items[0]["rejected_start"] and ids[:start] == items[0]["rejected_ids"][:start]  # one cut for both
    assert max(len(ids), len(items[0]["rejected_ids"])) == 40  # the longer side fills max_len exactly
    assert stats["truncated_prompt"] == 1 and stats["truncated_response"] == 0
    assert ids[:len(head)] == head and ids[start - len(tail):start] == tail
    assert ids[start:] == tok.encode("a brick").ids + [tok.token_to_id("<|im_end|>")]
    full_prompt = chat.chat(prompt)[0]
    assert ids[len(head):start - len(tail)] == full_prompt[len(full_prompt) - len(tail) - (start - len(tail) - len(head)):
                                                           len(full_prompt) - len(tail)]  # the prompt's right end


def test_collate_by_hand():
    items = [{"chosen_ids": [5, 6, 7, 8], "chosen_start": 2, "rejected_ids": [5, 6, 9], "rejected_start": 2},
             {"chosen_ids": [5, 10], "chosen_start": 1, "rejected_ids": [5, 11, 12, 13, 14], "rejected_start": 1}]
    batch = data.collate(items, pad_id=0)
    assert set(batch) == {"input_ids", "attention_mask", "response_mask"}
    assert all(t.dtype == torch.long and t.shape == (4, 5) for t in batch.values())
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 0], [5, 10, 0, 0, 0], [5, 6, 9, 0, 0], [5, 11, 12, 13, 14]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 1, 1, 1, 1]]
    with pytest.raises(ValueError):
        data.collate([], pad_id=0)


def test_pad_batch_without_responses_and_common_prefix_by_hand():
    ids, att, resp = data.pad_batch([[7, 8, 9], [4]], pad_id=2)
    assert ids.tolist() == [[7, 8, 9], [4, 2, 2]] and att.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert resp.tolist() == [[0, 0, 0], [0, 0, 0]] and ids.dtype == att.dtype == resp.dtype == torch.long
    assert tokenization.common_prefix_len([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == 2
    assert tokenization.common_prefix_len([[1, 2], [1, 2, 3]]) == 2  # one sequence is a prefix of the other
    assert tokenization.common_prefix_len([[1, 2], [3, 2]]) == tokenization.common_prefix_len([[], [1]]) == 0
    assert tokenization.common_prefix_len([[5, 6, 7]]) == 3


def test_tokenize_then_collate_masks_cover_response_and_eot():
    pairs = [{"prompt": "ab", "chosen": "xy", "rejected": "z"}, {"prompt": "c", "chosen": "w", "rejected": "vvv"}]
    items, _ = tokenization.tokenize_pairs(pairs, CharTokenizer(), max_len=64)
    batch = data.collate(items, pad_id=99)
    ids, att, resp = batch["input_ids"], batch["attention_mask"], batch["response_mask"]
    response_texts = ["xy", "w", "z", "vvv"]  # chosen rows first, then rejected
    for row, text in enumerate(response_texts):
        assert ids[row][resp[row].bool()].tolist() == chars(text) + [E]
        n = int(att[row].sum())
        assert ids[row, n:].eq(99).all() and att[row, :n].eq(1).all()


# ---------------------------------------------------------------------------------------------------------------------
# CLI, sample file, real data

def test_cli_good_and_bad_file(tmp_path, capsys):
    good = write(tmp_path, [rating("p1", "a", 1.0), rating("p1", "b", 3.0), rating("p2", "c", 2.0), rating("p2", "d", 5.0)])
    assert data.main([good, "--min-margin", "1", "--val-frac", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "4 rows read (rating rows), 4 kept, 0 skipped" in out and "2 pairs from 2 prompts" in out
    assert "train: 1 pairs over 1 prompts; val: 1 pairs over 1 prompts" in out
    assert data.main([good, "--min-margin", "3.5"]) == 1
    assert capsys.readouterr().err.startswith(f"{good}: no preference pairs")
    bad = write(tmp_path, [rating("p1", "a", 1.0), '{"prompt": "p1", "response": "b", "score": NaN}'], name="bad.jsonl")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "data.py"), bad], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.startswith(f"{bad}:2: field 'score' is nan")
    assert "Traceback" not in proc.stderr + proc.stdout


def test_sample_file():
    rows, report = data.read_rows(os.path.join(ROOT, "examples", "muce_sample.jsonl"))
    assert report.kind == "rating" and report.n_skipped == 0 and report.duplicates_merged == 0
    per_prompt = {}
    for r in rows:
        per_prompt.setdefault(r["prompt"], []).append(r)
        assert 1.0 <= r["score"] <= 5.0 and r["task"] and r["item"]
    assert len(per_prompt) >= 8 and all(len(g) >= 8 for g in per_prompt.values())
    assert len({r["task"] for r in rows}) >= 6 and 80 <= len(rows) <= 120
    pairs, stats = data.build_pairs(rows, min_margin=1.0)
    train, val = splits.split_by_prompt(pairs, 0.1, seed=0)
    assert train and val and not {p["prompt"] for p in train} & {p["prompt"] for p in val}


def test_real_ratings():
    rows, report = data.read_rows(SHARED_DATA)  # gzipped: read_rows decompresses it
    assert (report.kind, report.read, report.n_skipped, report.blank) == ("rating", 29007, 0, 0)
    raw = [json.loads(line) for line in gzip.open(SHARED_DATA, "rt", encoding="utf-8")]
    unique = {(r["prompt"].strip(), r["response"].strip()) for r in raw}
    assert report.kept == len(rows) == len(unique) and report.duplicates_merged == 29007 - len(unique)
    assert accounted(report) and report.prompts == len({r["prompt"] for r in raw}) == 44

    pairs, stats = data.build_pairs(rows, min_margin=2.0, max_pairs_per_response=2)
    sizes = {}
    for r in rows:
        sizes[r["prompt"]] = sizes.get(r["prompt"], 0) + 1
    assert stats["candidate_pairs"] == sum(n * (n - 1) // 2 for n in sizes.values())
    assert stats["candidate_pairs"] == stats["equal_score"] + stats["below_margin"] + stats["capped"] + stats["pairs"]
    assert stats["pairs"] == len(pairs) > 1000
    joined = {}
    for p in pairs:
        assert p["score_chosen"] - p["score_rejected"] >= 2.0 - 1e-9
        for side in ("chosen", "rejected"):
            joined[p["prompt"], p[side]] = joined.get((p["prompt"], p[side]), 0) + 1
    assert max(joined.values()) <= 2
    train, val = splits.split_by_prompt(pairs, 0.1, seed=0)
    assert train and val and len(train) + len(val) == len(pairs)
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in val}


def test_gzip_file_reads_like_the_plain_file(tmp_path):
    import gzip
    plain = write(tmp_path, [rating("p", "a", 1.0), rating("p", "b", 3.0), "not json"])
    zipped = tmp_path / "rows.jsonl.gz"
    zipped.write_bytes(gzip.compress(open(plain, "rb").read()))
    rows_plain, _ = data.read_rows(plain, skip_bad_rows=True)
    rows_gz, report = data.read_rows(str(zipped), skip_bad_rows=True)
    assert rows_gz == rows_plain and report.skipped == {"not JSON": 1}
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b"{}\n")[:12])
    with pytest.raises(data.DataError, match="not a readable gzip file"):
        data.read_rows(str(broken))


# ---------------------------------------------------------------------------------------------------------------------
# the authors' pair rules (min score, max margin, file-order cap) and MuCE's split column

MUCE_STYLE = os.path.join(ROOT, "tests", "data", "muce_style.jsonl")  # 21 rows, 7 prompts, every Set value


def authors_pairs(groups, min_score, min_margin, max_margin, cap):
    """Their prepare_preference_data, restated: for i < j in file order skip a pair when either score < min_score,
    the gap < min_margin or > max_margin, or either response already joined `cap` pairs; higher score chosen.
    (Equal scores: they would pair them with min_margin 0; crpo never does, so these groups use min_margin > 0.)"""
    out = []
    for prompt, responses in groups:
        joined = [0] * len(responses)
        for i, j in itertools.combinations(range(len(responses)), 2):
            (ri, si), (rj, sj) = responses[i], responses[j]
            if min(si, sj) < min_score or abs(si - sj) < min_margin or (max_margin is not None and abs(si - sj) > max_margin):
                continue
            if joined[i] + 1 > cap or joined[j] + 1 > cap:
                continue
            joined[i] += 1
            joined[j] += 1
            out.append((prompt, ri, rj) if si > sj else (prompt, rj, ri))
    return out


@pytest.mark.parametrize("min_score,min_margin,max_margin,cap", [(20, 5, None, 10), (20, 5, None, 2), (30, 10, 40, 3),
                                                                 (0, 1, 15, 1)])
def test_file_order_rules_match_the_authors_loop(min_score, min_margin, max_margin, cap):
    rng = random.Random(11)
    groups = [(f"p{g}", [(f"g{g}r{i}", float(rng.randrange(0, 100))) for i in range(rng.randint(1, 16))])
              for g in range(10)]
    pairs, stats = data.build_pairs(rows_of(*groups), min_margin=min_margin, max_pairs_per_response=cap,
                                    min_score=min_score, max_margin=max_margin, cap_order="file")
    assert sorted(pair_tuples(pairs)) == sorted(authors_pairs(groups, min_score, min_margin, max_margin, cap))
    assert stats["candidate_pairs"] == (stats["below_min_score"] + stats["equal_score"] + stats["below_margin"]
                                        + stats["above_max_margin"] + stats["capped"] + stats["pairs"])
    low = {r for _, rs in groups for r, s in rs if s < min_score}
    assert stats["below_min_score"] == sum(sum(1 for a, b in itertools.combinations(rs, 2) if a[0] in low or b[0] in low)
                                           for _, rs in groups)


def test_min_score_and_max_margin_by_hand():
    rows = rows_of(("p", [("a", 40.0), ("b", 22.0), ("c", 10.0), ("d", 30.0)]))
    pairs, stats = data.build_pairs(rows, min_margin=5, min_score=20, max_margin=15)
    # c (10) is below 20: a-c, b-c, c-d out; a-b gap 18 > 15 out; a-d 10 and d-b 8 stay
    assert pair_tuples(pairs) == [("p", "a", "d"), ("p", "d", "b")]
    assert (stats["below_min_score"], stats["above_max_margin"], stats["below_margin"]) == (3, 1, 0)
    with pytest.raises(data.DataError, match=r"below --min-score 50.*own score scale, here 10 to 40"):
        data.build_pairs(rows, min_score=50)


MUCE_FLAGS = ["--split-column", "Set", "--min-score", "20", "--min-margin", "5", "--max-pairs-per-response", "2"]


@pytest.mark.parametrize("extra,train_line,val_line,counts", [
    # prompt A (Training): a4 (10) is below 20 -> 5 of its 15 pairs; a5-a6 gap 2 < 5; of 9 left, file order with
    # cap 2 keeps a1-a2, a1-a3, a2-a3 and caps 6; prompt B: keeps b1-b2, b1-b3, b2-b3 and caps 3
    (["--cap-order", "file"], "train: 6 pairs from 2 prompts", "validation: 3 pairs from 1 prompts",
     "of 21 response pairs, 5 with a response below min score 20, 0 equal scores, 1 below min margin 5, "
     "9 over 2 pairs per response (in file order)"),
    # largest margin first: A keeps a1-a2 18, a2-a3 13, a1-a6 12, a3-a6 7 (caps 5); B keeps 39, 29, 16, 6 (caps 2)
    ([], "train: 8 pairs from 2 prompts", "validation: 3 pairs from 1 prompts",
     "5 with a response below min score 20, 0 equal scores, 1 below min margin 5, 7 over 2 pairs per response "
     "(largest margin first)"),
    # max margin 15 drops a1-a2 (18) and b's 29, 39, 23, 16; C's c2-c3 (20)
    (["--cap-order", "file", "--max-margin", "15"], "train: 6 pairs from 2 prompts", "validation: 2 pairs from 1",
     "1 below min margin 5, 5 above max margin 15, 4 over 2 pairs per response (in file order)"),
])
def test_cli_muce_split_and_rules_count_by_hand(capsys, extra, train_line, val_line, counts):
    assert data.main([MUCE_STYLE, *MUCE_FLAGS, *extra]) == 0
    out = capsys.readouterr().out
    assert ("split by column Set: 10 rows to train, 3 to validation, 8 never trained (HeldoutItem 2, "
            "HeldoutLanguage 2, HeldoutTask 1, Test 3)") in out
    assert train_line in out and val_line in out and counts in out


@pytest.mark.parametrize("order", ["file", "margin"])
def test_no_held_out_row_is_ever_in_a_training_pair(order):
    rows, _ = data.read_rows(MUCE_STYLE, split_column="Set")
    train, val = data.build_split_pairs(rows, split_column="Set", min_margin=1, cap_order=order, log=lambda s: None)
    sets = {r["response"]: r["Set"] for r in rows}
    assert train and val
    assert {sets[p[side]] for p in train for side in ("chosen", "rejected")} == {"Training"}
    assert {sets[p[side]] for p in val for side in ("chosen", "rejected")} == {"Validation"}


def test_split_column_errors_and_merging(tmp_path):
    row = lambda r, s, split: {**rating("p", r, s), "Set": split}  # noqa: E731
    bad = write(tmp_path, [row("a", 1.0, "Training"), row("b", 2.0, "Holdout")])
    rows, _ = data.read_rows(bad)
    with pytest.raises(data.DataError, match=rf"^{bad}:2: Set is \"Holdout\" \(--split-column Set takes Training"):
        data.build_split_pairs(rows, split_column="Set", source=bad, log=lambda s: None)
    with pytest.raises(data.DataError, match=rf"^{bad}:1: has no field 'Split'"):
        data.build_split_pairs(rows, split_column="Split", source=bad, log=lambda s: None)
    # the same (prompt, response) in Training and Test stays two rows: a Test row never merges into training
    dup = write(tmp_path, [row("a", 1.0, "Training"), row("a", 5.0, "Test"), row("b", 3.0, "Training")], name="dup.jsonl")
    rows, report = data.read_rows(dup, split_column="Set")
    assert report.duplicates_merged == 0 and [r["score"] for r in rows] == [1.0, 5.0, 3.0]
    assert data.read_rows(dup)[1].duplicates_merged == 1
