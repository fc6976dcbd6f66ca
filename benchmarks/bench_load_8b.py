"""Load time and peak memory of a synthetic Llama-3.1-8B-shape checkpoint in bf16 (HF layout, 5 GB shards).

    python -m benchmarks.bench_load_8b [--dir /tmp/crpo_8b] [--keep]

Writes config.json, 4 safetensors shards of uninitialised bf16 tensors (16.1 GB: the values do not matter
for a load) and a word-level tokenizer (tests/fakes.py), then times checkpoint.load(dir, dtype=bfloat16) in a
fresh process (time includes `import torch`), then a pass reading every weight page once (safetensors maps the
files: the bytes are read on first use), and reports peak resident memory after each. The file was just
written, so it is read from the page cache as far as RAM allows: a cold disk read is slower. Needs ~17 GB free RAM and
16 GB of disk; the folder is deleted afterwards unless --keep.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from safetensors.torch import save_file

from tests.fakes import write_tiny_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the child imports the project from here (its cwd)

LLAMA_31_8B = dict(vocab_size=128256, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, head_dim=128, intermediate_size=14336)
SHARD_BYTES = 5 * 10 ** 9  # transformers' default max_shard_size

LOAD = """
import resource, sys, time
t0 = time.perf_counter()
import torch, checkpoint
m, _ = checkpoint.load({path!r}, dtype=torch.bfloat16)
t1 = time.perf_counter()
assert all(p.dtype == torch.bfloat16 for p in m.parameters())
n = sum(p.numel() for p in m.parameters())
rss_load = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
for p in m.parameters():  # read one value per 4 KiB page: every weight byte now comes from the file
    p.detach().view(-1)[::2048].float().sum()
t2 = time.perf_counter()
print(t1 - t0, rss_load, t2 - t1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, n)
"""


def tensor_shapes(c):
    """HF names and shapes of a Llama checkpoint with config c (untied output layer)."""
    d, kv = c["hidden_size"], c["num_key_value_heads"] * c["head_dim"]
    yield "model.embed_tokens.weight", (c["vocab_size"], d)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "self_attn.q_proj.weight", (c["num_attention_heads"] * c["head_dim"], d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, c["num_attention_heads"] * c["head_dim"])
        yield p + "mlp.gate_proj.weight", (c["intermediate_size"], d)
        yield p + "mlp.up_proj.weight", (c["intermediate_size"], d)
        yield p + "mlp.down_proj.weight", (d, c["intermediate_size"])
        yield p + "input_layernorm.weight", (d,)
        yield p + "post_attention_layernorm.weight", (d,)
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (c["vocab_size"], d)


def write_checkpoint(folder):
    """Shards of at most SHARD_BYTES, written one at a time (only one shard's tensors in memory)."""
    os.makedirs(folder, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5,
           "rope_theta": 500000.0, "max_position_embeddings": 131072, "tie_word_embeddings": False,
           "torch_dtype": "bfloat16", **LLAMA_31_8B}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tiny_tokenizer(folder, cfg["vocab_size"])
    shards, shard, size = [], {}, 0
    for name, shape in tensor_shapes(cfg):
        t = torch.empty(shape, dtype=torch.bfloat16)
        if shard and size + t.nbytes > SHARD_BYTES:
            shards.append(shard)
            save_file(shard, os.path.join(folder, f"model-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
            shard, size = {}, 0
        shard[name], size = t, size + t.nbytes
    shards.append(shard)
    save_file(shard, os.path.join(folder, f"model-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
    return len(shards)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default="/tmp/crpo_8b", help="where the synthetic checkpoint is written")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint folder")
    args = ap.parse_args()
    t0 = time.perf_counter()
    n_shards = write_checkpoint(args.dir)
    size = sum(os.path.getsize(os.path.join(args.dir, f)) for f in os.listdir(args.dir)) / 1e9
    print(f"wrote {n_shards} shards, {size:.1f} GB in {time.perf_counter() - t0:.0f} s")
    try:
        out = subprocess.run([sys.executable, "-c", LOAD.format(path=args.dir)], capture_output=True,
                             text=True, cwd=ROOT)
        if out.returncode != 0:
            print(out.stderr[-2000:])
            return 1
        load_s, rss_load, touch_s, rss, n = map(float, out.stdout.split()[-5:])
        print(f"checkpoint.load(dtype=bfloat16): {load_s:.1f} s (peak RSS {rss_load:.1f} GiB: the tensors map the "
              f"files, read on first use); reading every page once: {touch_s:.1f} s more (peak RSS {rss:.1f} GiB); "
              f"{n / 1e9:.2f}B parameters ({n * 2 / 2**30:.1f} GiB in bf16), {os.cpu_count()} cores")
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
