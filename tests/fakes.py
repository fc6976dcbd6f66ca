"""Test doubles shared by several test files: a byte-level tokenizer with a chat format, a tiny random model."""
import torch

import model as modeling


class ByteTokenizer:
    """ids 4..255 = bytes; 1 = start of user turn, 2 = assistant header, 3 = end of turn, 0 = pad.
    decode maps ids to letters and spaces, so sampled texts have words."""

    name = "byte-tokenizer"
    pad_id, eot_id, eos_id = 0, 3, 3
    stop_ids = {3}

    def encode(self, text):
        return [4 + b % 252 for b in text.encode("utf-8")]

    def decode(self, ids):
        return "".join(" " if i % 5 == 0 else chr(ord("a") + i % 26) for i in ids if i >= 4)

    def chat(self, prompt, response=None):
        ids = [1] + self.encode(prompt) + [2]
        start = len(ids)
        if response is not None:
            ids = ids + self.encode(response) + [self.eot_id]
        return ids, start


def tiny_model(seed=0):
    torch.manual_seed(seed)
    m = modeling.Transformer(modeling.Config(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                                             hidden_dim=128, max_seq_len=512))
    with torch.no_grad():  # larger than default init so the logits differ clearly between tokens
        for p in m.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return m.eval()
