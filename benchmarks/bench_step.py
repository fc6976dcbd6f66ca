"""Benchmark one CrPO training step at Llama-3.1-8B shape (or a short-answer shape), from random weights.

    python -m benchmarks.bench_step            # CUDA: Llama-3.1-8B shape, LoRA r=128 on all linear layers,
                                               # gradient checkpointing, 8 pairs x 512 tokens a side
    python -m benchmarks.bench_step --pairs 64 --seq-len 64 --prompt-len 40   # the real workload: short answers
    python -m benchmarks.bench_step --profile  # + CUDA kernel time of our step by kind (matmul, attention, other)
    python -m benchmarks.bench_step --small    # tiny config on CPU (smoke test)

One step = reference forward (the base model with LoRA switched off, no grad) + policy forward and
backward over chosen and rejected (one batch of 2 x pairs sequences) + the CrPO loss + AdamW step on the
LoRA parameters. Each sequence is a prompt of --prompt-len tokens and a response filling the rest;
only response tokens count in the log-probabilities.

Rows:
- ours: crpo.py's own step, `crpo.train_step` on a run set up by `crpo.build_run` (what `python crpo.py` runs:
  on CUDA a bf16 base with float32 LoRA adapters under bf16 autocast; batches collated from token ids each
  step), with the block ops on crpo.py's CUDA default (kernels/dispatch.py: the PyTorch formulas until a GPU
  run verifies the Triton kernels; $KERNELS_BLOCK_PATH overrides it for this row);
- ours, Triton block kernels: the same with the fused block kernels (crpo.py --kernels triton);
- ours, blocks under torch.compile: the same with each transformer block compiled (PyTorch block path);
- transformers + peft: full logits, log_softmax in float32, gather (what DPO trainers do);
- transformers + peft + Liger: Liger's RMSNorm, RoPE and SwiGLU kernels patched into Llama and its fused
  linear DPO loss on the final hidden states (reference hidden states with the adapter off), as TRL runs
  with Liger; skipped when liger_kernel is not importable.
--no-checkpointing turns gradient checkpointing off in every row. Columns: median ms per step, peak GiB
allocated (weights included), tokens/s (all tokens of the step's sequences), and the loss (finite: the
step really ran).
"""
import argparse
import datetime
import os
import statistics
import time
import warnings

import torch

import numpy as np

import crpo
import kernels
import model as modeling
import pairs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GIB = 2**30
ROWS = ("ours", "ours-triton", "compiled", "hf", "liger")  # --which
LORA_TARGETS = modeling.LORA_TARGETS
LLAMA_31_8B = dict(vocab_size=128256, dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
                   hidden_dim=14336, norm_eps=1e-5, rope_theta=500000.0, max_seq_len=131072, tie_embeddings=False,
                   rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
TINY = dict(vocab_size=1000, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128,
            norm_eps=1e-5, rope_theta=10000.0, max_seq_len=512, tie_embeddings=False)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def init_random_(module, seed):
    """Weights ~ N(0, 0.02), norm scales 1 (what HF's _init_weights does), the same for both models."""
    gen = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    for name, p in module.named_parameters():
        if p.ndim >= 2 and "lora_B" not in name:
            p.normal_(0.0, 0.02, generator=gen)
        elif "norm" in name:
            p.fill_(1.0)


def ours_run(cfg, args, device, compile_blocks=False):
    """A crpo.Run over one synthetic split, set up by crpo.build_run exactly as the CLI does."""
    flags = ["--data", "synthetic", "--lora-rank", str(args.rank), "--lora-alpha", str(args.alpha), "--batch-size",
             str(args.pairs), "--device", device.type, "--lambda-novelty", "1", "--lambda-diversity", "1",
             "--lambda-surprise", "1"] + (["--grad-checkpointing"] if args.checkpointing else [])
    if args.dtype == "fp32":
        flags += ["--dtype", "float32"]
    run_args = crpo.parse_args(flags)
    torch.set_default_dtype(crpo.weights_dtype(run_args.dtype, run_args.lora_rank > 0, device))
    try:
        with torch.device(device):
            m = modeling.Transformer(modeling.Config(**cfg))
    finally:
        torch.set_default_dtype(torch.float32)
    init_random_(m, 0)
    ids, _, _ = make_batch(cfg, args, device)
    ids = ids.cpu().tolist()
    items = [{"chosen_ids": ids[i], "chosen_start": args.prompt_len, "rejected_ids": ids[args.pairs + i],
              "rejected_start": args.prompt_len} for i in range(args.pairs)]
    gen = torch.Generator().manual_seed(2)
    scores = {side: {k: torch.rand(args.pairs, generator=gen) for k in ("novelty", "diversity", "surprise")}
              for side in ("chosen", "rejected")}
    splits = {"train": pairs.Split([{}] * args.pairs, items, scores), "val": pairs.Split([], [], scores)}
    lambdas = {"novelty": 1.0, "diversity": 1.0, "surprise": 1.0}
    pad_only = type("PadOnly", (), {"pad_id": 0, "eos_id": 0})()
    run = crpo.build_run(run_args, device, 0, 1, m, pad_only, splits, lambdas, log=lambda *a: None)
    if compile_blocks:
        for layer in m.layers:
            layer.compile()
    return run


def build_ours(cfg, args, device, dtype, compile_blocks=False):
    run = ours_run(cfg, args, device, compile_blocks)
    every = np.arange(args.pairs)

    def step():
        sums, _ = crpo.train_step(run, every)
        return torch.tensor(sums["loss"] / sums["count"])
    return run.policy, step


def build_hf(cfg, args, device, dtype):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    hc = LlamaConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["dim"], intermediate_size=cfg["hidden_dim"],
                     num_hidden_layers=cfg["n_layers"], num_attention_heads=cfg["n_heads"],
                     num_key_value_heads=cfg["n_kv_heads"], head_dim=cfg["head_dim"], rms_norm_eps=cfg["norm_eps"],
                     max_position_embeddings=cfg["max_seq_len"], tie_word_embeddings=False, use_cache=False,
                     rope_theta=cfg["rope_theta"])
    hc._attn_implementation = "sdpa"
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            m = LlamaForCausalLM(hc)
    finally:
        torch.set_default_dtype(torch.float32)
    init_random_(m, 0)
    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames checkpointing calls
    if args.checkpointing:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    m = get_peft_model(m, LoraConfig(r=args.rank, lora_alpha=args.alpha, lora_dropout=0.0,
                                     target_modules=list(LORA_TARGETS), task_type="CAUSAL_LM"))
    m.train()
    trainable = [p for p in m.parameters() if p.requires_grad]

    def seq_logps(ids, mask, resp):
        logits = m(input_ids=ids, attention_mask=mask, use_cache=False).logits[:, :-1]
        token = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        return (token * resp[:, 1:]).sum(-1)

    def policy_and_reference(batch):
        ids, mask, resp = batch
        with torch.no_grad(), m.disable_adapter():
            ref = seq_logps(ids, mask, resp)
        return seq_logps(ids, mask, resp), ref
    return m, trainable_step(m, trainable, policy_and_reference, args, device, cfg)


def build_liger(cfg, args, device, dtype):
    """transformers + peft with Liger's kernels patched in and its fused linear DPO loss on the hidden states."""
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    from liger_kernel.transformers import apply_liger_kernel_to_llama

    apply_liger_kernel_to_llama(rope=True, rms_norm=True, swiglu=True, cross_entropy=False,
                                fused_linear_cross_entropy=False)
    m, _ = build_hf(cfg, args, device, dtype)
    trainable = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    loss_fn = LigerFusedLinearDPOLoss(beta=0.1, use_ref_model=True)
    ids, mask, resp = make_batch(cfg, args, device)
    target = ids[:, 1:].masked_fill(resp[:, 1:] == 0, -100)
    body, head = m.base_model.model.model, m.base_model.model.lm_head

    def step():
        with torch.no_grad(), m.disable_adapter():
            ref_hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        out = loss_fn(head.weight, hidden, target, ref_input=ref_hidden, ref_weight=head.weight)
        loss = out[0] if isinstance(out, tuple) else out
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return m, step


def trainable_step(m, trainable, policy_and_reference, args, device, cfg):
    """One step of the transformers rows: policy and reference log-probs, crpo_loss, AdamW."""
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    batch = make_batch(cfg, args, device)
    weights = torch.rand(args.pairs, generator=torch.Generator().manual_seed(2)).to(device)

    def step():
        pol, ref = policy_and_reference(batch)
        loss, _ = crpo.crpo_loss(pol[:args.pairs], pol[args.pairs:], ref[:args.pairs], ref[args.pairs:],
                                 beta=0.1, weights=weights)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()
    return step


def make_batch(cfg, args, device):
    gen = torch.Generator().manual_seed(1)
    rows = 2 * args.pairs  # chosen rows 0..pairs-1, rejected rows pairs..2*pairs-1
    ids = torch.randint(0, cfg["vocab_size"], (rows, args.seq_len), generator=gen)
    mask = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[:, args.prompt_len:] = 1
    return ids.to(device), mask.to(device), resp.to(device)


def kernel_time_by_kind(step, device):
    """{kind: CUDA ms} of one profiled step: matrix products, attention, everything else (elementwise, copies)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync(device)
    kinds = {"matmul": 0.0, "attention": 0.0, "other": 0.0}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        name = e.key.lower()
        kind = ("attention" if any(k in name for k in ("flash", "fmha", "attention", "attn")) else
                "matmul" if any(k in name for k in ("gemm", "matmul", "cutlass", "nvjet", "sm90_xmma", "cublas")) else
                "other")
        kinds[kind] += us / 1e3
    return kinds


def bench(name, build, cfg, args, device, dtype, profile=False):
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        m, step = build(cfg, args, device, dtype)
        for _ in range(args.warmup):
            step()
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.reps):
            t = time.perf_counter()
            loss = step()
            sync(device)
            times.append((time.perf_counter() - t) * 1e3)
        ms = statistics.median(times)
        peak = torch.cuda.max_memory_allocated() / GIB if device.type == "cuda" else None
        tokens = 2 * args.pairs * args.seq_len
        print(f"| {name} | {ms:.1f} | {'-' if peak is None else f'{peak:.2f}'} | {tokens / ms * 1e3:,.0f} | "
              f"{loss.item():.4f} |", flush=True)
        if profile and device.type == "cuda":
            kinds = kernel_time_by_kind(step, device)
            total = sum(kinds.values())
            print(f"|   CUDA kernel time of one step: {total:.1f} ms = " + ", ".join(
                f"{k} {v:.1f} ms ({v / total:.0%})" for k, v in kinds.items()) + " | | | |", flush=True)
        del m, step
    except ImportError as e:
        print(f"| {name} | not importable: {e} | | | |", flush=True)
    except Exception as e:  # an anchor's failure is a row, not the end of the benchmark
        msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")[:200]
        print(f"| {name} | failed: {msg} | | | |", flush=True)
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny config, 2 pairs x 64 tokens, LoRA r=8 (CPU smoke test)")
    p.add_argument("--pairs", type=int)
    p.add_argument("--seq-len", type=int, help="tokens per sequence (prompt + response)")
    p.add_argument("--prompt-len", type=int, help="prompt tokens per sequence (not counted in log-probs)")
    p.add_argument("--rank", type=int)
    p.add_argument("--alpha", type=float)
    p.add_argument("--no-checkpointing", dest="checkpointing", action="store_false")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--which", default="all", help="all, or a comma-separated list of " + ", ".join(ROWS))
    p.add_argument("--profile", action="store_true", help="CUDA kernel time of our step by kind")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    which = set(ROWS) if args.which == "all" else set(args.which.split(","))
    if which - set(ROWS):
        p.error(f"--which: unknown {', '.join(sorted(which - set(ROWS)))} (choose from all, {', '.join(ROWS)})")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    small = (2, 64, 16, 8) if args.small else (8, 512, 128, 128)
    args.pairs = args.pairs or small[0]
    args.seq_len = args.seq_len or small[1]
    args.prompt_len = small[2] if args.prompt_len is None else args.prompt_len
    args.rank = args.rank or small[3]
    args.alpha = args.alpha or 2.0 * args.rank
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = TINY if args.small else LLAMA_31_8B
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"{card}, torch {torch.__version__}, {datetime.date.today()}; "
          f"{'tiny config' if args.small else 'Llama-3.1-8B shape'} (random weights), {dtype}, "
          f"LoRA r={args.rank} on {', '.join(LORA_TARGETS)}, gradient checkpointing {'on' if args.checkpointing else 'off'}, "
          f"{args.pairs} pairs x {args.seq_len} tokens a side ({args.prompt_len} prompt), reference forward included; "
          f"median of {args.reps} steps after {args.warmup} warm-ups\n")
    print("| variant | median ms / step | peak GiB | tokens/s | loss |")
    print("|---|---:|---:|---:|---:|")
    if "ours" in which:
        bench(f"ours (crpo.train_step; block ops: {kernels.chosen_block_path()})", build_ours, cfg, args, device,
              dtype, profile=args.profile)
    if "ours-triton" in which and (device.type == "cuda" or args.which != "all"):
        with kernels.triton_block_path():  # what crpo.py --kernels triton sets
            bench("ours, Triton block kernels (--kernels triton)", build_ours, cfg, args, device, dtype,
                  profile=args.profile)
    if "compiled" in which and device.type == "cuda":
        bench("ours, blocks under torch.compile", lambda *a: build_ours(*a, compile_blocks=True), cfg, args, device,
              dtype)
    if "hf" in which:
        bench("transformers + peft", build_hf, cfg, args, device, dtype)
    if "liger" in which and device.type == "cuda":
        bench("transformers + peft + Liger (kernels, fused linear DPO loss)", build_liger, cfg, args, device, dtype)


if __name__ == "__main__":
    main()
