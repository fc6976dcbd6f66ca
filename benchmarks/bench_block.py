"""Benchmark the transformer block's elementwise ops and one whole block, forward + backward: eager PyTorch,
torch.compile, and our Triton kernels (kernels/), after checking the kernels against float64.

    python -m benchmarks.bench_block            # CUDA: Llama-3.1-8B block shape, bf16, 16 sequences x 512 tokens
    python -m benchmarks.bench_block --small    # tiny shapes (CPU smoke test: eager rows only)
    python -m benchmarks.bench_block --check-only   # only the Triton ops' values and gradients against float64

Table 1, per op (the shapes of one 8B block at N = batch x seq tokens): RMSNorm with the residual add
[N, 4096], RoPE on q [B, 32, T, 128] and k [B, 8, T, 128], SwiGLU [N, 14336], LoRA scale-and-add
[N, 14336]. Rows: eager = kernels/torch_block.py (model.py's formulas), torch.compile of the same,
Triton = kernels.* on CUDA. Columns: median ms of forward + backward (upstream gradients given,
no .grad accumulation), peak GiB allocated beyond the inputs, and the error against float64 math on
the same inputs (max |d| / max |ref| over outputs and gradients).
Table 2, one decoder block with LoRA r=128 on its 7 linear layers (frozen base, as in training), input
and LoRA gradients: the same three paths, each plain and under gradient checkpointing; our kernels
also with checkpoint policy "save-matmuls" (kernels/checkpoint_policy.py) at the budgets asked for.
"compile s" is the first call's time (torch.compile compiles then).
"""
import argparse
import datetime
import os
import sys
import time

import torch
import torch.utils.benchmark as torch_benchmark
import torch.utils.checkpoint as checkpointing

import kernels
import model as modeling
from kernels import torch_block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GIB = 2**30
# Triton rows run on CUDA; under TRITON_INTERPRET=1 also on CPU (Triton's interpreter: a smoke test of this script)
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
BLOCK_8B = dict(dim=4096, n_heads=32, n_kv_heads=8, head_dim=128, hidden_dim=14336, rope_theta=500000.0)
BLOCK_TINY = dict(dim=64, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=176, rope_theta=10000.0)
LORA_TARGETS = modeling.LORA_TARGETS


# ---------------------------------------------------------------- measuring

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn, min_run_time):
    """Median ms of fn() (torch.utils.benchmark: synchronises CUDA around the runs)."""
    return torch_benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=min_run_time).median * 1e3


def peak_extra_gib(fn, device):
    """Peak memory allocated during fn() beyond what was allocated before it (CUDA only)."""
    if device.type != "cuda":
        return None
    sync(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated(device) - before) / GIB


def fwd_bwd(fn, inputs, upstream):
    """One forward + backward of fn(*inputs) with the given upstream gradients; returns outputs and input grads."""
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    needs = [x for x in inputs if x.requires_grad]
    grads = torch.autograd.grad(outs, needs, upstream[:len(outs)])
    return outs, grads


def rel_err(got, ref):
    """max |got - ref| / max |ref| over a list of tensor pairs."""
    return max(((g.double() - r).abs().max() / r.abs().max().clamp(min=1e-30)).item() for g, r in zip(got, ref))


def fmt(x, spec=".2f"):
    return "-" if x is None else format(x, spec)


def on_triton(fn):
    """fn with the block ops on the Triton kernels (opt-in in crpo.py: kernels/dispatch.py)."""
    def run(*args):
        with kernels.triton_block_path():
            return fn(*args)
    return run


# ---------------------------------------------------------------- table 1: ops

def op_cases(cfg, batch, seq, device, dtype, gen):
    """name -> (eager fn, triton fn, inputs, upstream grads) at the block's shapes."""
    n, d, h = batch * seq, cfg["dim"], cfg["hidden_dim"]
    hd, half = cfg["head_dim"], cfg["head_dim"] // 2

    def rand(*shape, grad=True, scale=1.0):
        return (torch.randn(*shape, generator=gen, device=device) * scale).to(dtype).requires_grad_(grad)

    angles = torch.arange(seq, device=device).float()[None, None, :, None] * 10000.0 ** (
        -torch.arange(half, device=device).float() / half)
    cos, sin = angles.cos().expand(batch, 1, seq, half), angles.sin().expand(batch, 1, seq, half)
    q = rand(batch, seq, cfg["n_heads"], hd).detach().transpose(1, 2).requires_grad_(True)
    k = rand(batch, seq, cfg["n_kv_heads"], hd).detach().transpose(1, 2).requires_grad_(True)
    return {
        f"RMSNorm + residual [{n}, {d}]": (lambda x, r, w: torch_block.rms_norm(x, w, 1e-5, r),
                                           on_triton(lambda x, r, w: kernels.rms_norm(x, w, 1e-5, r)),
                                           (rand(n, d), rand(n, d), rand(d, grad=False)),
                                           (rand(n, d, grad=False), rand(n, d, grad=False))),
        f"RoPE q {tuple(q.shape)}, k {tuple(k.shape)}": (lambda q, k: torch_block.rope(q, k, cos, sin),
                                                          on_triton(lambda q, k: kernels.rope(q, k, cos, sin)), (q, k),
                                                          (rand(*q.shape, grad=False), rand(*k.shape, grad=False))),
        f"SwiGLU [{n}, {h}]": (torch_block.swiglu, on_triton(kernels.swiglu), (rand(n, h, scale=3.0), rand(n, h)),
                               (rand(n, h, grad=False),)),
        f"LoRA scale-add [{n}, {h}]": (lambda a, b: torch_block.lora_add(a, b, 2.0),
                                       on_triton(lambda a, b: kernels.lora_add(a, b, 2.0)), (rand(n, h), rand(n, h)),
                                       (rand(n, h, grad=False),)),
    }


def float64_reference(eager, inputs, upstream):
    xs = [x.detach().double().requires_grad_(x.requires_grad) for x in inputs]
    outs, grads = fwd_bwd(eager, xs, [g.double() for g in upstream])
    return list(outs) + list(grads)


def flat(outs_and_grads):
    outs, grads = outs_and_grads
    return list(outs) + list(grads)


def check_triton_ops(cases, references):
    """Correctness first: each Triton op against float64, within bf16 (or float32) rounding; False if any fails."""
    ok = True
    for name, (eager, triton_fn, inputs, upstream) in cases.items():
        err_eager = rel_err(flat(fwd_bwd(eager, inputs, upstream)), references[name])
        err = rel_err(flat(fwd_bwd(triton_fn, inputs, upstream)), references[name])
        tol = max(1e-5 if inputs[0].dtype == torch.float32 else 2e-2, 2 * err_eager)
        print(f"check {name}: Triton err {err:.1e}, eager err {err_eager:.1e}, tolerance {tol:.1e}: "
              f"{'ok' if err <= tol else 'FAILED'}")
        ok = ok and err <= tol
    return ok


def bench_ops(cases, references, args, device):
    print("\n| op (fwd+bwd) | path | ms | extra GiB | err vs float64 | compile s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, (eager, triton_fn, inputs, upstream) in cases.items():
        paths = [("eager", eager)]
        if args.compile:
            paths.append(("torch.compile", torch.compile(eager)))
        if device.type == "cuda" or INTERPRETED:
            paths.append(("Triton (ours)", triton_fn))
        for path, fn in paths:
            step = lambda: fwd_bwd(fn, inputs, upstream)  # noqa: E731
            try:
                t0 = time.perf_counter()
                err = rel_err(flat(step()), references[name])
                sync(device)
                compile_s = f"{time.perf_counter() - t0:.1f}" if path == "torch.compile" else "-"
                ms = median_ms(step, args.min_run_time)
                extra = peak_extra_gib(step, device)
                print(f"| {name} | {path} | {ms:.3f} | {fmt(extra)} | {err:.1e} | {compile_s} |", flush=True)
            except Exception as e:  # a path that fails is a row, not the end of the benchmark
                msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")[:160]
                print(f"| {name} | {path} | failed: {msg} | | | |", flush=True)


# ---------------------------------------------------------------- table 2: one block

def build_block(cfg, args, device, dtype):
    config = modeling.Config(vocab_size=16, n_layers=1, norm_eps=1e-5, max_seq_len=max(args.seq, 16), **cfg)
    torch.manual_seed(0)
    with torch.device(device):
        block = modeling.Block(config).to(dtype)
    with torch.no_grad():
        for name, p in block.named_parameters():
            p.normal_(0.0, 0.02) if p.dim() == 2 else p.fill_(1.0)
    lora = modeling.add_lora(block, rank=args.rank, alpha=2.0 * args.rank, targets=LORA_TARGETS)
    with torch.no_grad():
        for p in lora:  # B != 0, so the LoRA path carries real numbers
            p.normal_(0.0, 0.02)
    inv_freq = modeling.rope_frequencies(config).to(device)
    angles = torch.arange(args.seq, device=device).float()[None, None, :, None] * inv_freq
    cos, sin = angles.cos().expand(args.batch, 1, args.seq, -1), angles.sin().expand(args.batch, 1, args.seq, -1)
    return block.train(), lora, cos, sin


def block_step(block, lora, cos, sin, x, g, policy, budget, min_contraction=None):
    def run(x):
        return block(x, cos, sin, None)
    if policy is None:
        out = run(x)
    else:
        ctx = kernels.checkpoint_context_fn(policy, budget, min_contraction)
        out = checkpointing.checkpoint(run, x, use_reentrant=False, context_fn=ctx)
    return torch.autograd.grad(out, [x] + lora, g)


def bench_block(cfg, args, device, dtype):
    block, lora, cos, sin = build_block(cfg, args, device, dtype)
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(args.batch, args.seq, cfg["dim"], generator=gen, device=device).to(dtype).requires_grad_(True)
    g = torch.randn(x.shape, generator=gen, device=device).to(dtype)
    compiled = torch.compile(block) if args.compile else None
    rows = [("eager", block, True, None, None, None)]  # name, module, PyTorch path only, policy, budget, min K
    if compiled is not None:
        rows.append(("torch.compile", compiled, True, None, None, None))
    if device.type == "cuda" or INTERPRETED:
        rows.append(("Triton (ours)", block, False, None, None, None))
    for name, module, torch_only, _, _, _ in list(rows):
        rows.append((f"{name}, checkpointed", module, torch_only, "full", None, None))
    if device.type == "cuda" or INTERPRETED:
        for budget in args.budgets_mib:
            label = "all matmuls" if budget < 0 else f"{budget} MiB"
            rows.append((f"Triton (ours), checkpointed, save-matmuls ({label})", block, False, "save-matmuls",
                         None if budget < 0 else budget * 2**20, None))
        rows.append((f"Triton (ours), checkpointed, save-matmuls (K >= {cfg['hidden_dim']}: down_proj)", block,
                     False, "save-matmuls", None, cfg["hidden_dim"]))
    reference = None
    print(f"\n| block fwd+bwd, LoRA r={args.rank} | ms | extra GiB | max rel. diff vs eager | compile s |")
    print("|---|---:|---:|---:|---:|")
    for name, module, torch_only, policy, budget, min_k in rows:
        def step():
            with kernels.torch_block_path() if torch_only else kernels.triton_block_path():
                return block_step(module, lora, cos, sin, x, g, policy, budget, min_k)
        try:
            t0 = time.perf_counter()
            grads = step()
            sync(device)
            first_s = time.perf_counter() - t0
            reference = reference if reference is not None else [t.double() for t in grads]
            diff = rel_err(grads, reference)
            ms = median_ms(step, args.min_run_time)
            extra = peak_extra_gib(step, device)
            compile_s = f"{first_s:.1f}" if "compile" in name else "-"
            print(f"| {name} | {ms:.2f} | {fmt(extra)} | {diff:.1e} | {compile_s} |", flush=True)
        except Exception as e:
            msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")[:160]
            print(f"| {name} | failed: {msg} | | | |", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="tiny shapes, 2 sequences x 32 tokens (CPU smoke test)")
    p.add_argument("--batch", type=int, help="sequences (default 16, --small 2)")
    p.add_argument("--seq", type=int, help="tokens per sequence (default 512, --small 32)")
    p.add_argument("--rank", type=int, help="LoRA rank of the block (default 128, --small 8)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="torch.compile rows (auto: CUDA)")
    p.add_argument("--budgets-mib", type=int, nargs="*", default=[-1, 256, 64],
                   help="save-matmuls budgets per block in MiB (-1: no limit)")
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timed runs per row")
    p.add_argument("--check-only", action="store_true", help="only check the Triton ops against float64")
    p.add_argument("--skip-ops", action="store_true")
    p.add_argument("--skip-block", action="store_true")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.batch = args.batch or (2 if args.small else 16)
    args.seq = args.seq or (32 if args.small else 512)
    args.rank = args.rank or (8 if args.small else 128)
    args.compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    cfg = BLOCK_TINY if args.small else BLOCK_8B
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    triton_note = ("" if device.type == "cuda" else " (Triton rows in the interpreter: timings mean nothing)"
                   if INTERPRETED else " (no CUDA: the Triton rows need a GPU and are left out)")
    print(f"{card}, torch {torch.__version__}, {datetime.date.today()}; "
          f"{'tiny' if args.small else 'Llama-3.1-8B'} block shape, {dtype}, {args.batch} x {args.seq} tokens"
          f"{triton_note}\n")
    gen = torch.Generator(device=device).manual_seed(0)
    if not args.skip_ops:
        cases = op_cases(cfg, args.batch, args.seq, device, dtype, gen)
        references = {name: float64_reference(eager, inputs, upstream)
                      for name, (eager, _, inputs, upstream) in cases.items()}
        if (device.type == "cuda" or INTERPRETED) and not check_triton_ops(cases, references):
            print("correctness check FAILED: the Triton kernels disagree with float64 beyond rounding; no timings")
            sys.exit(1)
        if args.check_only:
            checked = device.type == "cuda" or INTERPRETED
            print(f"result: the {len(cases)} Triton ops fwd+bwd within tolerance of float64 ({dtype})" if checked
                  else "result: no CUDA and no TRITON_INTERPRET=1: the Triton ops were not checked")
            return
        bench_ops(cases, references, args, device)
    if not args.skip_block:
        bench_block(cfg, args, device, dtype)


if __name__ == "__main__":
    main()
