"""Which path each kernel family takes on CUDA, and the evidence for it: the ONE place the default is decided.

A path becomes the CUDA default only after a GPU run has checked it (bf16 values and gradients against
float64) and measured it faster than what it replaces; until then it is opt-in. VERIFIED below records,
per family, the default path and the run behind it (date, card, software, what was measured).

    python crpo.py ... --kernels triton       # opt in to the Triton block kernels for one training run
    KERNELS_BLOCK_PATH=triton python ...      # the same for a whole process (benchmarks, eval.py, score.py)
    KERNELS_BLOCK_PATH=torch  python ...      # force the PyTorch formulas (A/B baselines)

Precedence of the block-op choice: set_block_path() (crpo.py's --kernels) > $KERNELS_BLOCK_PATH ("auto" or
unset: the verified default) > VERIFIED["block"]["path"]. Off CUDA the block ops run the PyTorch formulas
whatever the choice, except CPU tensors under TRITON_INTERPRET=1 (how CI runs the kernels), which follow the
choice as CUDA tensors would. The log-prob kernels run Triton wherever Triton can (CUDA, or the interpreter).
"""
import contextlib
import os

PATHS = ("triton", "torch")
ENV = "KERNELS_BLOCK_PATH"

# To change a default: run `bash benchmarks/gpu_check.sh` on a GPU, and where part (d) (bf16 against float64)
# passed and part (e) measured the path faster, set "path" and fill in the run's date, card and software.
VERIFIED = {
    "logprobs": {  # kernels.logprobs, kernels.linear_logprobs
        "path": "triton",
        "date": "2026-11-27",
        "card": "NVIDIA H200",
        "software": "torch 2.11, triton 3.6 (benchmarks/bench_logprobs.py at commit c51bb4a; issue 13)",
        "evidence": "values checked against eager float32 before timing; from logits, N=8192, V=128256, bf16, "
                    "fwd+bwd: 1.91 ms (Liger 4.41, torch.compile 5.49, eager 13.63; floor 1.66); from hidden + "
                    "weight with dh and dW: 52.9 ms at 1.73 GiB extra (eager 49.3 ms at 11.7 GiB); frozen weight "
                    "(LoRA): 26.6 ms (eager 37.2)",
    },
    "block": {  # kernels.rms_norm (+ residual), rope, swiglu, lora_add
        "path": "torch",
        "date": None,
        "card": None,
        "software": None,
        "evidence": "not yet verified on a GPU: the Triton block kernels are tested against float64 in float32 "
                    "in Triton's CPU interpreter only (it has no bf16 arithmetic) and have never been timed; "
                    "the default is the PyTorch formulas, eager (torch.compile of each block was faster in "
                    "issue 13's H200 bench_step run, 892 vs 1161 ms a step at fixed 8B shapes, after 27 s of "
                    "compiling; it has never run through crpo.py, whose batches vary in length)",
    },
}

_choice = None  # set_block_path() or block_path_override(); None: $KERNELS_BLOCK_PATH, else VERIFIED


def _check(choice, where):
    if choice not in PATHS:
        raise ValueError(f"{where}: {choice!r} is not a block-kernel path; use one of {', '.join(PATHS)}")
    return choice


def chosen_block_path():
    """The process's choice for the block ops: "triton" or "torch" (see the precedence above).
    Raises ValueError naming $KERNELS_BLOCK_PATH when it holds something else than triton, torch or auto."""
    if _choice is not None:
        return _choice
    env = os.environ.get(ENV, "").strip().lower()
    if env in ("", "auto"):
        return VERIFIED["block"]["path"]
    return _check(env, f"environment variable {ENV}")


def set_block_path(choice):
    """Set the process's choice ("triton" or "torch"); None keeps $KERNELS_BLOCK_PATH or the verified default."""
    global _choice
    _choice = None if choice is None else _check(choice, "set_block_path")


@contextlib.contextmanager
def block_path_override(choice):
    """Within this context the block ops take `choice` (benchmarks' A/B rows, tests); restored after."""
    global _choice
    before, _choice = _choice, _check(choice, "block_path_override")
    try:
        yield
    finally:
        _choice = before


def block_path(device_type, choice=None, interpret=False):
    """The decision: "triton" or "torch" for block ops on tensors of device_type ("cuda", "cpu", "mixed", ...).

    choice: "triton", "torch" or None (the process's, chosen_block_path()); interpret: TRITON_INTERPRET=1 is
    set. Triton only where it can run (CUDA, or CPU under the interpreter) and only when chosen."""
    choice = chosen_block_path() if choice is None else _check(choice, "block_path")
    runs_triton = device_type == "cuda" or (device_type == "cpu" and interpret)
    return "triton" if runs_triton and choice == "triton" else "torch"


def logprobs_path(device_type, interpret=False):
    """"triton" or "torch" for the log-prob kernels: the verified Triton path wherever Triton runs."""
    runs_triton = device_type == "cuda" or (device_type == "cpu" and interpret)
    return VERIFIED["logprobs"]["path"] if runs_triton else "torch"


def describe(device_type):
    """One line for a run's log: which path each family takes on this device, and whether a GPU verified it."""
    if device_type != "cuda":
        return f"kernels on {device_type}: PyTorch formulas (the Triton kernels run on CUDA)"
    block, v = block_path("cuda"), VERIFIED["block"]
    if block == v["path"]:
        why = (f"the default, verified {v['date']} on {v['card']}" if v["date"]
               else "the default until a GPU run verifies the Triton block kernels")
    else:
        why = "chosen over the default" + ("" if v["date"] else "; not yet verified on a GPU")
    lp = VERIFIED["logprobs"]
    return (f"kernels on cuda: log-probs {logprobs_path('cuda')} (verified {lp['date']} on {lp['card']}); "
            f"block ops {block} ({why}; --kernels or ${ENV} chooses)")


FLAG_HELP = ("the transformer block's elementwise ops on CUDA: triton (fused kernels) or torch (PyTorch formulas); "
             f"default: ${ENV}, else the GPU-verified choice recorded in kernels/dispatch.py "
             f"({VERIFIED['block']['path']})")


def select_block_path(choice, device_type, log=print):
    """set_block_path(choice) (crpo.py's --kernels); on CUDA, log describe() (one line: what runs, verified or not)."""
    set_block_path(choice)
    if device_type == "cuda":
        log(describe(device_type))
