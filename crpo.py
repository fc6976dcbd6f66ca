"""CrPO: Creative Preference Optimization (Ismayilzada et al., EMNLP 2025 Findings): the objective, the
command line and the training loop.

DPO whose per-pair loss is weighted by creativity scores of the responses, and the SFT stage before it:

    python crpo.py --data examples/muce_sample.jsonl --max-steps 100 --lora-rank 16
    python crpo.py --data data/dt_ratings.jsonl.gz --objective sft --sft-min-score 3 --out runs/sft
    torchrun --nproc_per_node=8 crpo.py --data muce.jsonl ...     (DDP with LoRA, FSDP2 without)

Reading order: model.sequence_logps (log pi(y|x)) -> creativity_weights -> crpo_loss -> sft_loss (the
method), then batch_loss (the objective on one batch) -> train_step (one optimizer step: where micro-batches,
accumulation and ranks are reduced) -> loop; setup and build_run make the Run those functions share.
"""
import argparse
import contextlib
import copy
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import checkpoint
import data
import distributed
import encoder as sentence_encoder
import kernels
import model
import outputs
import pairs
import registry
from flags import check_args, parse_args  # noqa: F401 (crpo.parse_args: the command line)


class CrpoError(Exception):
    """A user-facing problem (bad flags, missing scores, unloadable model): the CLI prints it, exit 1."""


# ----------------------------------------------------------------------------------------------------
# The objective


def creativity_weights(scores_chosen, scores_rejected, lambdas, strategy="add", weight_on="chosen"):
    """Per-pair creativity weight c, over the dimensions k with lambda_k > 0:

        d_k = s_k(y_w)                        weight_on="chosen" (the paper's equation; what the authors trained)
        d_k = max(0, s_k(y_w) - s_k(y_l))     weight_on="margin" (their weight function, given rejected scores)
        c   = sum_k  lambda_k d_k             strategy="add"
        c   = prod_k lambda_k d_k             strategy="mult"
        c   = 1                               when no lambda_k > 0 (plain DPO)

    scores_chosen, scores_rejected: {dim: Tensor[B]} holding s_k(y_w), s_k(y_l) (scores_rejected is
    only read with weight_on="margin"); lambdas: {dim: float}. Returns c as a Tensor[B] (a 0-dim
    tensor 1.0 when no lambda > 0 and there are no scores to take B from).
    """
    if strategy not in ("add", "mult"):
        raise ValueError(f"strategy must be 'add' or 'mult', not {strategy!r}")
    if weight_on not in ("chosen", "margin"):
        raise ValueError(f"weight_on must be 'chosen' or 'margin', not {weight_on!r}")
    active = [k for k, lam in lambdas.items() if lam > 0]
    if not active:
        any_scores = next(iter((scores_chosen or {}).values()), None)
        if any_scores is None:
            return torch.ones(())
        return torch.ones(any_scores.shape, dtype=torch.promote_types(any_scores.dtype, torch.float32),
                          device=any_scores.device)
    c = None
    for k in active:
        if k not in scores_chosen or (weight_on == "margin" and k not in scores_rejected):
            raise KeyError(f"lambda_{k} = {lambdas[k]} > 0 but there are no '{k}' scores for this batch")
        s_w = scores_chosen[k]
        s_w = s_w.to(torch.promote_types(s_w.dtype, torch.float32))
        d = s_w if weight_on == "chosen" else (s_w - scores_rejected[k].to(s_w.dtype)).clamp(min=0)
        term = lambdas[k] * d
        c = term if c is None else (c + term if strategy == "add" else c * term)
    return c


def crpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, *, beta=0.1, weights=None,
              label_smoothing=0.0):
    """CrPO loss: the creativity-weighted DPO loss, averaged over pairs.

        r_w = beta * (log pi(y_w|x) - log ref(y_w|x))           (implicit reward of the chosen)
        r_l = beta * (log pi(y_l|x) - log ref(y_l|x))           (implicit reward of the rejected)
        h   = r_w - r_l
        l_DPO = -(1 - eps) log sigmoid(h) - eps log sigmoid(-h)    (eps = label_smoothing)
        L   = mean_i c_i * l_DPO,i                                  (c = weights; 1 when None)

    All inputs are Tensor[B] sequence log-probabilities; the reference ones get no gradient.
    Returns (L, stats), stats = detached 0-dim tensors: mean_c, rewards_chosen (mean r_w),
    rewards_rejected (mean r_l), reward_accuracy (mean [r_w > r_l]), reward_ties (mean [r_w == r_l]),
    reward_margin (mean h).
    """
    rewards_chosen = beta * (pol_chosen - ref_chosen.detach())
    rewards_rejected = beta * (pol_rejected - ref_rejected.detach())
    h = rewards_chosen - rewards_rejected
    l_dpo = -(1 - label_smoothing) * F.logsigmoid(h) - label_smoothing * F.logsigmoid(-h)
    c = torch.ones_like(l_dpo) if weights is None else weights.to(l_dpo.dtype).expand_as(l_dpo)
    loss = (c * l_dpo).mean()
    stats = {
        "mean_c": c.detach().mean(),
        "rewards_chosen": rewards_chosen.detach().mean(),
        "rewards_rejected": rewards_rejected.detach().mean(),
        "reward_accuracy": (h.detach() > 0).to(l_dpo.dtype).mean(),
        "reward_ties": (h.detach() == 0).to(l_dpo.dtype).mean(),
        "reward_margin": h.detach().mean(),
    }
    return loss, stats


def sft_loss(logps, n_tokens):
    """The SFT stage: mean negative log-likelihood of the batch's response tokens,

        L_SFT = -(sum_i log pi(y_i|x_i)) / (sum_i |y_i|)

    logps: Tensor[B] sequence log-probabilities (model.sequence_logps), n_tokens: Tensor[B] response lengths."""
    return -logps.sum() / n_tokens.sum().clamp(min=1)


def learning_rate(step, *, lr, warmup_steps, total_steps):
    """Linear warmup, then linear decay to 0 at total_steps T (step t counts from 0):
    lr_t = lr * (t + 1) / W for t < W;  lr_t = lr * (T - t) / (T - W) after."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr * (total_steps - step) / max(1, total_steps - warmup_steps)


# ----------------------------------------------------------------------------------------------------
# The run: models, reference, distribution, optimizer, and the functions the loop calls


@dataclass(frozen=True)
class Objective:
    """What batch_loss computes: sft_loss (sft=True), or crpo_loss with beta, eps = label_smoothing and the
    creativity weights of creativity_weights(lambdas, strategy, weight_on)."""
    sft: bool = False
    beta: float = 0.1
    label_smoothing: float = 0.0
    lambdas: dict = field(default_factory=dict)  # {dimension: lambda_k}; none > 0: plain DPO (c = 1)
    strategy: str = "add"
    weight_on: str = "chosen"

    @classmethod
    def from_args(cls, args, lambdas):
        return cls(sft=args.objective == "sft", beta=args.beta, label_smoothing=args.label_smoothing,
                   lambdas=dict(lambdas), strategy=args.strategy, weight_on=args.weight_on)


@dataclass
class Run:
    """Everything the training loop's functions share (one object instead of closures over locals), built
    complete by build_run; afterwards only --resume (outputs.resume) and the loop move step / epoch / pos, and
    saving moves saved_step."""
    args: argparse.Namespace  # the command line (flags.parse_args)
    device: torch.device
    rank: int  # this process's rank, 0 .. world - 1 (0 without torchrun)
    world: int  # number of processes
    policy: nn.Module  # the model being trained (LoRA adapters added with --lora-rank > 0)
    tokenizer: object
    splits: dict  # {"train": pairs.Split, "val": pairs.Split}; sft: pairs.SftSplit each (single-sequence batches)
    objective: Objective
    seq: nn.Module  # policy -> sequence log-probs (wrapped by DDP / FSDP2 under torchrun)
    mode: distributed.Distribution  # NONE, DDP or FSDP2
    opt: torch.optim.Optimizer
    params: list  # the trainable parameters (what the optimizer steps and clipping sees)
    reference: object = None  # batch -> (ref_chosen, ref_rejected), Tensor[B] each (reference_source); None for sft
    step: int = 0  # optimizer steps done
    epoch: int = 0  # passes over the training pairs done
    pos: int = 0  # optimizer steps into the current epoch
    saved_step: int | None = None  # the step of the train_state.pt last written or resumed from (Ctrl-C names it)

    @property
    def main(self):
        return self.rank == 0

    @property
    def lora(self):
        return self.args.lora_rank > 0

    @property
    def sft(self):
        return self.objective.sft

    @property
    def state_root(self):  # what state dicts are taken from; no-grad forwards need no DDP bookkeeping
        return self.seq.module if self.mode is distributed.Distribution.DDP else self.seq

    @property
    def pad_id(self):
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id

    def autocast(self):
        """bf16 autocast on CUDA unless the weights are bf16 already; nothing on CPU."""
        if self.device.type == "cuda" and self.args.dtype != "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def path(self, name):
        return os.path.join(self.args.out, name)


def weights_dtype(dtype, lora, device):
    """--dtype auto: float32 on CPU; on CUDA a frozen LoRA base (and a frozen reference) in bf16, full fine-tuning
    in float32; "float32" / "bfloat16": that."""
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    return torch.bfloat16 if device.type == "cuda" and lora else torch.float32


def load_model(path, device, dtype=None, loader=None):
    try:
        if loader is not None:
            return loader(path, device=device)
        return checkpoint.load(path, device=device, dtype=dtype, merge_adapter=True)  # a stage starts from it as a whole
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        raise CrpoError(f"cannot load model {path or '(embedded default)'}: {e}") from None


def prepare_policy(policy, ref_model, args):
    """LoRA adapters (float32 under autocast), or a frozen copy of the policy as the reference for full
    fine-tuning; gradient checkpointing. Returns the frozen reference model, or None (LoRA switched off is the
    reference, or sft)."""
    if args.lora_rank > 0:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        model.add_lora(policy, rank=args.lora_rank, alpha=args.lora_alpha, targets=targets, dropout=args.lora_dropout)
        for p in policy.parameters():  # float32 adapters under bf16 autocast; --dtype bfloat16: all bf16, no autocast
            if p.requires_grad and args.dtype != "bfloat16":
                p.data = p.data.float()
    elif ref_model is None and args.objective != "sft":
        ref_model = copy.deepcopy(policy)
    if ref_model is not None:
        ref_model.requires_grad_(False).eval()
    policy.gradient_checkpointing = args.grad_checkpointing
    policy.checkpoint_policy = args.checkpoint_policy
    policy.checkpoint_budget = None if args.checkpoint_budget_mib is None else int(args.checkpoint_budget_mib * 2**20)
    policy.train()
    return ref_model


def adamw(params, *, lr, weight_decay, fused):
    """AdamW with weight decay on matrices only (not on norms and biases)."""
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.999), fused=fused)


def build_run(args, device, rank, world, policy, tokenizer, splits, lambdas, ref_model=None, log=print):
    """The complete Run at step 0: LoRA or a frozen reference, gradient checkpointing, DDP / FSDP2, the optimizer
    and the reference log-prob source (decided once). Nothing is read from or written to --out here (setup then
    restores a --resume state into it)."""
    ref_model = prepare_policy(policy, ref_model, args)
    seq, ref_seq, mode = distributed.wrap(distributed.SequenceLogps(policy),
                                          None if ref_model is None else distributed.SequenceLogps(ref_model),
                                          world=world, lora=args.lora_rank > 0, device=device)
    params = [p for p in seq.parameters() if p.requires_grad]
    opt = adamw(params, lr=args.lr, weight_decay=args.weight_decay,
                fused=world == 1)  # one fused kernel per step (many times faster on CPU)
    run = Run(args, device, rank, world, policy, tokenizer, splits, Objective.from_args(args, lambdas), seq, mode, opt,
              params)
    log(f"model: {sum(p.numel() for p in policy.parameters()):,} parameters, "
        f"{sum(p.numel() for p in params):,} trainable ({'LoRA rank %d' % args.lora_rank if run.lora else 'full'})"
        f"; {world} process(es) on {device}{f' ({mode.value})' if mode is not distributed.Distribution.NONE else ''}")
    run.reference = None if run.sft else reference_source(run, ref_seq)
    return run


def reference_source(run, ref_seq):
    """Where log ref(y|x) comes from, decided once: batch -> (ref_chosen, ref_rejected), float32 Tensor[B] each.

    ref_seq (--ref-model, or the frozen initial policy of full fine-tuning) if there is one, else the policy with
    its LoRA adapters switched off; with --precompute-ref that model's numbers for every pair, computed here once
    (then the reference model is no longer needed), looked up by the batch's rows."""
    @torch.no_grad()
    def from_model(b):
        with run.autocast():
            if ref_seq is not None:
                logps = ref_seq(b["input_ids"], b["attention_mask"], b["response_mask"])[0]
            else:
                with model.lora_disabled(run.policy):
                    logps = model.sequence_logps(run.policy, b["input_ids"], b["attention_mask"], b["response_mask"])[0]
        return logps.float().chunk(2)

    if not run.args.precompute_ref:
        return from_model
    for name, split in run.splits.items():
        table = torch.zeros(len(split.pairs), 2, device=run.device)
        for part, live, b in tqdm(lockstep_batches(run, split), desc=f"reference log-probs ({name})",
                                  total=math.ceil(len(split.pairs) / run.args.batch_size), disable=not run.main):
            table[torch.as_tensor(part, device=run.device)] += live * torch.stack(from_model(b), dim=1)
        split.ref = distributed.all_reduce_sum(table, run.world)  # Split.batch hands out its rows as b["ref"]
    return lambda b: b["ref"].unbind(1)


def lockstep_batches(run, split):
    """Global batches over a whole split; yields (this rank's part, live flag, batch)."""
    n = len(split.pairs)
    for start in range(0, n, run.args.batch_size):
        part, live = distributed.rank_part(np.arange(start, min(n, start + run.args.batch_size)), run.rank, run.world)
        yield part, live, split.batch(part, run.pad_id, run.device)


def batch_loss(run, forward, b):
    """The objective on one batch (this rank's part of a micro-batch) -> (L, n, stats):
    crpo: L = crpo_loss (mean over the n pairs; b: Split.batch, chosen rows then rejected) and its statistics;
    sft: L = sft_loss (mean over the n response tokens; b: SftSplit.batch, one row per example), no statistics.
    forward: run.seq (training) or run.state_root (no-grad validation)."""
    with run.autocast():
        logps, n_tokens = forward(b["input_ids"], b["attention_mask"], b["response_mask"])
    logps = logps.float()
    obj = run.objective
    if obj.sft:
        return sft_loss(logps, n_tokens), n_tokens.sum().item(), {}
    ref_chosen, ref_rejected = run.reference(b)
    active = any(v > 0 for v in obj.lambdas.values())
    c = creativity_weights(b["scores_chosen"], b["scores_rejected"], obj.lambdas, obj.strategy,
                           obj.weight_on) if active else None
    pol_chosen, pol_rejected = logps.chunk(2)
    loss, stats = crpo_loss(pol_chosen, pol_rejected, ref_chosen, ref_rejected, beta=obj.beta, weights=c,
                            label_smoothing=obj.label_smoothing)
    return loss, len(logps) // 2, stats


def metric_sums(loss, n, stats, b, examples, live):
    """What one batch adds to the logged metrics: loss and statistics times n (sums, so that means over any
    number of batches and ranks are sum / count), count = n, examples (pairs; sft: sequences), tokens (padding
    excluded). A stand-in batch (live = 0) adds zeros."""
    sums = {k: v.item() * n * live for k, v in stats.items()}
    sums.update(loss=loss.item() * n * live, count=n * live, examples=examples * live,
                tokens=b["attention_mask"].sum().item() * live)
    return sums


def add_sums(total, sums):
    return {k: total.get(k, 0.0) + v for k, v in sums.items()}


def means(sums):
    """Per-pair (crpo) or per-response-token (sft) means of metric sums: loss and the crpo statistics."""
    return {k: sums[k] / max(1.0, sums["count"]) for k in sums if k not in ("count", "examples", "tokens")}


def validate(run):
    """Metrics over the whole validation split (no dropout), one metrics row."""
    split = run.splits["val"]
    sums = {}
    run.policy.eval()
    with torch.no_grad():
        for part, live, b in tqdm(lockstep_batches(run, split), desc="validation", leave=False, disable=not run.main,
                                  total=math.ceil(len(split.pairs) / run.args.batch_size)):
            sums = add_sums(sums, metric_sums(*batch_loss(run, run.state_root, b), b, len(part), live))
    run.policy.train()
    sums = distributed.reduce_sums(sums, run.world)
    row = {"step": run.step, "split": "val", "pairs": int(sums["examples"]), **means(sums)}
    outputs.write_metrics(run, row)
    if run.main:
        tqdm.write(f"step {run.step}: val loss {row['loss']:.4f}" + (
            "" if run.sft else f", reward accuracy {row['reward_accuracy']:.3f}, margin {row['reward_margin']:.4f}")
            + f" ({row['pairs']} {'sequences' if run.sft else 'pairs'})")
    return row


def train_step(run, step_idx):
    """One optimizer step over the global batch step_idx (grad-accumulated micro-batches, every rank its slice).
    -> (metric sums reduced over ranks, gradient norm). A non-finite loss stops before the update."""
    args, split = run.args, run.splits["train"]
    micro = [step_idx[i:i + args.batch_size] for i in range(0, len(step_idx), args.batch_size)]
    # The step minimises the objective's mean over its whole global batch, however it is split:
    #     L_step = (1 / N) sum over micro-batches m and ranks r of  n_mr * L_mr
    # L_mr = batch_loss's mean over n_mr pairs (sft: response tokens) of micro-batch m on rank r; N = the step's
    # pairs (response tokens). DDP and FSDP2 average gradients over ranks, so each rank's term is * world; a
    # stand-in part (live = 0, distributed.rank_part) adds nothing. This line is the only place the step is reduced.
    N = split.response_tokens(step_idx) if run.sft else len(step_idx)
    sums = {}
    for m, micro_idx in enumerate(micro):
        part, live = distributed.rank_part(micro_idx, run.rank, run.world)
        b = split.batch(part, run.pad_id, run.device)
        last = m == len(micro) - 1  # DDP: all-reduce the gradients once, in the last backward
        with run.seq.no_sync() if run.mode is distributed.Distribution.DDP and not last else contextlib.nullcontext():
            loss, n, stats = batch_loss(run, run.seq, b)
            (loss * n * (live * run.world / N)).backward()
        sums = add_sums(sums, metric_sums(loss, n, stats, b, len(part), live))
    sums = distributed.reduce_sums(sums, run.world)
    grad_norm = nn.utils.clip_grad_norm_(run.params, args.max_grad_norm) if args.max_grad_norm > 0 else torch.tensor(0.)
    grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    loss = means(sums)["loss"]
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        what = f"the loss is {loss}" if not math.isfinite(loss) else f"the gradient norm is {grad_norm}"
        path = outputs.write_batch(run, f"nonfinite_step{run.step + 1}.jsonl", step_idx)
        raise CrpoError(f"step {run.step + 1}: {what} (non-finite); stopped before the update. The batch's "
                        f"{len(step_idx)} pairs are in {path}. Try a lower --lr, a smaller --max-grad-norm, "
                        f"or check those rows and their scores.")
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    return sums, grad_norm


# ----------------------------------------------------------------------------------------------------
# Training


class Interrupted(KeyboardInterrupt):
    """Ctrl-C once the run is built: carries the run, so that main() can name its last saved step."""

    def __init__(self, run):
        super().__init__()
        self.run = run


def setup(args, log):
    """Data, models, scores and token ids -> the complete Run (build_run), resumed from --out with --resume."""
    device = distributed.pick_device(args.device)
    rank, world = distributed.init_distributed(device)
    if rank != 0:
        log = lambda *a, **k: None  # noqa: E731
    kernels.select_block_path(args.kernels, device.type, log)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # 1. rows -> pairs (or SFT examples) -> splits
    train_pairs, val_pairs, population = pairs.load_pairs(args, log)

    # 2. models: policy and reference (the frozen reference of LoRA is the policy with LoRA off)
    dtype = weights_dtype(args.dtype, args.lora_rank > 0, device)
    policy, tokenizer = load_model(args.model, device, dtype)
    ref_model = load_model(args.ref_model, device, dtype)[0] if args.ref_model and args.objective == "crpo" else None
    if ref_model is not None and ref_model.config.vocab_size != policy.config.vocab_size:
        raise CrpoError(f"--ref-model {args.ref_model}: vocabulary size {ref_model.config.vocab_size} "
                        f"differs from the policy's {policy.config.vocab_size}; use the same tokenizer")

    # 3. creativity scores (precomputed columns, else score.py with the reference LM), token ids
    lambdas = {k: getattr(args, f"lambda_{k}") for k in registry.DIMENSIONS} if args.objective == "crpo" else {}
    encoder = load_model(args.score_encoder, device, loader=sentence_encoder.load_encoder) if args.score_encoder else None
    pairs.ensure_scores(train_pairs + val_pairs, lambdas, args, ref_model or policy, tokenizer, rank, world, encoder,
                        population)
    active = {k: v for k, v in lambdas.items() if v > 0}
    if args.objective == "crpo":
        log(f"creativity weight: {args.strategy} of " + (", ".join(f"{v:g} * {k}" for k, v in active.items())
            + f" (on {args.weight_on})" if active else "none (plain DPO, c = 1)"))
    splits = pairs.tokenize_splits(train_pairs, val_pairs, tokenizer, lambdas, args, log)

    # 4. LoRA / reference / checkpointing / distribution / optimizer; then --out: the command, and --resume's state
    run = build_run(args, device, rank, world, policy, tokenizer, splits, lambdas, ref_model, log)
    outputs.record_command(args.out, run.main)
    outputs.resume(run, log)  # weights, optimizer, RNG and step / epoch / pos of train_state.pt
    return run


def train(args):
    """The whole run: setup, the loop, then the final state, validation, model and summary."""
    t_start = time.time()
    run = setup(args, print)
    log = print if run.main else (lambda *a, **k: None)
    try:
        last_train, last_val = loop(run, log)
        if args.final_state:
            outputs.save_state(run)
        elif run.main and os.path.isfile(run.path(outputs.STATE_FILE)):
            os.remove(run.path(outputs.STATE_FILE))  # a mid-run state would not match the final model
        if run.splits["val"].pairs:
            last_val = validate(run)
        outputs.export_final(run)
        outputs.draw_curves(args.out, run.main)
    except KeyboardInterrupt:
        raise Interrupted(run) from None
    distributed.barrier(run.world)
    log(outputs.summary(run, time.time() - t_start, last_train, last_val))
    return 0


def loop(run, log):
    """The training loop: optimizer steps until --max-steps (or --epochs), logging, saving and validating on the
    way. Each epoch visits the training pairs in an order fixed by (seed, epoch), so a resumed run continues with
    the very batches the uninterrupted one would have seen. -> (last train metrics row, last val row)."""
    args = run.args
    n_train, step_pairs = len(run.splits["train"].pairs), args.batch_size * args.grad_accum
    steps_per_epoch = math.ceil(n_train / step_pairs)
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    log(f"{total_steps} steps of {step_pairs} {'sequences' if run.sft else 'pairs'}, peak lr {args.lr:g}")
    window, window_time, last_train, last_val = {}, 0.0, None, None  # metric sums since the last logged step
    with tqdm(total=total_steps, initial=run.step, desc=args.objective, disable=not run.main, dynamic_ncols=True) as bar:
        while run.step < total_steps:
            order = np.random.default_rng([args.seed, run.epoch]).permutation(n_train)  # f(seed, epoch) only
            step_idx = order[run.pos * step_pairs:(run.pos + 1) * step_pairs]
            if len(step_idx) == 0:
                run.epoch, run.pos = run.epoch + 1, 0
                continue
            lr = learning_rate(run.step, lr=args.lr, warmup_steps=args.warmup_steps, total_steps=total_steps)
            for group in run.opt.param_groups:
                group["lr"] = lr
            t0 = time.perf_counter()
            sums, grad_norm = train_step(run, step_idx)
            run.step, run.pos = run.step + 1, run.pos + 1
            if run.pos * step_pairs >= n_train:
                run.epoch, run.pos = run.epoch + 1, 0
            window, window_time = add_sums(window, sums), window_time + time.perf_counter() - t0
            if run.step % args.log_every == 0 or run.step == total_steps:
                last_train = {"step": run.step, "split": "train", "epoch": round(run.epoch + run.pos / steps_per_epoch, 4),
                              **means(window), "lr": lr, "grad_norm": grad_norm, "tokens_per_s": window["tokens"] / window_time}
                outputs.write_metrics(run, last_train)
                bar.set_postfix(progress_numbers(last_train, window))
                window, window_time = {}, 0.0
            bar.update(1)
            if args.save_every > 0 and run.step % args.save_every == 0 and run.step < total_steps:
                outputs.save_state(run)
            if run.splits["val"].pairs and args.eval_every > 0 and run.step % args.eval_every == 0 and run.step < total_steps:
                last_val = validate(run)
    return last_train, last_val


def progress_numbers(row, sums):
    """What the progress bar shows: loss, accuracy counting a tie (policy == reference, as at step 1) as half
    (metrics.jsonl keeps reward_accuracy = share of pairs with r_w > r_l), tokens/s."""
    shown = {"loss": f"{row['loss']:.4f}"}
    if "reward_accuracy" in row:
        shown["acc"] = f"{row['reward_accuracy'] + 0.5 * row['reward_ties']:.2f}"
    shown["tok_s"] = f"{row['tokens_per_s']:.0f}"
    return shown


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except (data.DataError, model.ModelError, CrpoError, distributed.LaunchError, outputs.ResumeError) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:  # one line: where the run stands and the command that continues it
        if int(os.environ.get("RANK", "0")) == 0:
            print("\n" + outputs.interrupted(getattr(e, "run", None), argv), file=sys.stderr)
        return 130
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
