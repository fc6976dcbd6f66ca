"""Benchmark per-token log-probs, forward + backward with an arbitrary upstream gradient.

    python -m benchmarks.bench_logprobs              # SPEC shapes on CUDA: N=8192, V=128256, D=4096, bf16
    python -m benchmarks.bench_logprobs --small      # small shapes (CPU smoke test)

Two tables (markdown, ready for the README): log-probs from logits [N, V], and from hidden [N, D] and
the output weight [V, D]. Rows: ours (kernels/), eager PyTorch, torch.compile, Liger-Kernel and
Cut-Cross-Entropy when importable, and measured floors: 3 HBM passes over the logits (1.5 x a measured
device-to-device copy of N x V: forward read, backward read + write) and the matmuls (z = h W^T,
dh = dz W, dW = dz^T h; plus the recompute of z that bounded memory needs).
Columns: median ms over --reps runs; "extra GiB" = peak memory allocated during one forward+backward
beyond what existed before it (the inputs), gradients included; "w/o grads" = the same less the
returned gradients' own size; "max |d logp|" and "grad err" against eager float32 math on the same
inputs (grad err = max |d grad| / max |grad|). An anchor that fails prints "failed: reason" in its row.

Anchors that are not installed can be brought without touching the environment:
    pip install --no-deps --target .cache/bench_deps liger-kernel cut-cross-entropy
and found with PYTHONPATH=.cache/bench_deps (gpu_check.sh sets it when the folder exists).
"""
import argparse
import datetime
import os
import statistics
import time

import torch

import kernels

GIB = 2**30
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


# ---------------------------------------------------------------- timing and memory

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, device, reps, warmup):
    """Median wall time of fn() in ms (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def peak_extra(fn, device):
    """(result, peak GiB allocated beyond what existed before fn) ; None off CUDA."""
    if device.type != "cuda":
        return fn(), None
    sync(device)
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    result = fn()
    sync(device)
    return result, (torch.cuda.max_memory_allocated() - base) / GIB


def fwd_bwd(f, inputs, g):
    """out = f(*inputs); grads of sum(g * out) w.r.t. the inputs that require grad."""
    out = f(*inputs)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return out, torch.autograd.grad(out, wrt, g)


def run_variant(name, f, make_inputs, g, ref, args, device):
    """One table row: f(*inputs) -> logp [N]; make_inputs() -> fresh inputs (some of them in-place targets)."""
    row = {"name": name}
    try:
        inputs = make_inputs()
        (out, grads), extra = peak_extra(lambda: fwd_bwd(f, inputs, g), device)
        row["extra"] = extra
        if extra is not None:
            row["extra_wo"] = extra - sum(t.numel() * t.element_size() for t in grads
                                          if not any(t.data_ptr() == i.data_ptr() for i in inputs)) / GIB
        if ref is not None:
            ref_out, ref_grads = ref
            row["dval"] = (out.float() - ref_out).abs().max().item()
            row["dgrad"] = max(((a.float() - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()
                               for a, b in zip(grads, ref_grads))
        del out, grads
        row["ms"] = time_ms(lambda: fwd_bwd(f, inputs, g), device, args.reps, args.warmup)
    except Exception as e:  # an anchor's failure is a row, not the end of the benchmark
        msg = f"{type(e).__name__}: {e}".replace("\n", " ").replace("|", "/")
        row["failed"] = msg[:160]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    print_row(row)
    return row


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def print_header():
    print("| variant | median ms | extra GiB | w/o grads GiB | max abs d logp | grad err |")
    print("|---|---:|---:|---:|---:|---:|")


def print_row(row):
    if "failed" in row:
        print(f"| {row['name']} | failed: {row['failed']} | | | | |", flush=True)
        return
    print(f"| {row['name']} | {fmt(row.get('ms'), '.2f')} | {fmt(row.get('extra'), '.2f')} | "
          f"{fmt(row.get('extra_wo'), '.2f')} | {fmt(row.get('dval'), '.1e')} | {fmt(row.get('dgrad'), '.1e')} |",
          flush=True)


def print_floor(name, ms, note):
    print(f"| floor: {name} | {ms:.2f} | | | | {note} |", flush=True)


# ---------------------------------------------------------------- the functions compared

def eager_logprobs(z, y):
    """The usual PyTorch: log_softmax in float32, then gather."""
    return torch.log_softmax(z.float(), dim=-1).gather(-1, y[:, None]).squeeze(-1)


def eager_linear_logprobs(h, w, y):
    return eager_logprobs(h @ w.t(), y)


def chunked_checkpointed(fn, chunk):
    """torch.compile anchor for the linear case: chunks of tokens, each under activation checkpointing."""
    from torch.utils.checkpoint import checkpoint

    def run(h, w, y):
        return torch.cat([checkpoint(fn, h[s:s + chunk], w, y[s:s + chunk], use_reentrant=False)
                          for s in range(0, h.shape[0], chunk)])
    return run


def liger_logprobs():
    from liger_kernel.transformers.functional import liger_cross_entropy
    return lambda z, y: -liger_cross_entropy(z, y, reduction="none")


def liger_linear_logprobs():
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    return lambda h, w, y: -liger_fused_linear_cross_entropy(h, w, y, reduction="none")


def cce_linear_logprobs():
    from cut_cross_entropy import linear_cross_entropy  # exact: no gradient filtering
    return lambda h, w, y: -linear_cross_entropy(h, w, y, reduction="none", filter_eps=None)


def importable(factory):
    try:
        return factory(), None
    except Exception as e:
        return None, f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- the two tables

def bench_logprobs(args, device, dtype):
    n, v = args.n, args.v
    gen = torch.Generator(device="cpu").manual_seed(0)
    z0 = (torch.randn(n, v, generator=gen) * 2).to(device=device, dtype=dtype)
    y = torch.randint(0, v, (n,), generator=gen).to(device)
    g = torch.randn(n, generator=gen).to(device)
    zr = z0.float().requires_grad_(True)
    ref = fwd_bwd(eager_logprobs, (zr, y), g)
    ref = (ref[0].detach(), [t.detach() for t in ref[1]])
    del zr
    path = "triton" if kernels.use_triton(z0, y) else "PyTorch path"
    print(f"\n### log-probs from logits: N={n}, V={v}, {args.dtype}\n")
    print_header()
    fresh = lambda: (z0.clone().requires_grad_(True), y)
    run_variant(f"ours ({path}, grad in place)", lambda z, y: kernels.logprobs(z, y, inplace_backward=True),
                fresh, g, ref, args, device)
    run_variant(f"ours ({path}, new grad)", kernels.logprobs, fresh, g, ref, args, device)
    if args.anchors:
        run_variant("eager PyTorch", eager_logprobs, fresh, g, ref, args, device)
        if args.compile:
            run_variant("torch.compile", torch.compile(eager_logprobs), fresh, g, ref, args, device)
        fn, why = importable(liger_logprobs)
        if fn is None:
            print(f"| Liger-Kernel | not importable: {why[:120]} | | | | |")
        else:
            run_variant("Liger-Kernel (cross_entropy, reduction=none)", fn, fresh, g, ref, args, device)
    # floor: forward reads N x V once, backward reads it and writes the gradient: 3 passes = 1.5 copies
    dst = torch.empty_like(z0)
    copy_ms = time_ms(lambda: dst.copy_(z0), device, args.reps, args.warmup)
    gbs = 2 * z0.numel() * z0.element_size() / copy_ms / 1e6
    print_floor("3 HBM passes over N x V", 1.5 * copy_ms, f"copy {copy_ms:.2f} ms = {gbs:.0f} GB/s")
    del dst, z0
    if args.sweep and path == "triton":
        sweep_blocks(args, device, dtype, fresh, y, g, ref)


def sweep_blocks(args, device, dtype, fresh, y, g, ref):
    tri = kernels._triton_module
    saved = tri.FWD_BLOCK, tri.BWD_BLOCK
    print("\nsweep (ours, grad in place):\n")
    print_header()
    for fwd, bwd in [(2048, 2048), (4096, 4096), (8192, 4096), (16384, 8192), (8192, 1024)]:
        tri.FWD_BLOCK, tri.BWD_BLOCK = fwd, bwd
        run_variant(f"FWD_BLOCK={fwd} BWD_BLOCK={bwd}", lambda z, y: kernels.logprobs(z, y, inplace_backward=True),
                    fresh, g, ref, args, device)
    tri.FWD_BLOCK, tri.BWD_BLOCK = saved


def bench_linear(args, device, dtype):
    n, d, v = args.n, args.d, args.v
    gen = torch.Generator(device="cpu").manual_seed(1)
    h0 = torch.randn(n, d, generator=gen).to(device=device, dtype=dtype)
    w0 = (torch.randn(v, d, generator=gen) / d**0.5 * 2).to(device=device, dtype=dtype)
    y = torch.randint(0, v, (n,), generator=gen).to(device)
    g = torch.randn(n, generator=gen).to(device)
    # reference: eager math in float32 on the same (rounded) inputs, chunked to bound its memory
    hr, wr = h0.float().requires_grad_(True), w0.float().requires_grad_(True)
    ref_fn = chunked_checkpointed(eager_linear_logprobs, max(1, min(n, 1024)))
    ref = fwd_bwd(ref_fn, (hr, wr, y), g)
    ref = (ref[0].detach(), [t.detach() for t in ref[1]])
    ref_frozen = (ref[0], ref[1][:1])
    del hr, wr
    path = "triton" if kernels.use_triton(h0, w0, y) else "PyTorch path"
    both = lambda: (h0.clone().requires_grad_(True), w0.clone().requires_grad_(True), y)
    frozen = lambda: (h0.clone().requires_grad_(True), w0, y)
    print(f"\n### log-probs from hidden + weight: N={n}, D={d}, V={v}, {args.dtype}; dh and dW "
          f"(\"frozen W\": dh only)\n")
    print_header()
    run_variant(f"ours ({path})", kernels.linear_logprobs, both, g, ref, args, device)
    run_variant(f"ours ({path}), frozen W", kernels.linear_logprobs, frozen, g, ref_frozen, args, device)
    if args.budget_sweep and path == "triton":
        tri = kernels._triton_module
        saved = tri.MEMORY_BUDGET, tri.KEEP_BUDGET
        for mib, keep_mib in ((256, 0), (1024, 0), (512, 256), (256, 512), (512, 1024)):
            tri.MEMORY_BUDGET, tri.KEEP_BUDGET = mib * 2**20, keep_mib * 2**20
            kept = f", {keep_mib} MiB of logits kept" if keep_mib else ""
            run_variant(f"ours, chunk budget {mib} MiB{kept}", kernels.linear_logprobs, both, g, ref, args, device)
        tri.MEMORY_BUDGET, tri.KEEP_BUDGET = saved
    if args.anchors:
        run_variant("eager PyTorch", eager_linear_logprobs, both, g, ref, args, device)
        run_variant("eager PyTorch, frozen W", eager_linear_logprobs, frozen, g, ref_frozen, args, device)
        if args.compile:
            chunk = min(2048, max(1, n // 4))
            fn = chunked_checkpointed(torch.compile(eager_linear_logprobs), chunk)
            run_variant(f"torch.compile, chunks of {chunk} + checkpointing", fn, both, g, ref, args, device)
        for name, factory in [("Liger-Kernel (fused linear CE, reduction=none)", liger_linear_logprobs),
                              ("Cut-Cross-Entropy (exact, filter_eps=None)", cce_linear_logprobs)]:
            fn, why = importable(factory)
            if fn is None:
                print(f"| {name} | not importable: {why[:120]} | | | | |")
            else:
                run_variant(name, fn, both, g, ref, args, device)
    # floors: the three matmuls of forward + backward, and the recompute of z
    dz = torch.empty(n, v, device=device, dtype=dtype).normal_()
    t_z = time_ms(lambda: h0 @ w0.t(), device, args.reps, args.warmup)
    t_dh = time_ms(lambda: dz @ w0, device, args.reps, args.warmup)
    t_dw = time_ms(lambda: dz.t() @ h0, device, args.reps, args.warmup)
    tflops = 2 * n * d * v / (t_z * 1e-3) / 1e12
    print_floor("3 matmuls (z, dh, dW)", t_z + t_dh + t_dw,
                f"z {t_z:.2f} + dh {t_dh:.2f} + dW {t_dw:.2f} ms; z at {tflops:.3g} TFLOP/s")
    print_floor("4 matmuls (+ recompute of z)", 2 * t_z + t_dh + t_dw, "bounded memory recomputes z")
    print_floor("frozen W: 2 matmuls (z, dh)", t_z + t_dh, "")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="small shapes (N=512, D=64, V=3001) for a CPU smoke test")
    p.add_argument("--n", type=int, help="tokens (default 8192)")
    p.add_argument("--d", type=int, help="hidden size (default 4096)")
    p.add_argument("--v", type=int, help="vocabulary (default 128256)")
    p.add_argument("--dtype", choices=DTYPES, default="bf16")
    p.add_argument("--which", choices=["all", "logprobs", "linear"], default="all")
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile anchors")
    p.add_argument("--no-anchors", dest="anchors", action="store_false", help="only ours and the floors")
    p.add_argument("--sweep", action="store_true", help="also try a few Triton block sizes for logprobs")
    p.add_argument("--budget-sweep", action="store_true",
                   help="also try chunk budgets and kept-logits budgets (KEEP_BUDGET) for linear_logprobs")
    args = p.parse_args(argv)
    default = (512, 64, 3001) if args.small else (8192, 4096, 128256)
    args.n, args.d, args.v = args.n or default[0], args.d or default[1], args.v or default[2]
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = DTYPES[args.dtype]
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    tv = "-"
    if kernels.triton_available():
        import triton
        tv = triton.__version__
    print(f"{card}, torch {torch.__version__}, triton {tv}, {datetime.date.today()}; "
          f"median of {args.reps} runs after {args.warmup} warm-ups")
    if args.which in ("all", "logprobs"):
        bench_logprobs(args, device, dtype)
    if args.which in ("all", "linear"):
        bench_linear(args, device, dtype)


if __name__ == "__main__":
    main()
