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
