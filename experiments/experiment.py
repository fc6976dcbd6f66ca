"""The paper's pipeline at small scale, version 3: base -> SFT -> DPO / CrPO / DivPO on the authors' settings.

v2 (results/experiment/, results/experiment_summary.json: margin-weighted CrPO, judged by its own training scorer)
stays as it is; v3 writes RESULTS = results/v3/: runs/<arm>_s<seed>.json, summary.json, figure.png.
From the shipped human ratings (data/dt_ratings.jsonl.gz; 44 prompts, four tasks, ratings 1-5):

1. Data (as v2). Per task, --heldout-per-task prompt groups are held out with random.Random(--split-seed) (a group =
   the prompts sharing a task and the first five words of the item); the split is the same for every seed.
   WORK/data/: train.jsonl (--train-responses-per-prompt rated responses per training prompt), scorer_train.jsonl
   (training prompts only: the training arms' originality scorer), evaluator_train.jsonl (held-out prompts' human
   ratings only: the EVALUATOR's originality scorer) and heldout.jsonl (novelty's reference, preference accuracy).
2. Two originality scorers (score.py fit): the training arms' on the training prompts, the evaluator on the held-out
   prompts. No arm trains with the scorer that judges it; the two prompt lists are recorded in summary.json and must
   be disjoint (else the run stops). eval.py warns that the evaluator saw the evaluated prompts: it saw their human
   ratings, never a model's generations, by design.
3. Per seed s: SFT on the training responses rated >= --sft-min-score (crpo.py --objective sft), then from that SFT
   model, same seed, budget and --max-train-pairs (= steps x batch: the pairs a run trains on, so reference
   log-probs and scores cover only those) the arms, each with plain DPO or CrPO's loss:
       dpo        all lambdas 0, the authors' pair rules (below)
       crpo_nds   novelty = diversity = surprise = 1 (the paper's combined model), surprise = --score-surprise chat
                  (their variant: perplexity of the chat-formatted conversation)
       crpo_orig  originality = 1 (the scorer of the training prompts)
       divpo      pairs.py --pairs divpo (Lanchantin et al. 2025): per seeded pool of --divpo-pool responses of a
                  prompt, the most diverse rated >= --divpo-high against the least diverse rated <= --divpo-low;
                  plain DPO loss. Fixed thresholds, not the paper's per-pool quantile (pairs.divpo_pairs says why).
                  One pair per pool gives ~75 pairs per seed here (150 pools, the rest lack a high or a low
                  response), fewer than the 16 x 8 a run draws: DivPO passes over its pairs ~1.7 times
   Every CrPO arm: --weight-on chosen (lambda * s(y_w), the paper's equation and what the authors' scripts trained
   with) over --score-population chosen (each prompt's chosen responses, as their extend_crpo_data.py).
   The authors' pair rules on this 1-5 scale (theirs are in MuCE's facsco_grm_scaled units: min score 20, gap 5,
   <= 10 pairs per response in file order): --min-score 2 --min-margin 0.5 --max-pairs-per-response 10
   --cap-order file, i.e. their numbers divided by 10, IF facsco_grm_scaled is ten times a 1-5 rating (an
   assumption we cannot check here; their SFT cut 30 then maps to v2's --sft-min-score 3). No `Set` column here:
   the held-out split of step 1 replaces it.
   Each model (and base) is evaluated by its own eval.py call on the held-out prompts at k samples, sampling seed s,
   with the evaluator scorer; eval.py reports on_topic (share of generations the relevance scorer calls answers)
   beside the creativity numbers.
4. Statistics (experiment_stats, as v2): per metric, each arm minus SFT->DPO paired by prompt (seeds averaged within
   a prompt): mean, 95% bootstrap interval, exact sign-flip p, Holm over the variants (crpo_nds, crpo_orig, divpo;
   base and SFT a second family), d_z and the minimal detectable effect. RESULTS/summary.json, RESULTS/figure.png.

Budget (time: one session): v2 (--sft-steps 56 --max-steps 56, k 16, 200 held-out responses per prompt, 96
preference pairs) took ~38 min per seed on 2 CPU cores (DPO/CrPO training ~557 s, SFT ~184 s, eval ~117 s per
model). v3 trains 4 preference arms per seed, 3 seeds, in about 75 min: --max-steps 16 (--sft-steps 32), k 8,
100 held-out responses per prompt and 48 preference pairs in eval. Same model, LoRA rank, lr, beta, max length
and held-out prompts as v2. `--plan` estimates the wall time from v2's measured costs (COST_* below) until runs
of this experiment are measured.

Resumable (as v2): each finished run leaves RESULTS/runs/<arm>_s<seed>.json; a rerun skips those (same commands
and data, else it stops), continues a killed training with crpo.py --resume, retrains a deleted SFT parent.

    python -m experiments.experiment --plan                    # planned runs, done or not, and a time estimate
    python -m experiments.experiment                           # the whole experiment (resumes)
    python -m experiments.experiment --summary-only            # statistics and figure from the finished runs
"""
import argparse
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
import plot
from files import git_revision
from experiments import experiment_data as split
from experiments import experiment_report as report

DEFAULT_DATA = os.path.join(ROOT, "data", "dt_ratings.jsonl.gz")
LAMBDA_NAMES = ("novelty", "diversity", "surprise", "quality", "originality")  # crpo.py's --lambda-* flags
REFERENCE = "dpo"
# Planning costs on this 2-core CPU until runs of this experiment are measured, from v2's runs (results/experiment/,
# batch 8, max length 96, LoRA 16 on the 135M default): DPO/CrPO 557 s for 56 steps (mean of 6 runs; reference
# log-probs and scoring included), SFT 184 s for 56 steps (2 runs), eval 117 s per model at k 16 x 12 prompts x 40
# new tokens (mean of the 9 evaluations after the first), the first evaluation 345 s more (cache filling), the
# scorer fit 166 s on 8,853 rows. COST_EVAL_FIXED_S: an evaluation's cost that does not scale with the samples
# (process start, model and scorer loading), taken as the whole of an evaluation in the smoke test (mean 9.5 s of
# 6 at k 2 x 4 prompts x 8 new tokens, 8 preference pairs): an upper bound of the fixed part. COST_TRAIN_FIXED_S: a
# training run's start (models, scores of its pairs) that v2's 56-step means hide, the smoke test's 2-step runs
# (11 to 25 s, mean 20 s) taken whole.
COST_STEP_S = {"pref": 557.2 / 56, "sft": 184.4 / 56}
COST_STEP_BATCH = 8
COST_EVAL_FIXED_S = 9.5
COST_TRAIN_FIXED_S = 20.0
COST_EVAL_SAMPLE_S = (116.7 - COST_EVAL_FIXED_S) / (16 * 12 * 40)  # per generated token budget of one sample
COST_FIRST_EVAL_S = 345.0 * 100 / 200  # scaled to 100 held-out responses per prompt (v2: 200)
COST_FIT_ROW_S = 166.4 / 8853
# The authors' pair rules (min score 20, gap 5, 10 per response, file order) divided by 10 (module docstring)
AUTHORS_PAIR_RULES = ("--min-score", "2", "--min-margin", "0.5", "--max-pairs-per-response", "10",
                      "--cap-order", "file")
DIVPO_FLAGS = ("--pairs", "divpo", "--divpo-pool", "8", "--divpo-high", "3", "--divpo-low", "2")


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm: kind "base" (evaluated only), "sft", or "pref" (DPO / CrPO / DivPO from the seed's SFT model)."""
    name: str
    kind: str
    lambdas: tuple = ()          # ((dimension, lambda), ...) > 0 only; empty = plain DPO loss
    pair_flags: tuple = AUTHORS_PAIR_RULES  # how crpo.py makes its pairs
    signal: tuple = ()           # eval metrics that were also this arm's training signal
    weight_on: str = "chosen"


CORE_ARMS = (Arm("base", "base"), Arm("sft", "sft"), Arm("dpo", "pref"),
             Arm("crpo_nds", "pref", (("novelty", 1.0), ("diversity", 1.0), ("surprise", 1.0)),
                 signal=("novelty", "diversity", "surprise")),
             Arm("crpo_orig", "pref", (("originality", 1.0),), signal=("originality",)),
             Arm("divpo", "pref", (), DIVPO_FLAGS, signal=("diversity",)))
EXTRA_ARMS = (Arm("crpo_div", "pref", (("diversity", 1.0),), signal=("diversity",)),)


@dataclasses.dataclass
class Run:
    """One (arm, seed): what to train (None for base) and evaluate, where its model and result go."""
    arm: Arm
    seed: int
    train_cmd: list
    eval_cmd: list
    model_dir: str
    result_path: str
    parent: str = None  # the SFT run this one starts from

    @property
    def name(self):
        return f"{self.arm.name}_s{self.seed}"


class ExperimentError(Exception):
    """A user-facing problem: main prints it in one line and exits 1."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--data", default=DEFAULT_DATA, help="rating rows with task and item (.jsonl or .jsonl.gz)")
    a("--work-dir", default=os.path.join(ROOT, "runs", "experiment_v3"), help="data subsets, models, caches, logs")
    a("--results", default=os.path.join(ROOT, "results", "v3"), help="per-run JSON (RESULTS/runs/), summary, figure")
    a("--seeds", default="0,1,2", help="training and sampling seeds, one SFT per seed")
    a("--split-seed", type=int, default=0, help="held-out prompt choice and response sampling (same for all seeds)")
    a("--heldout-per-task", type=int, default=3, help="held-out prompt groups per task")
    a("--train-responses-per-prompt", type=int, default=40)
    a("--scorer-responses-per-prompt", type=int, default=400, help="rows per training prompt for score.py fit (0: all)")
    a("--evaluator-responses-per-prompt", type=int, default=400, help="rows per held-out prompt for the evaluator's "
      "score.py fit (0: all)")
    a("--heldout-responses-per-prompt", type=int, default=100)
    a("--extra-arms", action="store_true", help="also crpo_div (diversity = 1) if the budget allows")
    a("--sft-min-score", type=float, default=3.0, help="SFT on training responses rated at least this (1-5 scale)")
    a("--sft-steps", type=int, default=32)
    a("--sft-lr", type=float, default=5e-4)
    a("--max-steps", type=int, default=16, help="steps of each DPO / CrPO / DivPO run")
    a("--lr", type=float, default=5e-4)
    a("--batch-size", type=int, default=8)
    a("--warmup-steps", type=int, default=4)
    a("--lora-rank", type=int, default=16)
    a("--beta", type=float, default=0.1)
    a("--max-len", type=int, default=96)
    a("--save-every", type=int, default=10, help="training state saved every N steps (what --resume continues)")
    a("--k", type=int, default=8, help="samples per held-out prompt per model")
    a("--max-new-tokens", type=int, default=40)
    a("--max-pref-pairs", type=int, default=48)
    a("--eval-batch-size", type=int, default=64)
    a("--bootstrap", type=int, default=10000, help="bootstrap resamples of the paired statistics")
    a("--threads", type=int, default=None, help="OMP_NUM_THREADS for the child processes (default: torch's)")
    a("--delete-models", action="store_true", help="delete each model once its evaluation is saved and no arm needs it")
    a("--plan", action="store_true", help="print the planned runs, what is done, and a time estimate; run nothing")
    a("--summary-only", action="store_true", help="statistics and figure from the finished runs; run nothing")
    a("--budget-min", type=float, default=75, help="--plan: the wall-time budget it checks the estimate against")
    args = p.parse_args(argv)
    try:
        args.seeds = sorted({int(s) for s in args.seeds.split(",") if s.strip()})
    except ValueError:
        p.error(f"--seeds: expected comma-separated integers, got {args.seeds!r}")
    positive = ("heldout_per_task", "train_responses_per_prompt", "heldout_responses_per_prompt", "sft_steps",
                "max_steps", "batch_size", "lora_rank", "k", "max_new_tokens", "eval_batch_size", "max_len")
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.seeds:
        p.error("--seeds: at least one seed")
    args.work_dir, args.results = os.path.abspath(args.work_dir), os.path.abspath(args.results)
    return args


# ----------------------------------------------------------------------------------------------------
# 2-3. The planned commands


def arms(args):
    return CORE_ARMS + (EXTRA_ARMS if args.extra_arms else ())


def model_dir(args, name):
    return os.path.join(args.work_dir, "runs", name)


FITS = {"scorer": "scorer_train", "evaluator": "evaluator_train"}  # originality_<which> -> the data it fits on


def scorer_dir(args, which="scorer"):
    """WORK/originality_scorer (training arms; training prompts) or WORK/originality_evaluator (eval; held-out)."""
    return os.path.join(args.work_dir, f"originality_{which}")


def fit_command(args, info, which="scorer"):
    return [sys.executable, "score.py", "fit", "--data", info["paths"][FITS[which]], "--out", scorer_dir(args, which),
            "--folds", "0"]  # the scorer's own validity is measured in README's validity table, not here


def train_command(args, info, arm, seed):
    """crpo.py for one (arm, seed): SFT from the default, or DPO / CrPO / DivPO from the seed's SFT model."""
    common = ["--data", info["paths"]["train"], "--out", model_dir(args, f"{arm.name}_s{seed}"),
              "--lora-rank", str(args.lora_rank), "--batch-size", str(args.batch_size),
              "--warmup-steps", str(args.warmup_steps), "--max-len", str(args.max_len), "--val-frac", "0",
              "--seed", str(seed), "--save-every", str(args.save_every), "--device", "cpu"]
    if arm.kind == "sft":
        return [sys.executable, "crpo.py", *common, "--objective", "sft", "--sft-min-score", str(args.sft_min_score),
                "--lr", str(args.sft_lr), "--max-steps", str(args.sft_steps)]
    lambdas = dict(arm.lambdas)
    cmd = [sys.executable, "crpo.py", *common, "--model", model_dir(args, f"sft_s{seed}"), "--lr", str(args.lr),
           "--max-steps", str(args.max_steps), "--max-train-pairs", str(args.max_steps * args.batch_size),
           "--beta", str(args.beta), *arm.pair_flags, "--precompute-ref", "--score-cache",
           os.path.join(args.work_dir, "cache"), "--weight-on", arm.weight_on, "--score-population", "chosen"]
    for k in LAMBDA_NAMES:
        cmd += [f"--lambda-{k}", str(lambdas.get(k, 0.0))]
    if lambdas.get("surprise", 0) > 0:
        cmd += ["--score-surprise", "chat"]  # the authors' surprise (README The method)
    if lambdas.get("originality", 0) > 0:
        cmd += ["--score-originality", "model", scorer_dir(args, "scorer")]
    return cmd


def eval_command(args, info, arm, seed, model_path):
    """eval.py for one model (named by its arm) at sampling seed `seed`, originality by the evaluator scorer."""
    return [sys.executable, "eval.py", "--models", f"{arm.name}={model_path}",
            "--data", info["paths"]["heldout"], "--k", str(args.k), "--max-new-tokens", str(args.max_new_tokens),
            "--seed", str(seed), "--max-pref-pairs", str(args.max_pref_pairs), "--batch-size",
            str(args.eval_batch_size), "--score-originality", "model", scorer_dir(args, "evaluator"), "--cache-dir",
            os.path.join(args.work_dir, "cache"), "--device", "cpu",
            "--out", os.path.join(args.work_dir, "evals", f"{arm.name}_s{seed}.json")]


def plan_runs(args, info):
    """Every (arm, seed) in execution order: per seed, base, SFT, then the arms trained from that SFT model."""
    runs = []
    for seed in args.seeds:
        for arm in arms(args):
            name = f"{arm.name}_s{seed}"
            path = "default" if arm.kind == "base" else model_dir(args, name)
            runs.append(Run(arm, seed, None if arm.kind == "base" else train_command(args, info, arm, seed),
                            eval_command(args, info, arm, seed, path), path,
                            os.path.join(args.results, "runs", f"{name}.json"),
                            f"sft_s{seed}" if arm.kind == "pref" else None))
    return runs


def portable(cmd, args):
    """The command as recorded: "python", paths under the work dir as $WORK (a moved work dir still matches)."""
    return shlex.join(["python"] + [c.replace(args.work_dir, "$WORK") for c in cmd[1:]]) if cmd else None


def fingerprint(run, runs_by_name, args, info):
    """What a finished run's result must match to be reused: its commands, its SFT parent's, the fit, the data."""
    parent = runs_by_name.get(run.parent)
    return {"train": portable(run.train_cmd, args), "eval": portable(run.eval_cmd, args),
            "sft": portable(parent.train_cmd, args) if parent else None,
            "fit": portable(fit_command(args, info, "scorer"), args),
            "fit_evaluator": portable(fit_command(args, info, "evaluator"), args), "data_sha256": info["sha256"]}


# ----------------------------------------------------------------------------------------------------
# Running


def run_command(cmd, log_path, env):
    """Run cmd from the repo root, output to log_path -> seconds; ExperimentError (with the log's tail printed) on
    failure. The one place a child process starts (tests replace it)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        with open(log_path, errors="replace") as f:
            print("".join(f.readlines()[-20:]), file=sys.stderr)
        raise ExperimentError(f"exit {rc}: {shlex.join(cmd)} (log above, all of it in {log_path})")
    return time.perf_counter() - t0


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def finished(run, fp):
    """True when run's result exists and was made by the same commands on the same data; ExperimentError when it
    exists but differs (mixing configurations silently would corrupt the statistics)."""
    if not os.path.isfile(run.result_path):
        return False
    old = read_json(run.result_path).get("fingerprint")
    if old != fp:
        diff = sorted(k for k in fp if (old or {}).get(k) != fp[k])
        raise ExperimentError(f"{run.result_path} was made with a different configuration ({', '.join(diff)} "
                              f"differ); use another --results folder or delete that file to rerun it")
    return True


def train_metrics(out):
    """The train rows of out/metrics.jsonl (what plot.py draws) and a short summary of the last steps."""
    rows = [r for r in plot.read_metrics(os.path.join(out, "metrics.jsonl")) if r.get("split") == "train"]
    last = rows[-10:]
    summary = {"steps": rows[-1]["step"] if rows else 0, "first_loss": rows[0]["loss"] if rows else None,
               "last_loss": rows[-1]["loss"] if rows else None}
    for k in ("reward_accuracy", "reward_margin", "mean_c", "tokens_per_s"):
        if last and all(k in r for r in last):
            summary[f"{k}_last10"] = sum(r[k] for r in last) / len(last)
    return rows, summary


def ensure_trained(run, key, args, env, log):
    """Train run's model unless WORK/runs/<name>/done.json holds the same key (its command, its SFT parent's, the
    fit and the data: fingerprint without eval). A saved training state of a run started with the same key and
    not done (killed) continues with --resume; any other state is started over. -> the done.json dict."""
    done_path, started_path = (os.path.join(run.model_dir, f) for f in ("done.json", "started.json"))
    if os.path.isfile(done_path) and read_json(done_path).get("key") == key:
        return read_json(done_path)
    resume = (os.path.isfile(os.path.join(run.model_dir, "train_state.pt")) and os.path.isfile(started_path)
              and read_json(started_path).get("key") == key and not os.path.isfile(done_path))
    if not resume and os.path.isdir(run.model_dir):
        shutil.rmtree(run.model_dir)  # another configuration's model or state: never continue from it
    split.write_atomic(started_path, json.dumps({"key": key}))
    log(f"[{run.name}] {'resuming' if resume else 'training'} ({time.strftime('%H:%M:%S')})")
    seconds = run_command(run.train_cmd + (["--resume"] if resume else []),
                          os.path.join(args.work_dir, "logs", f"train_{run.name}.log"), env)
    rows, summary = train_metrics(run.model_dir)
    done = {"key": key, "command": key["train"], "seconds": seconds, "resumed": resume, "summary": summary,
            "metrics": rows}
    split.write_atomic(done_path, json.dumps(done, indent=1))
    log(f"[{run.name}] trained in {seconds:.0f} s: {json.dumps(summary)}")
    return done


def train_key(run, by_name, args, info):
    return {k: v for k, v in fingerprint(run, by_name, args, info).items() if k not in ("eval", "fit_evaluator")}


def slim_eval(ev):
    """eval.py's JSON for one model -> (name, result without per-generation score lists: they stay in WORK)."""
    (name, res), = ev["models"].items()
    per_prompt = [{k: v for k, v in r.items() if k != "per_generation"} for r in res["per_prompt"]]
    return name, {**res, "per_prompt": per_prompt}


def fit_record_path(args, which):
    return os.path.join(args.results, "runs", f"originality_{which}.json")


def ensure_fitted(args, info, env, log, which):
    """An originality scorer (scorer_dir(which)) fitted once on its prompts (FITS) -> its record."""
    done_path = os.path.join(scorer_dir(args, which), "done.json")
    cmd = portable(fit_command(args, info, which), args)
    key = {"command": cmd, "data_sha256": info["sha256"][FITS[which]]}
    if os.path.isfile(done_path) and read_json(done_path).get("key") == key:
        return read_json(done_path)
    prompts = info[f"{which}_prompts"]
    log(f"[originality {which}] fitting on {len(prompts)} prompts ({time.strftime('%H:%M:%S')})")
    seconds = run_command(fit_command(args, info, which), os.path.join(args.work_dir, "logs", f"fit_{which}.log"), env)
    done = {"key": key, "command": cmd, "seconds": seconds, "rows": info["rows"][FITS[which]], "prompts": prompts}
    split.write_atomic(done_path, json.dumps(done, indent=1))
    split.write_atomic(fit_record_path(args, which), json.dumps(done, indent=1))
    return done


def execute(args, info, runs, env, log):
    """Run what is not finished, in order; write each run's result JSON as soon as it is evaluated."""
    by_name = {r.name: r for r in runs}
    todo = [r for r in runs if not finished(r, fingerprint(r, by_name, args, info))]
    for r in runs:
        if r not in todo:
            log(f"[{r.name}] finished earlier: {os.path.relpath(r.result_path, ROOT)}")
    if not todo:
        return
    revision, dirty = git_revision()
    command = shlex.join(["python", "-m", "experiments.experiment"] + sys.argv[1:])
    fit = {which: ensure_fitted(args, info, env, log, which)["seconds"] for which in FITS}
    for run in todo:
        if run.parent:  # deleted or never trained: (re)train it first
            parent = by_name[run.parent]
            ensure_trained(parent, train_key(parent, by_name, args, info), args, env, log)
        train = ensure_trained(run, train_key(run, by_name, args, info), args, env, log) if run.train_cmd else None
        log(f"[{run.name}] evaluating ({time.strftime('%H:%M:%S')})")
        seconds = run_command(run.eval_cmd, os.path.join(args.work_dir, "logs", f"eval_{run.name}.log"), env)
        name, res = slim_eval(read_json(run.eval_cmd[run.eval_cmd.index("--out") + 1]))
        result = {"arm": run.arm.name, "seed": run.seed, "model": name, "experiment_command": command,
                  "git_revision": revision, "dirty_files": dirty,
                  "fingerprint": fingerprint(run, by_name, args, info), "lambdas": dict(run.arm.lambdas),
                  "weight_on": run.arm.weight_on if run.arm.kind == "pref" else None,
                  "pair_flags": list(run.arm.pair_flags) if run.arm.kind == "pref" else None,
                  "training_signal": list(run.arm.signal), "fit_seconds": fit,
                  "train": train and {k: train[k] for k in ("seconds", "resumed", "summary", "metrics")},
                  "eval": {"seconds": seconds, "k": args.k, "n_prompts": len(res["per_prompt"])},
                  "metrics": {k: v for k, v in res.items() if k not in ("per_prompt", "generations")},
                  "per_prompt": res["per_prompt"], "generations": res.get("generations")}
        split.write_atomic(run.result_path, json.dumps(result, ensure_ascii=False, indent=1))
        log(f"[{run.name}] evaluated in {seconds:.0f} s -> {os.path.relpath(run.result_path, ROOT)}")
        if args.delete_models:
            delete_unneeded_models(runs, log)


def delete_unneeded_models(runs, log):
    """Remove WORK/runs/<name> of every evaluated run whose model no unfinished run starts from."""
    pending_parents = {r.parent for r in runs if r.parent and not os.path.isfile(r.result_path)}
    for r in runs:
        if (r.train_cmd and os.path.isdir(r.model_dir) and os.path.isfile(r.result_path)
                and r.name not in pending_parents):
            shutil.rmtree(r.model_dir)
            log(f"[{r.name}] model deleted (--delete-models)")


# ----------------------------------------------------------------------------------------------------
# --plan: the runs and what they should cost


def measured_costs(args, info, runs):
    """Seconds per training step (per kind, scaled to --batch-size), per evaluation, per fit, the first
    evaluation's extra: from this experiment's finished runs where measured, else from v2's (COST_*)."""
    done = [read_json(r.result_path) for r in runs if os.path.isfile(r.result_path)]
    step = {}
    for kind in ("sft", "pref"):
        trained = [d["train"] for d in done if d.get("train") and d["arm"] in {a.name for a in arms(args)
                                                                                   if a.kind == kind}]
        steps = sum(t["summary"]["steps"] for t in trained)
        step[kind] = (sum(t["seconds"] for t in trained) / steps, "measured") if steps else (
            COST_STEP_S[kind] * args.batch_size / COST_STEP_BATCH, "v2's")
    evals = [d["eval"]["seconds"] for d in done]
    per_eval = (sum(evals) / len(evals), "measured") if evals else (
        COST_EVAL_FIXED_S + COST_EVAL_SAMPLE_S * args.k * len(info["heldout_prompts"]) * args.max_new_tokens,
        "v2's per sample-token + smoke test's fixed part")
    fit = {}
    for which in FITS:
        path = fit_record_path(args, which)
        fit[which] = (read_json(path)["seconds"], "measured") if os.path.isfile(path) else (
            COST_FIT_ROW_S * info["rows"][FITS[which]], "v2's per row")
    measured = any(d.get("train") for d in done)  # then the per-step means include each run's start
    return {"step_sft": step["sft"], "step_pref": step["pref"], "eval": per_eval, "fit": fit,
            "train_fixed": (0.0, "measured") if measured else (COST_TRAIN_FIXED_S, "smoke test"),
            "first_eval": (0.0, "measured") if evals else (COST_FIRST_EVAL_S, "v2's")}


def run_status(run, by_name, args, info):
    try:
        if finished(run, fingerprint(run, by_name, args, info)):
            return "done"
    except ExperimentError:
        return "DIFFERENT CONFIG (delete its result to rerun)"
    key = train_key(run, by_name, args, info) if run.train_cmd else None
    marker = lambda f: os.path.isfile(os.path.join(run.model_dir, f)) and read_json(  # noqa: E731
        os.path.join(run.model_dir, f)).get("key") == key
    if run.train_cmd and marker("done.json"):
        return "trained, eval to do"
    if run.train_cmd and marker("started.json") and os.path.isfile(os.path.join(run.model_dir, "train_state.pt")):
        return "killed: resumes"
    return "to do"


def print_plan(args, info, runs, log):
    by_name = {r.name: r for r in runs}
    cost = measured_costs(args, info, runs)
    steps = {"sft": args.sft_steps, "pref": args.max_steps}
    log(f"costs: SFT step {cost['step_sft'][0]:.1f} s ({cost['step_sft'][1]}), DPO/CrPO/DivPO step "
        f"{cost['step_pref'][0]:.1f} s ({cost['step_pref'][1]}), eval {cost['eval'][0]:.0f} s per model "
        f"({cost['eval'][1]}), first eval +{cost['first_eval'][0]:.0f} s ({cost['first_eval'][1]}), each training "
        f"run's start +{cost['train_fixed'][0]:.0f} s ({cost['train_fixed'][1]})")
    total = left = cost["first_eval"][0]
    for which in FITS:
        t, how = cost["fit"][which]
        fit_done = os.path.isfile(fit_record_path(args, which))
        total, left = total + t, left + (0 if fit_done else t)
        log(f"  {'originality_' + which:22s} {'done' if fit_done else 'to do':26s} fit {t:6.0f} s ({how})  "
            f"{portable(fit_command(args, info, which), args)}")
    train_runs = 0
    for r in runs:
        status = run_status(r, by_name, args, info)
        t_train = steps[r.arm.kind] * cost[f"step_{r.arm.kind}"][0] + cost["train_fixed"][0] if r.train_cmd else 0.0
        t_eval = cost["eval"][0]
        train_runs += bool(r.train_cmd)
        total += t_train + t_eval
        left += 0 if status == "done" else t_eval + (0 if status == "trained, eval to do" else t_train)
        log(f"  {r.name:22s} {status:26s} train {t_train:6.0f} s, eval {t_eval:5.0f} s")
        for cmd in (r.train_cmd, r.eval_cmd):
            if cmd:
                log(f"      {portable(cmd, args)}")
    budget = args.budget_min * 60
    log(f"{len(runs)} runs ({train_runs} trained, {len(runs)} evaluated at k = {args.k} on "
        f"{len(info['heldout_prompts'])} held-out prompts), seeds {args.seeds}: estimated {total / 60:.0f} min in "
        f"all, {left / 60:.0f} min left to run; budget {args.budget_min:.0f} min: "
        f"{'fits' if total <= budget else 'OVER BUDGET'}")
    return {"total_s": total, "left_s": left}


# ----------------------------------------------------------------------------------------------------
# Summary


def write_summary(args, info, runs, log):
    """RESULTS/summary.json and RESULTS/figure.png from the finished runs' result files."""
    by_name, current, stale = {r.name: r for r in runs}, [], []
    for r in runs:
        try:
            current += [r.result_path] if finished(r, fingerprint(r, by_name, args, info)) else []
        except ExperimentError:
            stale.append(r.name)  # another configuration's result: never mixed into the statistics
    by_arm = report.load_results(current)
    if not by_arm:
        log("no finished runs yet: no summary")
        return None
    signal = {a.name: a.signal for a in arms(args)}
    stats_part, paired = report.summarize(by_arm, [a.name for a in arms(args)], signal, reference=REFERENCE,
                                          n_boot=args.bootstrap, seed=args.split_seed)
    revision, dirty = git_revision()
    results = [r for rs in by_arm.values() for r in rs]
    fits = {w: read_json(fit_record_path(args, w)) if os.path.isfile(fit_record_path(args, w)) else None for w in FITS}
    summary = {"version": 3,"experiment_command": shlex.join(["python", "-m", "experiments.experiment"] + sys.argv[1:]),
               "git_revision_now": revision, "dirty_files_now": dirty,
               "git_revisions_of_runs": sorted({r["git_revision"] or "?" for r in results}),
               "seeds": args.seeds, "split_seed": args.split_seed, "args": vars(args),
               "heldout_prompts": info["heldout_prompts"], "n_train_prompts": len(info["train_prompts"]),
               "data_rows": info["rows"], "sft_rows": info["sft_rows"], "data_sha256": info["sha256"],
               "settings": {"weight_on": "chosen", "score_population": "chosen", "surprise_in_training": "chat",
                            "pair_rules": " ".join(AUTHORS_PAIR_RULES), "divpo": " ".join(DIVPO_FLAGS),
                            "pair_rules_note": "the authors' min score 20, gap 5 (MuCE facsco_grm_scaled) divided "
                                               "by 10 for the 1-5 ratings: an assumed scale map"},
               "originality_scorer_prompts": info["scorer_prompts"],
               "originality_evaluator_prompts": info["evaluator_prompts"],
               "originality_prompts_disjoint": not set(info["scorer_prompts"]) & set(info["evaluator_prompts"]),
               "fit_commands": {w: portable(fit_command(args, info, w), args) for w in FITS},
               "fit_seconds": {w: f and f["seconds"] for w, f in fits.items()},
               "commands": {f"{r['arm']}_s{r['seed']}": {"train": r["fingerprint"]["train"],
                                                         "eval": r["fingerprint"]["eval"]} for r in results},
               "seconds": {f"{r['arm']}_s{r['seed']}": {"train": r["train"] and r["train"]["seconds"],
                                                        "eval": r["eval"]["seconds"]} for r in results},
               "runs_missing": [r.name for r in runs if r.result_path not in current], "runs_stale": stale,
               **stats_part}
    split.write_atomic(os.path.join(args.results, "summary.json"),
                 json.dumps(summary, ensure_ascii=False, indent=1))
    log(summary["table_means_markdown"])
    if paired:
        log("\n" + summary["table_paired_markdown"])
        try:
            report.draw_figure(paired, signal, os.path.join(args.results, "figure.png"), reference=REFERENCE)
        except plot.PlotError as e:
            log(f"no figure: {e}")
    log(f"wrote {os.path.join(args.results, 'summary.json')}"
        + (f" ({len(summary['runs_missing'])} runs missing)" if summary["runs_missing"] else ""))
    return summary


def main(argv=None, log=print):
    args = parse_args(argv)
    try:
        info = split.prepare_data(args)
        runs = plan_runs(args, info)
        tasks = sorted({p["task"] for p in info["heldout_prompts"]})
        log(f"held out {len(info['heldout_prompts'])} prompts ({len(tasks)} tasks), {len(info['train_prompts'])} "
            f"training prompts; {info['rows']['train']} training rows ({info['sft_rows']} rated >= "
            f"{args.sft_min_score:g} for SFT), {info['rows']['heldout']} held-out rows; seeds {args.seeds}")
        if args.plan:
            print_plan(args, info, runs, log)
            return 0
        if not args.summary_only:
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
            t0 = time.perf_counter()
            execute(args, info, runs, env, log)
            log(f"runs finished in {time.perf_counter() - t0:.0f} s (this invocation)")
        write_summary(args, info, runs, log)
    except (ExperimentError, split.SplitError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
