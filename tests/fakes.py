"""Test doubles and oracles shared by several test files: a byte-level tokenizer with a chat format, a tiny random
model, and tiny random HF checkpoints written by transformers itself (the oracle's own writer)."""
import json
import os
import subprocess
import sys

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models as tok_models
from tokenizers import pre_tokenizers

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


def write_tiny_tokenizer(folder, vocab_size):
    """A word-level tokenizer with `vocab_size` entries, enough for load() to find a tokenizer.json."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = HFTokenizer(tok_models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "w1", "bos_token": "w2"}, f)


def tiny_hf_model(kind, tmp_path, shard=False, **extra):
    """A tiny random checkpoint written by transformers' save_pretrained (the oracle's own writer)."""
    import transformers  # the oracle: only the tests that call this need it

    torch.manual_seed({"llama": 0, "qwen2": 1, "mistral": 2}[kind])
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, initializer_range=0.2, rms_norm_eps=1e-6)
    common.update(extra)
    if kind == "llama":
        cfg = transformers.LlamaConfig(tie_word_embeddings=False, **common)
        hf = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(tie_word_embeddings=True, **common)
        hf = transformers.Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # transformers initialises biases to zero: make them matter
            for layer in hf.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
    else:
        cfg = transformers.MistralConfig(tie_word_embeddings=False, **common)
        hf = transformers.MistralForCausalLM(cfg)
    with torch.no_grad():  # RMSNorm gains start at 1: perturb so a wrong mapping shows
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    folder = tmp_path / kind
    hf.save_pretrained(folder, max_shard_size="40KB" if shard else "5GB")
    write_tiny_tokenizer(folder, 128)
    return hf.eval(), folder


def hf_logits(hf, ids, mask=None):
    with torch.no_grad():
        return hf(input_ids=ids, attention_mask=mask).logits.float()


def run_triton_tests_in_interpreter(test_file, selector):
    """Run test_file's tests matching selector in a fresh pytest process with TRITON_INTERPRET=1 (Triton reads it
    when a kernel is defined, at import); assert they all ran and passed."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", os.path.abspath(test_file), "-k", selector]
    res = subprocess.run(cmd, env=env, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         capture_output=True, text=True, timeout=600)
    tail = res.stdout[-4000:] + res.stderr[-2000:]
    assert res.returncode == 0, tail
    assert " passed" in tail and "skipped" not in tail, tail
