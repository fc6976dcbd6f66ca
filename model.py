"""The model: a Llama-family transformer written from scratch, LoRA, and response log-probabilities.

    Config -> Transformer (RMSNorm, rotary attention with grouped-query heads, SwiGLU MLP)
    add_lora / lora_disabled / merge_lora        LoRA adapters on the linear layers
    sequence_logps(model, ids, mask, response)   log pi(y|x), the quantity DPO and CrPO compare

Covers Llama (incl. Llama-3 rope scaling), Mistral and Qwen2 (q/k/v bias), tied or untied output layers, and,
as config flags on the same block (Config, "architecture differences"), Gemma-2 and Qwen3:
    Gemma-2  RMSNorm scaled by (1 + g); norms after attention and after the MLP too; GeGLU (tanh GELU);
             embeddings times sqrt(dim); attention scale query_pre_attn_scalar^-1/2; attention-logit and
             final-logit soft-capping c tanh(z / c); a sliding window on alternate layers
    Qwen3    RMSNorm on each head's q and k before RoPE (and no q/k/v bias, read from the tensors)
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
    arch: str = "llama"  # llama | mistral | qwen2 | gemma2 | qwen3: decides what `save` writes
    # architecture differences (all off = Llama): set by checkpoint.hf_config / load_gguf per model_type
    norm_offset: float = 0.0  # Gemma: RMSNorm scales by (norm_offset + g), the stored g being centred on 0
    sandwich_norms: bool = False  # Gemma-2: post_attention / pre_ and post_feedforward norms around each sublayer
    mlp_act: str = "silu"  # silu (SwiGLU) | gelu_tanh (GeGLU, Gemma)
    embed_scale: bool = False  # Gemma: embeddings times sqrt(dim), rounded to the weights' dtype
    query_pre_attn_scalar: float | None = None  # attention scale s^-1/2 (Gemma-2); None: head_dim^-1/2
    attn_softcap: float | None = None  # Gemma-2: attention logits c tanh(z / c)
    final_softcap: float | None = None  # Gemma-2: output logits c tanh(z / c)
    sliding_window: int | None = None  # keys a query sees on a sliding layer, itself included (Gemma-2)
    sliding_layers: tuple = ()  # indices of the layers with the sliding window
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on q and k before RoPE


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x^2) + eps) * g, computed in float32. With a residual r, x' = x + r is normed and
    (y, x') returned: one fused kernel on CUDA (kernels.rms_norm), the eager formulas elsewhere.
    offset 1 (Gemma): y = x / sqrt(mean(x^2) + eps) * (1 + g), all in float32, then cast (offset_rms_norm)."""

    def __init__(self, dim, eps, offset=0.0):
        super().__init__()
        self.eps, self.offset = eps, offset
        self.weight = nn.Parameter(torch.zeros(dim) if offset else torch.ones(dim))

    def forward(self, x, residual=None):
        if self.offset:
            return offset_rms_norm(x, self.weight, self.eps, self.offset, residual)
        return kernels.rms_norm(x, self.weight, self.eps, residual)


def offset_rms_norm(x, weight, eps, offset, residual=None):
    """Gemma's RMSNorm: y = x' / sqrt(mean(x'^2) + eps) * (offset + g), x' = x + residual, in float32 and cast
    back to x's dtype (as Gemma2RMSNorm in transformers). Returns y, or (y, x') with a residual."""
    if residual is not None:
        x = x + residual
    x32 = x.float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps) * (offset + weight.float())).to(x.dtype)
    return y if residual is None else (y, x)


def softcap(z, cap):
    """Soft-capping (Gemma-2): c tanh(z / c), which keeps |z| < c and is ~z for |z| << c; cap None: z."""
    return z if cap is None else torch.tanh(z / cap) * cap


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


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.q_proj = nn.Linear(c.dim, c.n_heads * c.head_dim, bias=c.qkv_bias)
        self.k_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.v_proj = nn.Linear(c.dim, c.n_kv_heads * c.head_dim, bias=c.qkv_bias)
        self.o_proj = nn.Linear(c.n_heads * c.head_dim, c.dim, bias=False)
        if c.qk_norm:  # Qwen3: one gain vector over head_dim, shared by the heads
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.norm_eps)
        self.scale = None if c.query_pre_attn_scalar is None else c.query_pre_attn_scalar ** -0.5

    def forward(self, x, cos, sin, mask, cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.c.n_heads, self.c.head_dim)
        k = self.k_proj(x).view(B, T, self.c.n_kv_heads, self.c.head_dim)
        if self.c.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.c.n_kv_heads, self.c.head_dim).transpose(1, 2)
        q, k = kernels.rope(q, k, cos, sin)
        if cache is not None:  # (k_cache, v_cache, start): write this step's keys/values, attend to all so far
            k_cache, v_cache, start = cache
            k_cache[:, :, start:start + T], v_cache[:, :, start:start + T] = k, v
            k, v = k_cache[:, :, :start + T], v_cache[:, :, :start + T]
        if self.c.attn_softcap is not None:  # SDPA has no soft-capping: the eager formula
            y = softcapped_attention(q, k, v, mask, self.scale or self.c.head_dim ** -0.5, self.c.attn_softcap)
        else:  # grouped-query attention: each k/v head serves n_heads / n_kv_heads q heads (no copies with enable_gqa)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None, scale=self.scale,
                                               enable_gqa=self.c.n_kv_heads != self.c.n_heads)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


def softcapped_attention(q, k, v, mask, scale, cap):
    """softmax(c tanh(s q k^T / c) + M) v (Gemma-2), the softmax in float32; q [B, Hq, T, d], k, v [B, Hk, S, d]
    (Hq a multiple of Hk), mask [B, 1, T, S] bool (True = attend) or None (causal, S = T)."""
    k, v = (t.repeat_interleave(q.shape[1] // k.shape[1], dim=1) for t in (k, v))
    scores = softcap(q @ k.transpose(-1, -2) * scale, cap)
    if mask is None:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype) @ v


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)); GeGLU (Gemma): down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, c):
        super().__init__()
        self.act = c.mlp_act
        self.gate_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.up_proj = nn.Linear(c.dim, c.hidden_dim, bias=False)
        self.down_proj = nn.Linear(c.hidden_dim, c.dim, bias=False)

    def forward(self, x):
        if self.act == "gelu_tanh":
            return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))
        return self.down_proj(kernels.swiglu(self.gate_proj(x), self.up_proj(x)))


class Block(nn.Module):
    """Llama: x += attn(norm(x)); x += mlp(norm(x)). Gemma-2 (sandwich_norms): each sublayer's output is normed
    too before the add, x += post_norm(attn(norm(x))); x += post_norm(mlp(pre_norm(x))) (HF's names kept)."""

    def __init__(self, c):
        super().__init__()
        self.sandwich = c.sandwich_norms
        self.input_layernorm = RMSNorm(c.dim, c.norm_eps, c.norm_offset)
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c.dim, c.norm_eps, c.norm_offset)
        if c.sandwich_norms:
            self.pre_feedforward_layernorm = RMSNorm(c.dim, c.norm_eps, c.norm_offset)
            self.post_feedforward_layernorm = RMSNorm(c.dim, c.norm_eps, c.norm_offset)
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask, cache=None):
        attn_out = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        if self.sandwich:
            x = x + self.post_attention_layernorm(attn_out)
            return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x)))
        h, x = self.post_attention_layernorm(x, residual=attn_out)  # x <- x + attn_out and h = norm(x), one pass
        return x + self.mlp(h)


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.dim, config.norm_eps, config.norm_offset)
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
        full_mask = attention_masks(attention_mask, start, T)
        window = self.config.sliding_window
        sliding_mask = attention_masks(attention_mask, start, T, window) if self.config.sliding_layers else None
        x = self.embed(input_ids)
        if self.config.embed_scale:  # Gemma: sqrt(dim) rounded to the weights' dtype first, as the checkpoints expect
            x = x * torch.tensor(self.config.dim ** 0.5, dtype=x.dtype)
        for i, layer in enumerate(self.layers):
            layer_cache = None if cache is None else (cache["k"][i], cache["v"][i], start)
            mask = sliding_mask if i in self.config.sliding_layers else full_mask
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                keep = kernels.checkpoint_context_fn(self.checkpoint_policy, self.checkpoint_budget)
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, mask, layer_cache, use_reentrant=False,
                                                      context_fn=keep)
            else:
                x = layer(x, cos, sin, mask, layer_cache)
        return self.norm(x)

    def logits(self, hidden):
        """Output logits (float32) of final hidden states: z = h W^T, soft-capped c tanh(z / c) where the config
        says (Gemma-2)."""
        return softcap(self.lm_head(hidden).float(), self.config.final_softcap)

    def forward(self, input_ids, attention_mask=None, cache=None):
        return self.logits(self.hidden(input_ids, attention_mask, cache))


def attention_masks(attention_mask, start, T, window=None):
    """The boolean attention mask [B, 1, T, start + T] (True = attend) of T queries at positions start.. over all
    keys so far: causal, padding keys hidden (attention_mask [B, start + T], 1 = token), and with a sliding window
    only the `window` latest keys, the query's own included (key > query - window, as transformers' sliding
    layers). None (plain causal attention, the fast SDPA path) when nothing else applies."""
    S = start + T
    if start == 0 and bool(attention_mask.all()) and (window is None or S <= window):
        return None
    key_pos = torch.arange(S, device=attention_mask.device)
    query_pos = key_pos[start:, None]
    mask = (key_pos <= query_pos) & attention_mask.bool()[:, None, None, :]
    if window is not None:
        mask = mask & (key_pos > query_pos - window)
    return mask | (key_pos == query_pos)  # a padding query sees itself: no all-masked row, no NaN


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

def response_logps(hidden, lm_head_weight, input_ids, response_mask, final_softcap=None):
    """Sum of response-token log-probabilities from final hidden states, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    hidden [B, T, D]: the model's final normed hidden states (Transformer.hidden) of input_ids [B, T];
    lm_head_weight [V, D]; response_mask [B, T] is 1 on the response tokens (the only ones that count);
    final_softcap: the config's final-logit soft cap c (Gemma-2), log pi = log softmax(c tanh(h W^T / c)).
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
    labels = input_ids[:, 1:][rows]
    if final_softcap is None:
        token_logps = kernels.linear_logprobs(h, weight, labels)
    else:
        token_logps = softcapped_logprobs(h, weight, labels, final_softcap)
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    logps = logps.index_add(0, rows[0], token_logps.float())
    return logps, targets.sum(-1)


SOFTCAP_CHUNK_BYTES = 256 * 2 ** 20  # float32 logits of one chunk of rows in softcapped_logprobs


def softcapped_logprobs(h, weight, labels, cap):
    """log softmax(c tanh(z / c))[y], z = h W^T, for rows h [N, D], weight [V, D], labels [N] -> float32 [N].
    The fused kernels (kernels.linear_logprobs) have no soft cap, so the logits are formed here, a chunk of rows
    at a time; each chunk is recomputed in the backward pass (checkpoint) so only one chunk's logits live."""
    chunk = max(1, SOFTCAP_CHUNK_BYTES // (4 * weight.shape[0]))

    def piece(h_rows, w, y):
        return kernels.logprobs(softcap((h_rows @ w.t()).float(), cap), y)

    out = [torch.utils.checkpoint.checkpoint(piece, h[i:i + chunk], weight, labels[i:i + chunk], use_reentrant=False)
           if torch.is_grad_enabled() else piece(h[i:i + chunk], weight, labels[i:i + chunk])
           for i in range(0, h.shape[0], chunk)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float32, device=h.device)


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Sum of response-token log-probabilities, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    input_ids, attention_mask, response_mask: [B, T]; response_mask is 1 on the response tokens
    (the only ones that count). Returns (logps [B] float32, n_tokens [B]).
    Only the positions that predict a response token go through the output layer, so neither
    prompt nor padding tokens cost vocabulary-sized work.
    """
    return response_logps(model.hidden(input_ids, attention_mask), model.lm_head.weight, input_ids, response_mask,
                          model.config.final_softcap)


def last_token_scores(model, weight, input_ids, attention_mask):
    """z = W h_last: the final normed hidden state at each row's last non-padding token (the rightmost 1 of
    attention_mask, so left and right padding both work) times weight [k, D], e.g. a reward model's score head.
    input_ids, attention_mask [B, T] -> z [B, k] float32 (transformers' XForSequenceClassification pooled logits)."""
    hidden = model.hidden(input_ids, attention_mask)
    last = (torch.arange(input_ids.shape[1], device=input_ids.device) * attention_mask).argmax(-1)
    return hidden[torch.arange(input_ids.shape[0], device=input_ids.device), last].float() @ weight.float().t()
