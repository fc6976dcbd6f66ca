"""encoder.py: the sentence encoder against transformers' BertModel with mean pooling."""
import pytest
import torch

import encoder

transformers = pytest.importorskip("transformers", reason="transformers is the oracle (pip install -r requirements-dev.txt)")


def test_encoder_matches_bert_mean_pooling():
    sentence_encoder = encoder.load_encoder(None)
    path = encoder.default_encoder_path()
    bert = transformers.BertModel.from_pretrained(path).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(path)
    texts = ["use a brick as a doorstop", "A completely different sentence about the ocean at night.",
             "x", "Ünïcödé and émojis 🧱 " * 3]
    ours = sentence_encoder.embed(texts, batch_size=2)
    batch = hf_tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.no_grad():
        h = bert(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    cos = (ours * ref).sum(-1)
    assert cos.min() > 0.9999, cos
    assert torch.allclose(ours.norm(dim=-1), torch.ones(len(texts)), atol=1e-5)


def test_a_multilingual_bert_folder_written_by_transformers_works_as_the_encoder(tmp_path, capsys, monkeypatch):
    """--score-encoder PATH with a tiny random BERT whose WordPiece vocabulary holds Chinese characters: the same
    embeddings as transformers' BertModel with mean pooling, and score.py scores Chinese answers with it without
    the English-only note."""
    import json
    import os

    import score
    rows = [json.loads(line) for line in open(os.path.join(os.path.dirname(__file__), "data", "field_cases",
                                                           "cjk_dsi_novelty_group.jsonl"))]
    chars = sorted({c for r in rows for c in r["prompt"] + r["response"]})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["kite", "rain", "the", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    hf_tok = transformers.BertTokenizerFast(str(tmp_path / "vocab.txt"), tokenize_chinese_chars=True)
    torch.manual_seed(0)
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                                                          num_attention_heads=4, intermediate_size=64,
                                                          max_position_embeddings=64)).eval()
    folder = tmp_path / "bert"
    bert.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    enc = encoder.load_encoder(str(folder))
    assert not enc.is_default and encoder.load_encoder(None).is_default
    texts = [r["response"] for r in rows] + ["the kite", "挡雨 rain"]
    batch = hf_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = bert(**batch).last_hidden_state
    m = batch["attention_mask"][..., None].float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert torch.allclose(enc.embed(texts, batch_size=3), ref, atol=1e-5)
    monkeypatch.setattr(score, "_NOTED", set())
    results, _ = score.score_groups([{"prompt": rows[0]["prompt"], "responses": texts[:4], "languages": {"zh"}}],
                                    ["diversity", "novelty"], encoder=enc, show_progress=False)
    E = ref[:4].double().numpy()
    expected = 1 - ((E @ E.T).sum(1) - 1) / 3  # mean cosine distance to the other three
    assert abs(results[0]["diversity_raw"] - expected).max() < 1e-5
    assert "not English" not in capsys.readouterr().err
