#!/usr/bin/env bash
# The whole GPU acceptance in one call (issue 19), at most about 9 minutes on an H100 or H200 (the parts' time
# limits add up to 535 s): correctness on CUDA first, then end-to-end runs against the CPU, then the benchmarks.
#   (a) the suite's CUDA tests
#   (b) crpo.py's main command (shortened) on CUDA vs the CPU, full fine-tuning and LoRA; --resume on CUDA
#   (c) score.py and eval.py on CUDA vs the CPU, on the sample
#   (d) bf16 forward and backward of each Triton block kernel against float64 at Llama-3.1-8B shapes
#   (e) the step benchmarks (ours on crpo.py's default, ours with --kernels triton, compiled blocks,
#       transformers+peft, + Liger; 8B shape and 64 pairs x 64 tokens), the block ops, the log-prob kernels
# then a summary table (part, status, seconds, the part's last result line). From the repo root (each part runs
# as `python -m benchmarks.<name>`):
#     bash benchmarks/gpu_check.sh              # on the GPU machine (Liger's wheel in .cache/bench_deps, see below)
#     SMALL=1 bash benchmarks/gpu_check.sh      # CPU smoke test of this script (CI): tiny shapes, no CUDA needed
# Everything printed is also written to $OUT/gpu_check.log (the device tool's output folder; ./gpu_check.log
# where OUT is unset, a temporary folder with SMALL=1). Each part has its own time limit, so one slow part cannot
# eat the others; a failed part is reported and the script goes on; the exit status is 1 if any part failed.
# PYTHON overrides the interpreter (default: python3). After the run: where (d) passed and (e) measured the
# Triton block kernels faster, make them the default in kernels/dispatch.py (VERIFIED, with the date and card).
set -u
cd "$(dirname "$0")/.."
SMALL=${SMALL:-0}
if [ "$SMALL" = 1 ]; then LOG_DIR=${OUT:-$(mktemp -d)}; else LOG_DIR=${OUT:-.}; fi
LOG="$LOG_DIR/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
status=0
SUMMARY=()
if [ "$SMALL" = 1 ]; then
    S=--small
    INTERP="env TRITON_INTERPRET=1"  # (d) on the CPU: the Triton kernels in Triton's interpreter (float32)
    SHORT="--which ours,ours-triton --pairs 4 --seq-len 16 --prompt-len 10"  # (e2): the flags, smaller
else
    S=
    INTERP=
    SHORT="--which ours,ours-triton,hf --pairs 64 --seq-len 64 --prompt-len 40"
fi

step() {  # step PART SECONDS TITLE COMMAND...
    local part=$1 limit=$2 title=$3
    shift 3
    local out t0=$SECONDS rc verdict last
    out=$(mktemp)
    echo
    echo "=== ($part) $title ($(date -u +%H:%M:%S) UTC, limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    verdict=ok
    if [ "$rc" -ne 0 ]; then
        verdict="FAILED: exit $rc$([ "$rc" -eq 124 ] && echo ' (timed out)')"
        status=1
        echo "=== ($part) $title: $verdict"
    fi
    last=$(tr '\r' '\n' < "$out" | grep -a '^result: ' | tail -1)
    [ -n "$last" ] || last=$(tr '\r' '\n' < "$out" | grep -av '^[[:space:]]*$' | tail -1)
    SUMMARY+=("| $part | $title | $verdict | $((SECONDS - t0)) | $(printf '%s' "$last" | tr -d '|' | cut -c1-120) |")
    rm -f "$out"
}

echo "gpu_check.sh $([ "$SMALL" = 1 ] && echo '(SMALL=1: CPU smoke test, no timing means anything)') $(date -u '+%F %T') UTC"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
fi
$PY -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() if torch.cuda.is_available()
else 'no CUDA')"
$PY -c "import triton; print('triton', triton.__version__)" || echo "triton not importable"
git log -1 --format='commit %h %s' 2>/dev/null
# Liger-Kernel is not on the GPU machine: its wheel travels in the ignored .cache/bench_deps (the device tool's carry)
if [ "$SMALL" != 1 ] && ls .cache/bench_deps/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-deps --no-index .cache/bench_deps/*.whl
fi
# anchors installed with `pip install --target .cache/bench_deps` (benchmarks/bench_logprobs.py) are found here
if [ -d .cache/bench_deps ]; then export PYTHONPATH="$PWD/.cache/bench_deps${PYTHONPATH:+:$PYTHONPATH}"; fi

# (a) collects only the test files that mention CUDA (collecting the whole suite costs CI seconds)
step a 60 "CUDA tests (pytest -k cuda)" \
    $PY -m pytest -q -p no:cacheprovider $(grep -l cuda tests/test_*.py) -k cuda -rs
step b 160 "crpo.py on CUDA vs CPU (full, LoRA), --resume on CUDA" \
    $PY -m benchmarks.gpu_e2e train $S
step c 55 "score.py and eval.py on CUDA vs CPU" \
    $PY -m benchmarks.gpu_e2e score-eval $S
step d 30 "Triton block kernels, bf16 fwd+bwd vs float64, 8B shapes" \
    $INTERP $PY -m benchmarks.bench_block --check-only $S
step e1 130 "step, 8B shape, 8 pairs x 512: ours (default, --kernels triton), compiled, hf+peft, +Liger" \
    $PY -m benchmarks.bench_step --reps 3 --warmup 1 --profile $S
step e2 40 "step, short answers, 64 pairs x 64 (40 prompt): ours (default, --kernels triton), hf+peft" \
    $PY -m benchmarks.bench_step $SHORT --profile --reps 3 --warmup 1 $S
step e3 35 "block ops and one 8B block: eager, torch.compile, Triton; checkpoint policies" \
    $PY -m benchmarks.bench_block --min-run-time 0.3 $S
step e4 25 "log-probs (SPEC shapes), kept-logits budgets (no compile anchors)" \
    $PY -m benchmarks.bench_logprobs --reps 10 --no-compile --budget-sweep $S

echo
echo "=== summary ($(date -u +%H:%M:%S) UTC), status $status; log: $LOG"
echo "| part | what | status | s | last result line |"
echo "|---|---|---|---:|---|"
printf '%s\n' "${SUMMARY[@]}"
exit $status
