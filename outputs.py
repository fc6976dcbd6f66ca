"""What a run writes to --out, and reads back on --resume: the training state (train_state.pt, written
atomically: a crash never leaves half a checkpoint), metrics.jsonl, the final model in HF layout (and the
LoRA adapter, recording its base model), and the end-of-run summary of all of it.
"""
import json
import os
import shlex
import shutil
import sys

import torch

import distributed
import checkpoint
import files
import model
import plot

STATE_FILE = "train_state.pt"  # everything --resume needs
METRICS_FILE = "metrics.jsonl"  # one JSON object per logged step (train) and per validation (val)
COMMAND_FILE = "command.txt"  # the command line that started the run (the resume hint repeats it)


def save_atomic(obj, path):
    """torch.save through files.write_atomic: PATH is always the old or the new whole file."""
    files.write_atomic(path, lambda f: torch.save(obj, f))


class ResumeError(Exception):
    """--resume cannot continue (no state, or a state from other flags): the message says what to do."""


def save_state(run):
    """train_state.pt, atomically (write, then rename): weights, optimizer, RNG, data position and the flags
    (the learning rate is a function of the step, crpo.learning_rate; older states also hold a "scheduler" entry,
    which nothing reads)."""
    state = distributed.gather_training_state(run.state_root, run.opt, run.lora)
    state.update(step=run.step, epoch=run.epoch, pos=run.pos, args=vars(run.args))  # lr: learning_rate(step)
    if run.main:
        save_atomic(state, run.path(STATE_FILE))
    distributed.barrier(run.world)
    run.saved_step = run.step


def resume(run, log):
    """Restore train_state.pt into the run (--resume), and keep metrics.jsonl's rows up to that step."""
    path = run.path(STATE_FILE)
    if not run.args.resume and os.path.isfile(path):
        log(f"note: {path} exists; starting over (pass --resume to continue from it)")
    if run.args.resume:
        if not os.path.isfile(path):
            raise ResumeError(f"--resume: {path} not found (no saved training state; run without --resume)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            distributed.restore_training_state(state, run.state_root, run.opt)
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(f"--resume: cannot restore {path} ({str(e).splitlines()[0]}); resume with the flags of "
                            "the saved run (model, --lora-rank, --lora-targets, --objective), or start over") from None
        run.step, run.epoch, run.pos = state["step"], state["epoch"], state["pos"]
        run.saved_step = run.step
        log(f"resumed from {path} at step {run.step} (epoch {run.epoch}, batch {run.pos})")
        if state["args"].get("max_steps") != run.args.max_steps or state["args"].get("epochs") != run.args.epochs:
            log("note: the run length differs from the saved run's, so the learning-rate schedule does too")
    if run.main:  # metrics.jsonl: on resume keep the rows up to the resumed step, else start fresh
        kept = []
        if run.args.resume and os.path.isfile(run.path(METRICS_FILE)):
            with open(run.path(METRICS_FILE)) as f:
                kept = [line for line in f if line.endswith("\n") and json.loads(line)["step"] <= run.step]
        with open(run.path(METRICS_FILE), "w") as f:
            f.writelines(kept)


def write_metrics(run, row):
    if run.main:
        with open(run.path(METRICS_FILE), "a") as f:
            f.write(json.dumps(row) + "\n")


def export_final(run):
    """Final model in HF layout in --out (LoRA merged in; the adapter, recording its base, in --out/adapter).
    Written to a temp folder first, then each file moved in with os.replace. FSDP2: gathered on rank 0."""
    policy = run.policy
    if run.mode is distributed.Distribution.FSDP2:
        full = distributed.full_weights(run.seq)
        if not run.main:
            return
        with torch.device("meta"):
            policy = model.Transformer(run.policy.config)
        policy.load_state_dict(full, strict=False, assign=True)
        if policy.config.tie_embeddings:
            policy.lm_head.weight = policy.embed.weight
    elif not run.main:
        return
    tmp = run.path(".final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if run.lora:
        checkpoint.save_adapter(policy, os.path.join(tmp, "adapter"), run.args.model)
    checkpoint.save(policy, run.tokenizer, tmp)  # LoRA merged into the weights
    for name in sorted(os.listdir(tmp)):
        src, dst = os.path.join(tmp, name), run.path(name)
        if os.path.isdir(src) and os.path.isdir(dst):
            shutil.rmtree(dst + ".old", ignore_errors=True)
            os.replace(dst, dst + ".old")
            os.replace(src, dst)
            shutil.rmtree(dst + ".old")
        else:
            os.replace(src, dst)
    os.rmdir(tmp)


def summary(run, seconds, last_train, last_val):
    """The end-of-run report: time, steps, last numbers, what was written where and its size."""
    def size(path):
        if os.path.isfile(path):
            return os.path.getsize(path)
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    gib = lambda n: f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"  # noqa: E731
    out = run.args.out
    lines = [f"done: {run.step} steps in {seconds / 60:.1f} min"]
    pick = ("loss",) if run.sft else ("loss", "reward_accuracy", "reward_margin", "mean_c")
    for name, row in (("last train step", last_train), ("validation", last_val)):
        if row:
            lines.append(f"  {name}: " + ", ".join(f"{k} {row[k]:.4f}" for k in pick))
    lines.append(f"  model (HF layout{', LoRA merged' if run.lora else ''}): {out}/ ({gib(size(out) - size(run.path(STATE_FILE)) - (size(run.path('adapter')) if run.lora else 0))})")
    if run.lora:
        lines.append(f"  adapter: {run.path('adapter')}/ ({gib(size(run.path('adapter')))})")
    lines.append(f"  metrics: {run.path(METRICS_FILE)}" + (f" (curves: {run.path('curves.png')})"
                                                            if os.path.isfile(run.path("curves.png")) else ""))
    if os.path.isfile(run.path(STATE_FILE)):
        lines.append(f"  resume state: {run.path(STATE_FILE)} ({gib(size(run.path(STATE_FILE)))}; --no-final-state or "
                     "deleting it keeps less)")
    else:
        lines.append("  resume state: none (--no-final-state)")
    lines.append(f"  total on disk: {gib(size(out))}")
    return "\n".join(lines)


def draw_curves(out, main=True):
    """out/curves.png from out/metrics.jsonl when matplotlib is installed (training never requires it); main:
    whether this process writes (rank 0)."""
    if main and plot.have_matplotlib():
        plot.draw_curves(plot.curve_series(plot.read_metrics(os.path.join(out, METRICS_FILE))),
                         os.path.join(out, "curves.png"), title=out)


def command_line(argv=None):
    return shlex.join([sys.executable, *sys.argv] if argv is None else [sys.executable, "crpo.py", *argv])


def record_command(out, main=True):
    """out/command.txt: the command that started the run (what a resume repeats); main: whether this process
    writes (rank 0)."""
    if main:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, COMMAND_FILE), "w") as f:
            f.write(command_line() + "\n")


def write_batch(run, name, indices):
    """The pairs of a batch (prompt, chosen, rejected, line) as JSON Lines in --out, e.g. after a non-finite loss."""
    path = run.path(name)
    if run.main:
        with open(path, "w") as f:
            for i in indices:
                p = run.splits["train"].pairs[i]
                f.write(json.dumps({k: p[k] for k in ("prompt", "chosen", "rejected", "line") if k in p}) + "\n")
    return path


def interrupted(run, argv=None):
    """The one line printed on Ctrl-C: the last saved step and the exact command that continues the run."""
    command = command_line(argv)
    if run is None:
        return "interrupted before training started (nothing saved)"
    if run.saved_step is None:
        return (f"interrupted at step {run.step}; no state saved yet (--save-every {run.args.save_every}); "
                f"rerun to start over: {command}")
    resume = command if "--resume" in command.split() else command + " --resume"
    return (f"interrupted at step {run.step}; last saved step {run.saved_step} in {run.path(STATE_FILE)}; "
            f"continue with: {resume}")
