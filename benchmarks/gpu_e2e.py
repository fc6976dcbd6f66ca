"""End-to-end runs on CUDA, each compared with the same run on the CPU: parts (b) and (c) of gpu_check.sh.

    python -m benchmarks.gpu_e2e train         # (b) the README's main command (shortened) on CUDA vs the CPU,
                                               #     full fine-tuning and LoRA; --resume on CUDA vs uninterrupted
    python -m benchmarks.gpu_e2e score-eval    # (c) score.py on CUDA vs the CPU; eval.py on CUDA vs the CPU
    python -m benchmarks.gpu_e2e train --small # CPU smoke test (CI): a tiny random model, both sides on the CPU

What is compared, and the tolerances (stated before any GPU run; the first GPU run says whether they hold):
- train: every logged training loss and the final validation loss (the CrPO loss, about ln 2 = 0.69 at the
  start) of crpo.py on CUDA (bf16 autocast; LoRA on a bf16 base) against float32 on the CPU, within
  TOL_DEVICE = 0.02 absolute. bf16 keeps 8 bits of mantissa: sequence log-probs of tens of tokens carry errors
  of about 0.1 nat, times beta = 0.1 in the reward margin, halved by the sigmoid's slope, averaged over pairs.
- resume: a CUDA run stopped right after its first checkpoint and resumed with --resume against the
  uninterrupted CUDA run: losses within TOL_RESUME = 1e-3 relative and weights within 1e-3 absolute
  (cuBLAS may pick other kernels between the two; tests/test_crpo.py's CUDA resume test uses the same bounds).
- score.py: every score within TOL_SCORE = 1e-3 (scores are min-max normalised to [0, 1]; float32 on both).
- eval.py: the preference accuracy (the evaluated model's log-likelihoods, no sampling) within TOL_SCORE;
  the sampled metrics differ by device (another random stream) and are only checked to be finite.
The last line printed is "result: ..." (gpu_check.sh's summary shows it); exit status 1 when a check fails.
"""
import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file

import checkpoint
import crpo
import eval as evaluation
import model as modeling
import outputs
import score
import tokenizer as tokenization

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TOL_DEVICE = 0.02
TOL_RESUME = 1e-3
TOL_SCORE = 1e-3
SAMPLE = os.path.join(ROOT, "examples", "muce_sample.jsonl")
# The README's main command, shortened to 4 steps (warm-up 1, so that the weights move) and validated at the end;
# only the run that is stopped and resumed saves a training state (at step 2)
MAIN = ["--data", SAMPLE, "--max-steps", "4", "--warmup-steps", "1", "--eval-every", "0"]
NO_STATE = ["--save-every", "0", "--no-final-state"]
SMALL = ["--max-train-pairs", "8", "--max-val-pairs", "4", "--batch-size", "2", "--max-len", "64"]
KINDS = {"full": [], "lora": ["--lora-rank", "16"]}


class Stop(Exception):
    """Raised right after the first checkpoint is written: the job is killed there."""


def tiny_model(folder):
    """A random 2-layer model with the embedded model's tokenizer, in HF layout (the --small runs' model)."""
    path = checkpoint.default_model_path()
    tok = tokenization.gguf_tokenizer(checkpoint.read_gguf(path)[0], path)
    torch.manual_seed(0)
    net = modeling.Transformer(modeling.Config(vocab_size=tok.tok.get_vocab_size(), dim=32, n_layers=2, n_heads=4,
                                               n_kv_heads=2, head_dim=8, hidden_dim=64, max_seq_len=512))
    checkpoint.save(net, tok, folder)
    return folder


def read_metrics(out):
    with open(os.path.join(out, outputs.METRICS_FILE)) as f:
        rows = [json.loads(line) for line in f]
    return [r["loss"] for r in rows if r["split"] == "train"], [r["loss"] for r in rows if r["split"] == "val"][-1]


def train_run(argv, out, stop_after_first_save=False):
    """crpo.main(argv + --out out) in this process; optionally killed right after its first checkpoint."""
    save = outputs.save_atomic

    def save_then_stop(obj, path):
        save(obj, path)
        raise Stop

    t0 = time.perf_counter()
    if stop_after_first_save:
        outputs.save_atomic = save_then_stop
    try:
        rc = crpo.main(argv + ["--out", out])
    except Stop:
        rc = "stopped"
    finally:
        outputs.save_atomic = save
    print(f"  crpo.py {' '.join(a for a in argv if not a.startswith('/'))}: {rc} in {time.perf_counter() - t0:.1f} s",
          flush=True)
    if rc not in (0, "stopped"):
        raise RuntimeError(f"crpo.py exited {rc}")


def worst(a, b, relative=False):
    return max(abs(x - y) / (max(abs(y), 1e-12) if relative else 1.0) for x, y in zip(a, b))


def check_train(args, tmp, device):
    """(b): per kind, CPU vs device, and the device run interrupted + resumed vs uninterrupted."""
    base = MAIN + (SMALL + ["--model", tiny_model(os.path.join(tmp, "tiny"))] if args.small else [])
    failures, notes = [], []
    for kind, extra in KINDS.items():
        if args.small and kind == "lora":
            extra = ["--lora-rank", "4"]
        runs = {}
        for side, dev in (("cpu", "cpu"), ("device", device)):
            out = os.path.join(tmp, f"{kind}_{side}")
            train_run(base + extra + NO_STATE + ["--device", dev, "--score-cache", os.path.join(tmp, f"cache_{side}")],
                      out)
            runs[side] = out
        cpu_train, cpu_val = read_metrics(runs["cpu"])
        dev_train, dev_val = read_metrics(runs["device"])
        d = max(worst(dev_train, cpu_train), abs(dev_val - cpu_val))
        ok = len(dev_train) == len(cpu_train) and d <= TOL_DEVICE
        print(f"{kind}: train losses cpu {fmt(cpu_train)}, {device} {fmt(dev_train)}; val loss cpu {cpu_val:.4f}, "
              f"{device} {dev_val:.4f}; max |diff| {d:.2e} (tolerance {TOL_DEVICE}): {'ok' if ok else 'FAILED'}")
        notes.append(f"{kind} {device} vs cpu {d:.1e}")
        failures += [] if ok else [f"{kind} {device} vs cpu"]

        resumed = os.path.join(tmp, f"{kind}_resumed")
        dev_argv = base + extra + ["--device", device, "--score-cache", os.path.join(tmp, "cache_device")]
        train_run(dev_argv + ["--save-every", "2"], resumed, stop_after_first_save=True)
        train_run(dev_argv + ["--resume"] + NO_STATE, resumed)
        res_train, res_val = read_metrics(resumed)
        wa = load_file(os.path.join(runs["device"], "model.safetensors"))
        wb = load_file(os.path.join(resumed, "model.safetensors"))
        dw = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
        dl = max(worst(res_train, dev_train, relative=True), abs(res_val - dev_val) / abs(dev_val))
        ok = len(res_train) == len(dev_train) and dl <= TOL_RESUME and dw <= 1e-3
        print(f"{kind}: --resume on {device} vs uninterrupted: max rel. loss diff {dl:.1e} (tolerance {TOL_RESUME}), "
              f"max |weight diff| {dw:.1e} (tolerance 1e-3): {'ok' if ok else 'FAILED'}", flush=True)
        notes.append(f"{kind} resume {dl:.0e}")
        failures += [] if ok else [f"{kind} resume"]
    return failures, notes


def fmt(values):
    return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"


def check_score_eval(args, tmp, device):
    """(c): score.py's scores and eval.py's preference accuracy on the device against the CPU."""
    model_args = ["--model", tiny_model(os.path.join(tmp, "tiny"))] if args.small else []
    scored = {}
    for dev in ("cpu", device):
        out = os.path.join(tmp, f"scores_{dev}.jsonl")
        with timed(f"score.py --device {dev}"):
            rc = score.main(["--data", SAMPLE, "--out", out, "--device", dev, "--cache-dir",
                             os.path.join(tmp, f"score_cache_{dev}")] + model_args)
        if rc != 0:
            return [f"score.py on {dev} exited {rc}"], []
        with open(out) as f:
            scored[dev] = [json.loads(line) for line in f]
    dims = [k for k in score.DIMENSIONS if k in scored["cpu"][0]]
    d = max(abs(a[k] - b[k]) for a, b in zip(scored[device], scored["cpu"]) for k in dims)
    failures = [] if d <= TOL_SCORE else [f"score.py {device} vs cpu"]
    print(f"score.py: {len(scored['cpu'])} rows, scores {', '.join(dims)}: max |{device} - cpu| {d:.1e} "
          f"(tolerance {TOL_SCORE}): {'ok' if d <= TOL_SCORE else 'FAILED'}")
    notes = [f"scores {d:.0e}"]

    name = "tiny" if args.small else "base"
    models = [f"{name}={model_args[1] if args.small else 'default'}"]
    scorer = ["--scorer-model", model_args[1]] if args.small else []
    acc = {}
    for dev in ("cpu", device):
        out = os.path.join(tmp, f"eval_{dev}.json")
        with timed(f"eval.py --device {dev}"):
            rc = evaluation.main(["--models", *models, "--data", SAMPLE, "--k", "2", "--max-prompts", "2",
                                  "--max-new-tokens", "16", "--bootstrap", "100", "--device", dev, "--out", out,
                                  "--cache-dir", os.path.join(tmp, f"eval_cache_{dev}")] + scorer)
        if rc not in (0, None):
            return failures + [f"eval.py on {dev} exited {rc}"], notes
        with open(out) as f:
            metrics = {k: v for k, v in json.load(f)["models"][name].items() if isinstance(v, dict) and "mean" in v}
        bad = [k for k, v in metrics.items() if not math.isfinite(v["mean"])]
        if bad:
            failures.append(f"eval.py on {dev}: non-finite {', '.join(bad)}")
        acc[dev] = metrics["pref_accuracy"]["mean"]
    d = abs(acc[device] - acc["cpu"])
    print(f"eval.py: preference accuracy cpu {acc['cpu']:.4f}, {device} {acc[device]:.4f}, |diff| {d:.1e} "
          f"(tolerance {TOL_SCORE}): {'ok' if d <= TOL_SCORE else 'FAILED'}")
    notes.append(f"pref. accuracy {d:.0e}")
    return failures + ([] if d <= TOL_SCORE else [f"eval.py {device} vs cpu"]), notes


@contextlib.contextmanager
def timed(what):
    t0 = time.perf_counter()
    yield
    print(f"  {what}: {time.perf_counter() - t0:.1f} s", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("train", "score-eval"))
    p.add_argument("--small", action="store_true", help="a tiny random model, both sides on the CPU (smoke test)")
    args = p.parse_args(argv)
    device = "cpu" if args.small else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("result: no CUDA device (run with --small on a CPU)")
        return 1
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_e2e_") as tmp:
        check = check_train if args.part == "train" else check_score_eval
        failures, notes = check(args, tmp, device)
    verdict = "ok" if not failures else "FAILED: " + "; ".join(failures)
    print(f"result: {args.part} {verdict} ({', '.join(notes)}; {time.perf_counter() - t0:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
