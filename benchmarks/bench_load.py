"""Load time and peak memory of the embedded default model: ours vs transformers (when importable).

Each loader runs in a fresh subprocess so peak resident memory is its own. Usage: python -m benchmarks.bench_load
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the children import the project from here (their cwd)

OURS = """
import time, resource, sys
t0 = time.perf_counter()
import checkpoint
m, tok = checkpoint.load(None)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""

TRANSFORMERS = """
import time, resource, sys, os
t0 = time.perf_counter()
import torch, transformers, checkpoint
path = checkpoint.default_model_path()
m = transformers.AutoModelForCausalLM.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path), dtype=torch.float32)
tok = transformers.AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
"""


def run(code, repeats):
    times, mems = [], []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if out.returncode != 0:
            return f"failed: {out.stderr.strip().splitlines()[-1]}"
        t, mem = map(float, out.stdout.split()[-2:])
        times.append(t)
        mems.append(mem)
    times.sort()
    return f"{times[len(times) // 2]:6.1f} s (min {times[0]:.1f}) | {max(mems):5.2f} GiB"


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(f"load of the embedded default (SmolLM2-135M-Instruct Q4_1 GGUF -> float32), median of {repeats}, "
          f"{os.cpu_count()} cores; time includes imports")
    print("| loader | time (median) | peak RSS |\n|---|---|---|")
    print(f"| ours (checkpoint.load) | {run(OURS, repeats)} |")
    try:
        import transformers  # noqa: F401
        print(f"| transformers (from_pretrained gguf_file) | {run(TRANSFORMERS, repeats)} |")
    except ImportError:
        print("| transformers | not installed |")
