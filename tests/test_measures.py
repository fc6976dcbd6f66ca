"""measures.py: word splitting of text with and without spaces between words (by hand), and DSI on it against a
float64 reference; the language note of score.py."""
import hashlib
import json
import os
import sys

import numpy as np
import pytest

import measures
import score

FIELD = os.path.join(os.path.dirname(__file__), "data", "field_cases")


def cjk_rows():
    with open(os.path.join(FIELD, "cjk_dsi_novelty_group.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_chinese_answers_are_split_into_words():
    """The handed answers: words, not clauses (jieba's segmentation, checked by reading it)."""
    words = [measures.word_tokens(r["response"]) for r in cjk_rows()]
    assert words == [["把", "旧", "雨伞", "改造", "成", "一只", "会", "在", "风里", "唱歌", "的", "风筝"],
                     ["用", "雨伞", "做", "一个", "小", "温室", "种上", "薄荷", "和", "罗勒"],
                     ["把", "伞面", "剪下来", "缝成", "购物袋", "伞骨", "做成", "风铃", "伞柄", "当", "挂钩"],
                     ["挡雨"]]
    assert [len(w) for w in words] == [12, 10, 11, 1]
    assert measures.word_tokens("用 Python 写一个小程序") == ["用", "python", "写", "一个", "小", "程序"]


def test_other_scripts_without_spaces_use_the_documented_fallbacks(monkeypatch):
    # Japanese: runs of kanji, hiragana, katakana; Thai: letters with their combining marks
    assert measures.word_tokens("私は猫が好きです。カタカナも") == ["私", "は", "猫", "が", "好", "きです", "カタカナ", "も"]
    assert measures.word_tokens("สวัสดีครับ") == ["ส", "วั", "ส", "ดี", "ค", "รั", "บ"]
    # text with spaces is split as before
    assert measures.word_tokens("Don't! Use a brick, as a door-stop.") == ["dont", "use", "a", "brick", "as", "a", "door",
                                                                            "stop"]
    assert measures.word_tokens("Привет, мир") == ["привет", "мир"] and measures.word_tokens("café naïve") == ["café", "naïve"]
    monkeypatch.setitem(sys.modules, "jieba", None)  # jieba not installed: one character per word
    assert measures.word_tokens("挡雨，风筝") == ["挡", "雨", "风", "筝"]


def word_vector(word, d=16):
    seed = int(hashlib.sha1(word.encode()).hexdigest()[:8], 16)
    return np.random.default_rng(seed).standard_normal(d)


def test_dsi_novelty_of_chinese_answers_is_defined_and_matches_float64():
    """DSI novelty over the handed group with fixed word vectors: every multi-word answer has word pairs, and the
    values equal 2|DSI(r) - DSI(C)| computed here pairwise in float64; distinct-n counts words."""
    responses = [r["response"] for r in cjk_rows()]

    class Ctx:
        reference = None

        def embed(self, texts, desc):
            return {t: word_vector(t) for t in texts}

    (values, measurable), = score._dsi_novelty([{"prompt": "p", "responses": responses}], Ctx())
    assert measurable.tolist() == [True, True, True, False]

    def dsi(ws):
        V = [word_vector(w) / np.linalg.norm(word_vector(w)) for w in ws]
        pairs = [(i, j) for i in range(len(V)) for j in range(i + 1, len(V))]
        return float(np.mean([1 - V[i] @ V[j] for i, j in pairs])) if pairs else 0.0

    context = list(dict.fromkeys(w for r in responses for w in measures.words(r)))
    expected = [2 * abs(dsi(measures.words(r)) - dsi(context)) for r in responses]
    assert np.allclose(values, expected, rtol=0, atol=1e-12)
    import eval as evaluation
    assert evaluation.distinct_n(responses[:1], 1) == 1.0  # 12 distinct words of 12
    assert evaluation.distinct_n(["雨伞 雨伞", "雨伞"], 1) == pytest.approx(1 / 3)


def test_language_note_names_the_embedding_scorers_once(capsys, monkeypatch):
    class Enc:
        is_default = True

    groups = [{"prompt": "旧雨伞还能用来做什么？", "responses": [r["response"] for r in cjk_rows()]}]
    ctx = score.Context(cache=None, stats={}, encoder=Enc(), embedding_scorers=["diversity (embedding)",
                                                                                 "novelty (dsi)"])
    monkeypatch.setattr(score, "_NOTED", set())
    score.language_note(groups, ctx)
    score.language_note(groups, ctx)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not English (CJK script)" in err and "diversity (embedding), novelty (dsi)" in err
    assert "--score-encoder PATH" in err
    english = [{"prompt": "p", "responses": ["A kite that sings.", "Keep off rain."], "languages": {"en"}}]
    score.language_note(english, ctx)
    assert capsys.readouterr().err == ""
    spanish = [{"prompt": "p", "responses": ["Una cometa que canta."], "languages": {"es"}}]
    score.language_note(spanish, ctx)
    assert "not English (language es)" in capsys.readouterr().err
    Enc.is_default = False  # a multilingual encoder was passed: nothing to say
    score.language_note([{"prompt": "p", "responses": ["Привет, мир"]}], ctx)
    assert capsys.readouterr().err == ""
