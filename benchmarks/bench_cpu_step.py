"""One DPO-style full fine-tuning step of the embedded default model on the CPU: ours vs transformers.

A step = reference forward (no grad) + policy forward/backward + AdamW update, on 8 sequences x 64 tokens
(4 pairs; the last 32 tokens of each sequence are the response). The transformers anchor is the step as
TRL writes it: full logits, log_softmax, gather, mask. Tokens/s = 8 * 64 / median step time.
Usage: python -m benchmarks.bench_cpu_step [--steps 5] [--threads N]
"""
import argparse
import copy
import os
import statistics
import time

import torch
import torch.nn.functional as F

import checkpoint
import model as M

SEQS, LEN, RESP = 8, 64, 32


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 49152, (SEQS, LEN), generator=g)
    mask = torch.ones_like(ids)
    resp = torch.zeros_like(ids)
    resp[:, LEN - RESP:] = 1
    return ids, mask, resp


def dpo_loss(pol, ref, beta=0.1):
    h = beta * ((pol[0::2] - ref[0::2]) - (pol[1::2] - ref[1::2]))
    return -F.logsigmoid(h).mean()


def time_steps(step, steps):
    step()  # warm-up
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours(steps):
    t = time.perf_counter()
    policy, _ = checkpoint.load(None)
    load_s = time.perf_counter() - t
    reference = copy.deepcopy(policy).requires_grad_(False)
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, fused=True)  # as crpo.py does
    ids, mask, resp = batch()

    def step():
        with torch.no_grad():
            ref, _ = M.sequence_logps(reference, ids, mask, resp)
        pol, _ = M.sequence_logps(policy, ids, mask, resp)
        dpo_loss(pol, ref).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return load_s, time_steps(step, steps)


def hf(steps):
    import transformers
    path = checkpoint.default_model_path()
    t = time.perf_counter()
    policy = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path),
                                                               dtype=torch.float32)
    load_s = time.perf_counter() - t
    reference = copy.deepcopy(policy).requires_grad_(False).eval()
    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)  # as TRL / the HF Trainer do (foreach)
    ids, mask, resp = batch()
    labels = ids[:, 1:]
    lmask = resp[:, 1:].float()

    def seq_logps(m):
        logits = m(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        return (logits.log_softmax(-1).gather(-1, labels[..., None]).squeeze(-1) * lmask).sum(-1)

    def step():
        with torch.no_grad():
            ref = seq_logps(reference)
        dpo_loss(seq_logps(policy), ref).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return load_s, time_steps(step, steps)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    n = 2 * 4096
    a, b = torch.randn(n // 2, n // 2), torch.randn(n // 2, n // 2)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    gflops = 3 * 2 * (n // 2) ** 3 / (time.perf_counter() - t) / 1e9
    print(f"{torch.get_num_threads()} threads, fp32 matmul {gflops:.0f} GFLOP/s, load average {os.getloadavg()[0]:.2f}")
    print(f"DPO-style full fine-tuning step, {SEQS} x {LEN} tokens, median of {args.steps}")
    print("| implementation | load s | step s | tokens/s |\n|---|---|---|---|")
    rows = [("ours", ours)] + ([] if args.skip_hf else [("transformers", hf)])
    for name, fn in rows:
        try:
            load_s, step_s = fn(args.steps)
            print(f"| {name} | {load_s:.1f} | {step_s:.2f} | {SEQS * LEN / step_s:.0f} |", flush=True)
        except ImportError as e:
            print(f"| {name} | not importable: {e} | | |")
