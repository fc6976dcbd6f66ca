"""Test doubles and oracles shared by several test files: a byte-level tokenizer with a chat format, a tiny random
model, and tiny random HF checkpoints written by transformers itself (the oracle's own writer)."""
import json
import os
import subprocess
import sys
import zlib

import numpy as np
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


TINY_CONFIG = dict(vocab_size=256, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128,
                   max_seq_len=512)


def tiny_model(seed=0, *, init_std=0.3, norm_std=None, dtype=torch.float32, **config):
    """The tests' one builder of a tiny random model.Transformer (eval mode): model.Config(TINY_CONFIG updated
    with config), made after torch.manual_seed(seed), in dtype. init_std: matrices ~ N(0, init_std), larger than
    the default init so that the logits differ clearly between tokens (None: keep the default init); norm_std:
    1-D weights (norm gains) ~ N(1, norm_std) too (None: left at 1)."""
    torch.manual_seed(seed)
    m = modeling.Transformer(modeling.Config(**{**TINY_CONFIG, **config})).to(dtype)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2 and init_std is not None:
                p.normal_(0, init_std)
            elif p.dim() == 1 and norm_std is not None:
                p.normal_(1.0, norm_std)
    return m.eval()


def write_tiny_tokenizer(folder, vocab_size):
    """A word-level tokenizer with `vocab_size` entries, enough for load() to find a tokenizer.json."""
    vocab = {f"w{i}": i for i in range(vocab_size)}
    tok = HFTokenizer(tok_models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "w1", "bos_token": "w2"}, f)


# Gemma-2 at a tiny scale with every difference active: a window shorter than the test sequences, soft caps small
# enough to bend the logits, a query scale and a head_dim unrelated to hidden_size / heads
TINY_GEMMA2 = dict(head_dim=24, query_pre_attn_scalar=20, sliding_window=6, attn_logit_softcapping=4.0,
                   final_logit_softcapping=3.0)


def tiny_hf_model(kind, tmp_path, shard=False, head="causal", **extra):
    """A tiny random checkpoint written by transformers' save_pretrained (the oracle's own writer).
    kind: llama | qwen2 | mistral | gemma2 | qwen3; head "causal" (XForCausalLM) or "reward" (a one-label
    XForSequenceClassification, pad_token_id 0)."""
    import transformers  # the oracle: only the tests that call this need it

    torch.manual_seed({"llama": 0, "qwen2": 1, "mistral": 2, "gemma2": 3, "qwen3": 4}[kind])
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, initializer_range=0.2, rms_norm_eps=1e-6)
    names = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral", "gemma2": "Gemma2", "qwen3": "Qwen3"}
    tie = {"llama": False, "qwen2": True, "mistral": False, "gemma2": True, "qwen3": False}[kind]
    if kind == "gemma2":
        common.update(TINY_GEMMA2, num_hidden_layers=3, attn_implementation="eager")
    if kind == "qwen3":
        common.update(head_dim=24)
    if head == "reward":
        common.update(num_labels=1, pad_token_id=0)
    common.update(extra)
    cfg = getattr(transformers, f"{names[kind]}Config")(tie_word_embeddings=tie, **common)
    cls = "ForCausalLM" if head == "causal" else "ForSequenceClassification"
    hf = getattr(transformers, f"{names[kind]}{cls}")(cfg)
    with torch.no_grad():
        if kind == "qwen2":  # transformers initialises biases to zero: make them matter
            for layer in hf.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, 0.5)
        for name, p in hf.named_parameters():  # RMSNorm gains start at 1 (Gemma: 0): perturb so a wrong mapping shows
            if "norm" in name:
                p.normal_(0.0 if kind == "gemma2" else 1.0, 0.3)
    folder = tmp_path / (kind if head == "causal" else f"{kind}-rm")
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


def hashed_embed(texts, dim):
    """Hashed bag of words, a stand-in for the sentence encoder: e(t) = sum of fixed random word vectors (seeded by
    the word's crc32), unit-normalised -> [n, dim] float64. Answers that share words lie close."""
    out = np.zeros((len(texts), dim))
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i] += np.random.default_rng(zlib.crc32(w.encode())).standard_normal(dim)
        out[i] /= max(np.linalg.norm(out[i]), 1e-12)
    return out


def topic_groups(rng, n=6):
    """{prompt: (answers, scores, task)} for n synthetic prompts whose answers are three of their own five topic
    words ("t{i}w{j}"): what a relevance model can learn to tell apart. Draws from rng."""
    groups = {}
    for i in range(n):
        topic = [f"t{i}w{j}" for j in range(5)]
        answers = list(dict.fromkeys(" ".join(rng.choice(topic, 3)) for _ in range(30)))
        groups[f"Use for thing {i}: {topic[0]}."] = (answers, [1.0] * len(answers), ["A", "B"][i % 2])
    return groups
