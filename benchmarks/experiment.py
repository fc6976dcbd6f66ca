"""Does CrPO make a model more creative than plain DPO? A small, honest reproduction on real human ratings.

From data/dt_ratings.jsonl.gz (human originality ratings of divergent-thinking responses):

1. Hold out prompts: per task (Alternate Uses, Instances, Consequences, Sentence Completion), --heldout-per-task
   prompt groups drawn with random.Random(seed). A group is the prompts that share a task and the first five
   words of the item, so near-duplicate stems ("When the kids were in the library" / "... they found") never sit
   on both sides. The rest are the training prompts.
2. Write OUT/train.jsonl (per training prompt, --train-responses-per-prompt rated responses sampled with the seed)
   and OUT/heldout.jsonl (per held-out prompt, at most --heldout-responses-per-prompt rated responses: the human
   reference set of eval.py's novelty and the source of its preference pairs).
3. Train six models from the embedded default with one set of pair flags, seed and budget, differing only in the
   lambdas: dpo (all 0), crpo_novelty, crpo_diversity, crpo_surprise, crpo_quality, crpo_nds (novelty + diversity
   + surprise). Every run shares --score-cache, so each creativity score is computed once.
4. ONE eval.py call on the held-out prompts for base (the embedded default) and the six trained models: same
   prompts, same sampling seed, same scoring model. Its JSON is split into RESULTS/<model>.json (with the exact
   commands, git revision and seed) and RESULTS/experiment.json (setup, pair counts, timings, the table).

    python benchmarks/experiment.py --out-dir /tmp/crpo_experiment --results results
    python benchmarks/experiment.py --out-dir /tmp/crpo_smoke --results /tmp/crpo_smoke/results \
        --heldout-per-task 1 --max-steps 2 --k 2 --max-new-tokens 8 --threads 1          (smoke test)

Trained models are kept in OUT/runs/<name>; a run whose OUT/runs/<name>/done.json holds the same command is not
repeated (rerunning after a crash only does what is missing).
"""
import argparse
import json
import os
import random
import re
import shlex
import subprocess
import sys
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import data  # noqa: E402

DEFAULT_DATA = os.path.join(ROOT, "data", "dt_ratings.jsonl.gz")
TASKS = ("Alternate Uses", "Instances", "Consequences", "Sentence Completion")
DIMS = ("novelty", "diversity", "surprise", "quality")
RUNS = {  # name -> lambdas (every run passes all four, so crpo.py's defaults never leak in)
    "dpo": {},
    "crpo_novelty": {"novelty": 1.0},
    "crpo_diversity": {"diversity": 1.0},
    "crpo_surprise": {"surprise": 1.0},
    "crpo_quality": {"quality": 1.0},
    "crpo_nds": {"novelty": 1.0, "diversity": 1.0, "surprise": 1.0},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    a = p.add_argument
    a("--data", default=DEFAULT_DATA, help="rating rows with task and item (default data/dt_ratings.jsonl.gz)")
    a("--out-dir", default="/tmp/crpo_experiment", help="data subsets, trained models, caches, logs")
    a("--results", default=os.path.join(ROOT, "results"), help="where the per-model JSON files go")
    a("--seed", type=int, default=0, help="held-out choice, response sampling, pairs, training, sampling")
    a("--heldout-per-task", type=int, default=3, help="held-out prompt groups per task (>= 2 in the real run)")
    a("--train-responses-per-prompt", type=int, default=20)
    a("--heldout-responses-per-prompt", type=int, default=200)
    # training: one budget for every run
    a("--min-margin", type=float, default=1.0)
    a("--max-pairs-per-response", type=int, default=2)
    a("--max-steps", type=int, default=40)
    a("--batch-size", type=int, default=8)
    a("--lr", type=float, default=5e-4)
    a("--warmup-steps", type=int, default=4)
    a("--lora-rank", type=int, default=16)
    a("--beta", type=float, default=0.1)
    a("--max-len", type=int, default=96)
    # evaluation
    a("--k", type=int, default=8)
    a("--max-new-tokens", type=int, default=40)
    a("--max-pref-pairs", type=int, default=96)
    a("--eval-batch-size", type=int, default=64)
    a("--runs", default=",".join(RUNS), help="comma-separated subset of " + ",".join(RUNS))
    a("--threads", type=int, default=None, help="OMP_NUM_THREADS for the child processes (default: torch's)")
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    bad = [r for r in args.runs if r not in RUNS]
    if bad:
        p.error(f"--runs: unknown {bad}; choose from {list(RUNS)}")
    if args.heldout_per_task < 1:
        p.error("--heldout-per-task must be >= 1")
    return args


# ----------------------------------------------------------------------------------------------------
# 1-2. held-out prompts and the two data files


def group_key(row):
    """Prompts in one group are held out together: same task, same first five words of the item."""
    stem = " ".join(re.findall(r"[\w']+", row["item"].lower())[:5])
    return row["task"], stem


def split_prompts(rows, per_task, seed):
    """-> (held-out prompts, training prompts), both sorted; per task, per_task groups sampled with the seed."""
    groups = defaultdict(set)
    for r in rows:
        groups[group_key(r)].add(r["prompt"])
    rng = random.Random(seed)
    held = set()
    for task in TASKS:
        keys = sorted(k for k in groups if k[0] == task)
        if len(keys) <= per_task:
            raise SystemExit(f"{task}: only {len(keys)} prompt groups; lower --heldout-per-task {per_task}")
        for k in rng.sample(keys, per_task):
            held |= groups[k]
    prompts = {r["prompt"] for r in rows}
    return sorted(held), sorted(prompts - held)


def sample_rows(rows, prompts, per_prompt, seed):
    """At most per_prompt rows of each prompt (random.Random(seed) sample), in file order."""
    by_prompt = defaultdict(list)
    for i, r in enumerate(rows):
        by_prompt[r["prompt"]].append(i)
    rng = random.Random(seed)
    keep = []
    for p in prompts:
        idx = by_prompt[p]
        keep += rng.sample(idx, per_prompt) if len(idx) > per_prompt else idx
    return [rows[i] for i in sorted(keep)]


def write_rows(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({k: r[k] for k in ("prompt", "response", "score", "task", "item")},
                               ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------------
# 3-4. the runs


def run_logged(cmd, log_path, env):
    """Run cmd (from the repo root), its output to log_path; exit with its tail on failure. -> seconds."""
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        with open(log_path) as f:
            tail = f.read()[-3000:]
        raise SystemExit(f"failed (exit {rc}): {shlex.join(cmd)}\n--- {log_path} ---\n{tail}")
    return time.perf_counter() - t0


def git_revision():
    """(HEAD + "-dirty" when tracked files differ from it, the differing files): the tree the run used."""
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True).stdout.split("\n")
    dirty = [line[3:] for line in dirty if line.strip()]
    return rev + ("-dirty" if dirty else ""), dirty


def train_command(args, name, train_path, cache_dir):
    lambdas = RUNS[name]
    cmd = [sys.executable, "crpo.py", "--data", train_path, "--out", os.path.join(args.out_dir, "runs", name),
           "--max-steps", str(args.max_steps), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
           "--warmup-steps", str(args.warmup_steps), "--lora-rank", str(args.lora_rank), "--beta", str(args.beta),
           "--max-len", str(args.max_len), "--min-margin", str(args.min_margin),
           "--max-pairs-per-response", str(args.max_pairs_per_response), "--val-frac", "0", "--seed", str(args.seed),
           "--precompute-ref", "--save-every", "0", "--score-cache", cache_dir, "--device", "cpu"]
    for k in DIMS:
        cmd += [f"--lambda-{k}", str(lambdas.get(k, 0.0))]
    return cmd


def last_train_row(out):
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if line.strip()]
    rows = [r for r in rows if r.get("split") == "train"]
    first, last = rows[0], rows[-1]
    return {"steps": last["step"], "first_loss": first["loss"], "last_loss": last["loss"],
            "mean_reward_accuracy_last10": sum(r["reward_accuracy"] for r in rows[-10:]) / len(rows[-10:]),
            "mean_reward_margin_last10": sum(r["reward_margin"] for r in rows[-10:]) / len(rows[-10:]),
            "mean_c": sum(r["mean_c"] for r in rows) / len(rows),
            "tokens_per_s": sum(r["tokens_per_s"] for r in rows) / len(rows)}


TABLE_METRICS = ("novelty", "diversity", "surprise", "quality", "distinct", "length", "pref_accuracy")


def paired_differences(models, baseline="dpo", *, n_boot=1000, seed=0):
    """{model: {metric: {"mean", "lo", "hi"}}}: per-prompt difference model - baseline on the same prompts,
    mean over prompts and its 95% percentile bootstrap interval over prompts (eval.bootstrap_interval). Preference
    accuracy is left out (its per-prompt pair counts differ in weight)."""
    import eval as evaluation
    base = {r["prompt"]: r for r in models[baseline]["per_prompt"]}
    out = {}
    for name, res in models.items():
        if name == baseline:
            continue
        out[name] = {}
        for metric in TABLE_METRICS[:-1]:
            diffs = [r[metric] - base[r["prompt"]][metric] for r in res["per_prompt"]]
            mean, lo, hi = evaluation.bootstrap_interval(diffs, n_boot=n_boot, seed=seed)
            out[name][metric] = {"mean": mean, "lo": lo, "hi": hi}
    return out


def markdown_table(models):
    head = ["model", *TABLE_METRICS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in models.items():
        cells = [f"{r[m]['mean']:.3g} [{r[m]['lo']:.3g}, {r[m]['hi']:.3g}]" if m in r else "-" for m in TABLE_METRICS]
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    t_start = time.perf_counter()
    os.makedirs(os.path.join(args.out_dir, "runs"), exist_ok=True)
    os.makedirs(os.path.join(args.out_dir, "logs"), exist_ok=True)
    os.makedirs(args.results, exist_ok=True)
    env = dict(os.environ)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cache_dir = os.path.join(args.out_dir, "cache")
    revision, dirty_files = git_revision()
    command = shlex.join(["python", os.path.relpath(os.path.abspath(sys.argv[0]), ROOT)] + sys.argv[1:])
    print(f"git {revision}{' (' + ', '.join(dirty_files) + ' differ from it)' if dirty_files else ''}; {command}")

    rows, report = data.read_rows(args.data)
    print(report.summary())
    rows = [r for r in rows if r.get("task") in TASKS and r.get("item")]
    heldout, train_prompts = split_prompts(rows, args.heldout_per_task, args.seed)
    train_rows = sample_rows(rows, train_prompts, args.train_responses_per_prompt, args.seed)
    held_rows = sample_rows(rows, heldout, args.heldout_responses_per_prompt, args.seed)
    train_path = os.path.join(args.out_dir, "train.jsonl")
    held_path = os.path.join(args.out_dir, "heldout.jsonl")
    write_rows(train_path, train_rows)
    write_rows(held_path, held_rows)
    task_of = {r["prompt"]: r["task"] for r in rows}
    print(f"held out {len(heldout)} prompts ({', '.join(f'{t}: {sum(task_of[p] == t for p in heldout)}' for t in TASKS)})"
          f", {len(held_rows)} rated responses -> {held_path}")
    for p in heldout:
        print(f"  [{task_of[p]}] {p}")
    print(f"training: {len(train_prompts)} prompts, {len(train_rows)} rated responses -> {train_path}")
    pairs, pair_stats = data.build_pairs(data.read_rows(train_path)[0], min_margin=args.min_margin,
                                         max_pairs_per_response=args.max_pairs_per_response, seed=args.seed)
    print(data.pairs_summary(pair_stats))
    steps_per_epoch = -(-len(pairs) // args.batch_size)
    print(f"budget per training run: {args.max_steps} steps x {args.batch_size} pairs = "
          f"{args.max_steps * args.batch_size} pairs seen ({args.max_steps / steps_per_epoch:.2f} epochs of "
          f"{len(pairs)} pairs), LoRA rank {args.lora_rank}, lr {args.lr:g}, beta {args.beta:g}, "
          f"max-len {args.max_len}; {len(args.runs)} runs")
    print(f"evaluation: {len(heldout)} held-out prompts x k = {args.k} x {args.max_new_tokens} new tokens "
          f"x {len(args.runs) + 1} models, {args.max_pref_pairs} human pairs for preference accuracy; "
          f"OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', '(torch default)')}")

    timings, train_info = {}, {}
    for name in args.runs:
        cmd = train_command(args, name, train_path, cache_dir)
        out = os.path.join(args.out_dir, "runs", name)
        done = os.path.join(out, "done.json")
        if os.path.isfile(done) and json.load(open(done)).get("command") == cmd[1:]:
            info = json.load(open(done))
            print(f"[{name}] already trained with this command ({info['seconds']:.0f} s), reusing {out}")
        else:
            print(f"[{name}] training ... ({time.strftime('%H:%M:%S')})", flush=True)
            seconds = run_logged(cmd, os.path.join(args.out_dir, "logs", f"train_{name}.log"), env)
            info = {"command": cmd[1:], "seconds": seconds, "metrics": last_train_row(out)}
            with open(done, "w") as f:
                json.dump(info, f, indent=1)
        train_info[name] = info
        timings[f"train_{name}"] = info["seconds"]
        m = info["metrics"]
        print(f"[{name}] {info['seconds']:.0f} s: loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}, reward "
              f"accuracy (last 10 steps) {m['mean_reward_accuracy_last10']:.2f}, mean c {m['mean_c']:.3f}, "
              f"{m['tokens_per_s']:.0f} tokens/s", flush=True)

    eval_json = os.path.join(args.out_dir, "eval.json")
    eval_cmd = [sys.executable, "eval.py", "--models", "base=default",
                *[f"{name}={os.path.join(args.out_dir, 'runs', name)}" for name in args.runs],
                "--data", held_path, "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens),
                "--seed", str(args.seed), "--max-pref-pairs", str(args.max_pref_pairs),
                "--batch-size", str(args.eval_batch_size), "--cache-dir", cache_dir, "--device", "cpu",
                "--out", eval_json, "--report", os.path.join(args.out_dir, "eval.md")]
    print(f"[eval] {len(args.runs) + 1} models ... ({time.strftime('%H:%M:%S')})", flush=True)
    timings["eval"] = run_logged(eval_cmd, os.path.join(args.out_dir, "logs", "eval.log"), env)
    timings["wall_this_invocation"] = time.perf_counter() - t_start  # reused runs cost nothing here
    with open(eval_json) as f:
        ev = json.load(f)

    shared = {"experiment_command": command, "git_revision": revision, "dirty_files": dirty_files, "seed": args.seed,
              "eval_command": shlex.join(["python"] + eval_cmd[1:]), "heldout_prompts": heldout,
              "eval_config": ev["config"]}
    for name, res in ev["models"].items():
        out = {"model": name, **shared,
               "metrics": {k: v for k, v in res.items() if k not in ("per_prompt", "generations")},
               "per_prompt": res["per_prompt"], "generations": res["generations"]}
        if name in train_info:
            out["train_command"] = shlex.join(["python"] + train_info[name]["command"])
            out["lambdas"] = {k: RUNS[name].get(k, 0.0) for k in DIMS}
            out["train"] = {"seconds": train_info[name]["seconds"], **train_info[name]["metrics"]}
        with open(os.path.join(args.results, f"{name}.json"), "w") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
    summary = {**{k: v for k, v in shared.items() if k != "eval_config"}, "args": vars(args),
               "data_report": report.summary(), "n_train_prompts": len(train_prompts),
               "n_train_rows": len(train_rows), "n_heldout_rows": len(held_rows), "pair_stats": pair_stats,
               "n_pairs": len(pairs), "timings_s": timings,
               "models": {n: {k: v for k, v in r.items() if k not in ("per_prompt", "generations")}
                          for n, r in ev["models"].items()}}
    if "dpo" in ev["models"]:
        summary["paired_minus_dpo"] = paired_differences(ev["models"], seed=args.seed)
    summary["table_markdown"] = markdown_table(ev["models"])
    with open(os.path.join(args.results, "experiment.json"), "w") as f:
        json.dump(summary, f, ensure_ascii=False, indent=1, default=str)

    print()
    print(summary["table_markdown"])
    if "paired_minus_dpo" in summary:
        print("\nper-prompt difference to dpo, mean [95% bootstrap interval over prompts]:")
        print(markdown_table(summary["paired_minus_dpo"]))
    print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"wrote {len(ev['models'])} model files and experiment.json to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
