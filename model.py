"""The model: a Llama-family transformer written from scratch, LoRA, and response log-probabilities.

    Config -> Transformer (RMSNorm, rotary attention with grouped-query heads, SwiGLU MLP)
    add_lora / lora_disabled / merge_lora        LoRA adapters on the linear layers
    sequence_logps(model, ids, mask, response)   log pi(y|x), the quantity DPO and CrPO compare

Covers Llama (incl. Llama-3 rope scaling), Mistral and Qwen2 (q/k/v bias), tied or untied output layers.
Reading and writing checkpoints is checkpoint.py; tokenizers tokenizer.py; sampling generate.py.
"""
import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

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


# ----------------------------------------------------------------------------- response log-probabilities

def response_logps(hidden, lm_head_weight, input_ids, response_mask):
    """Sum of response-token log-probabilities from final hidden states, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    hidden [B, T, D]: the model's final normed hidden states (Transformer.hidden) of input_ids [B, T];
    lm_head_weight [V, D]; response_mask [B, T] is 1 on the response tokens (the only ones that count).
    Returns (logps [B] float32, n_tokens [B]). Only the positions that predict a response token go
    through the output layer, so neither prompt nor padding tokens cost vocabulary-sized work.
    """
    hidden = hidden[:, :-1]  # position t predicts token t+1
    targets = response_mask[:, 1:].bool()
    rows = targets.nonzero(as_tuple=True)
    h, weight = hidden[rows], lm_head_weight
    if torch.is_autocast_enabled(h.device.type):  # the output layer in the autocast dtype, as nn.Linear would be
        dtype = torch.get_autocast_dtype(h.device.type)
        h, weight = h.to(dtype), weight.to(dtype)
    token_logps = kernels.linear_logprobs(h, weight, input_ids[:, 1:][rows])
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    logps = logps.index_add(0, rows[0], token_logps.float())
    return logps, targets.sum(-1)


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Sum of response-token log-probabilities, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    input_ids, attention_mask, response_mask: [B, T]; response_mask is 1 on the response tokens
    (the only ones that count). Returns (logps [B] float32, n_tokens [B]).
    Only the positions that predict a response token go through the output layer, so neither
    prompt nor padding tokens cost vocabulary-sized work.
    """
    return response_logps(model.hidden(input_ids, attention_mask), model.lm_head.weight, input_ids, response_mask)
