"""Speed and memory benchmarks (run from the repository root: python -m benchmarks.<name>; bash benchmarks/gpu_check.sh
runs the GPU set). The research pipeline lives in experiments/."""
