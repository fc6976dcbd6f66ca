#!/usr/bin/env bash
# One GPU run for issue 13, in one call (at most 9.5 minutes of steps on an H100 or H200): correctness on CUDA
# first, then the benchmarks, most important first; everything printed and also written to
# $OUT/gpu_check.log (the device tool's output folder; ./gpu_check.log where OUT is unset). From the repo root:
#     bash benchmarks/gpu_check.sh
# Each step has its own time limit, so one slow step cannot eat the others; a failed step is reported and
# the script goes on. PYTHON overrides the interpreter (default: python3). SMALL=1 runs every benchmark with
# --small: a smoke test of this script on a CPU machine (no timing means anything then).
set -u
cd "$(dirname "$0")/.."
LOG="${OUT:-.}/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
SMALL_FLAG=$([ "${SMALL:-0}" = 1 ] && echo --small)
step() {  # step SECONDS TITLE COMMAND...
    local limit=$1 title=$2
    shift 2
    echo
    echo "=== $title ($(date -u +%H:%M:%S) UTC, limit ${limit}s): $*"
    timeout "$limit" "$@"
    local rc=$?
    [ $rc -eq 0 ] || { echo "=== $title: exit $rc$([ $rc -eq 124 ] && echo ' (timed out)')"; status=1; }
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
$PY -c "import torch, triton; print('torch', torch.__version__, '| triton', triton.__version__, '|',
torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA')"
git log -1 --format='commit %h %s' 2>/dev/null

step 90 "CUDA correctness: kernels vs float64, fused model vs PyTorch path" \
    $PY -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_kernels_block.py -k cuda -rs
# Liger-Kernel is not on the GPU machine: its wheel travels in the ignored .cache/bench_deps (run with carry)
if ls .cache/bench_deps/*.whl >/dev/null 2>&1; then $PY -m pip install -q --no-deps --no-index .cache/bench_deps/*.whl; fi
step 220 "CrPO step, 8B shape, 8 pairs x 512: ours (crpo.train_step, profiled), ours with compiled blocks, transformers+peft, + Liger" \
    $PY benchmarks/bench_step.py --reps 3 --profile $SMALL_FLAG
step 60 "same, ours with the block ops on the PyTorch path (KERNELS_BLOCK_PATH=torch): the baseline of the kernels" \
    env KERNELS_BLOCK_PATH=torch $PY benchmarks/bench_step.py --which ours --reps 3 $SMALL_FLAG
step 90 "block ops and one 8B block: eager vs torch.compile vs Triton; checkpoint policies" \
    $PY benchmarks/bench_block.py --min-run-time 0.3 $SMALL_FLAG
step 60 "log-probs (SPEC shapes), chunk and kept-logits budgets (compile anchors skipped: in SPEC section 8)" \
    $PY benchmarks/bench_logprobs.py --reps 10 --no-compile --budget-sweep $SMALL_FLAG
step 60 "CrPO step, 8B shape, short answers: 64 pairs x 64 tokens (40 prompt), ours (profiled)" \
    $PY benchmarks/bench_step.py --which ours --profile --pairs 64 --seq-len 64 --prompt-len 40 --reps 3 $SMALL_FLAG
echo
echo "=== done ($(date -u +%H:%M:%S) UTC), status $status; log: $LOG"
exit $status
