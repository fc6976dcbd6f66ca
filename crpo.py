"""CrPO: Creative Preference Optimization (Ismayilzada et al., EMNLP 2025 Findings).

DPO whose per-pair loss is weighted by creativity scores of the responses:

    python crpo.py --data examples/muce_sample.jsonl --max-steps 100 --lora-rank 16
    torchrun --nproc_per_node=8 crpo.py --data muce.jsonl ...     (DDP with LoRA, FSDP2 without)

Reading order: sequence_logps -> creativity_weights -> crpo_loss (the method), then train() (the loop).
"""
import argparse
import contextlib
import copy
import importlib.util
import json
import math
import os
import random
import shutil
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

import data
import kernels
import model as modeling

DIMS = ("novelty", "diversity", "surprise", "quality")
STATE_FILE = "train_state.pt"  # in --out: everything --resume needs
METRICS_FILE = "metrics.jsonl"


class CrpoError(Exception):
    """A user-facing problem (bad flags, missing scores, unloadable model): the CLI prints it, exit 1."""


# ----------------------------------------------------------------------------------------------------
# The objective


def sequence_logps(model, input_ids, attention_mask, response_mask):
    """Sum of response-token log-probabilities, log pi(y|x) = sum_{t in y} log pi(y_t | x, y_<t).

    input_ids, attention_mask, response_mask: [B, T]; response_mask is 1 on the response tokens
    (the only ones that count). Returns (logps [B] float32, n_tokens [B]).
    Only the positions that predict a response token go through the output layer, so neither
    prompt nor padding tokens cost vocabulary-sized work.
    """
    hidden = model.hidden(input_ids, attention_mask)[:, :-1]  # position t predicts token t+1
    targets = response_mask[:, 1:].bool()
    rows = targets.nonzero(as_tuple=True)
    h, weight = hidden[rows], model.lm_head.weight
    if torch.is_autocast_enabled(h.device.type):  # the output layer in the autocast dtype, as nn.Linear would be
        dtype = torch.get_autocast_dtype(h.device.type)
        h, weight = h.to(dtype), weight.to(dtype)
    token_logps = kernels.linear_logprobs(h, weight, input_ids[:, 1:][rows])
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=input_ids.device)
    logps = logps.index_add(0, rows[0], token_logps.float())
    return logps, targets.sum(-1)


def creativity_weights(scores_chosen, scores_rejected, lambdas, strategy="add", weight_on="chosen"):
    """Per-pair creativity weight c, over the dimensions k with lambda_k > 0 (SPEC section 5):

        d_k = s_k(y_w)                        weight_on="chosen" (the paper's equation)
        d_k = max(0, s_k(y_w) - s_k(y_l))     weight_on="margin"
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
    rewards_rejected (mean r_l), reward_accuracy (mean [r_w > r_l]), reward_margin (mean h).
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
        "reward_margin": h.detach().mean(),
    }
    return loss, stats


def subsample(pairs, limit, seed, what, flag, log=print):
    """At most `limit` of the pairs (0 = all), a seeded sample in the original order."""
    if not 0 < limit < len(pairs):
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), limit))
    log(f"using {limit:,} of the {len(pairs):,} {what} pairs ({flag})")
    return [pairs[i] for i in keep]


def learning_rate(step, *, lr, warmup_steps, total_steps):
    """Linear warmup, then linear decay to 0 at total_steps T (step t counts from 0):
    lr_t = lr * (t + 1) / W for t < W;  lr_t = lr * (T - t) / (T - W) after."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    return lr * (total_steps - step) / max(1, total_steps - warmup_steps)


# ----------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="crpo.py", description="Train a language model with CrPO "
                                "(creativity-weighted DPO) on rated responses or preference pairs.")
    a = p.add_argument
    a("--data", required=True, help="JSON Lines: rating rows {prompt, response, score} or preference "
      "rows {prompt, chosen, rejected} (SPEC section 3)")
    a("--model", default=None, help="HF folder or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    a("--ref-model", default=None, help="reference model (default: the initial policy, frozen; "
      "with LoRA: the policy with LoRA switched off)")
    a("--out", default="out", help="output folder: final model, metrics.jsonl, training state")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    g.add_argument("--epochs", type=int, default=None, help="passes over the training pairs (default 1)")
    a("--batch-size", type=int, default=8, help="pairs per micro-batch (global, over all ranks)")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    a("--lr", type=float, default=None, help="peak learning rate (default 1e-4 with LoRA, 1e-5 without)")
    a("--warmup-steps", type=int, default=10)
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay (matrices only)")
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off)")
    a("--beta", type=float, default=0.1, help="DPO beta")
    a("--label-smoothing", type=float, default=0.0, help="conservative DPO eps in [0, 0.5)")
    for k in DIMS:
        a(f"--lambda-{k}", type=float, default=0.0 if k == "quality" else 1.0, help=f"weight of {k}")
    a("--strategy", choices=("add", "mult"), default="add", help="combine dimensions: sum or product")
    a("--weight-on", choices=("chosen", "margin"), default="chosen",
      help="score of the chosen response (paper) or max(0, chosen - rejected)")
    a("--lora-rank", type=int, default=0, help="> 0: train LoRA adapters of this rank")
    a("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 * rank)")
    a("--lora-dropout", type=float, default=0.0)
    a("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
      help="comma-separated linear layer names")
    a("--min-margin", type=float, default=0.0, help="minimum score difference for a rating pair")
    a("--max-pairs-per-response", type=int, default=4,
      help="cap on the pairs any one response joins, largest margins first (0 = no cap; every pair of a "
           "prompt with n responses is n(n-1)/2 pairs, which explodes on real rating files)")
    a("--length-balance", action="store_true", help="as many pairs with the longer chosen as shorter")
    a("--val-frac", type=float, default=0.1, help="fraction of prompts held out for validation")
    a("--max-val-pairs", type=int, default=512, help="validate on at most this many held-out pairs (0 = all)")
    a("--max-train-pairs", type=int, default=0, help="train on a seeded sample of this many pairs (0 = all)")
    a("--max-len", type=int, default=512, help="tokens per sequence (prompt + response)")
    a("--seed", type=int, default=0)
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--dtype", choices=("auto", "float32", "bfloat16"), default="auto",
      help="weights; auto = float32 weights with bf16 autocast on CUDA")
    a("--grad-checkpointing", action="store_true", help="recompute layer activations in backward")
    a("--precompute-ref", action="store_true", help="compute all reference log-probs once up front")
    a("--eval-every", type=int, default=50, help="validate every N steps (and at the end; 0 = end only)")
    a("--save-every", type=int, default=100, help="save the training state every N steps (and at the end)")
    a("--log-every", type=int, default=1, help="write a metrics row every N steps")
    a("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    a("--resume", action="store_true", help=f"continue from {STATE_FILE} in --out")
    # scores the data lacks are computed with score.py before training (its CLI's options, prefixed)
    a("--score-novelty", choices=("dsi", "centroid"), default="dsi")
    a("--score-surprise", choices=("lm", "embedding"), default="lm")
    a("--score-quality", nargs="+", default=["judge"], metavar="judge | rm PATH | field NAME")
    a("--score-reference", default=None, help="reference responses (JSON Lines) for DSI novelty")
    a("--score-encoder", default=None, help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
    a("--score-cache", default=None, help="score cache folder (default: score.py's)")
    args = p.parse_args(argv)
    if args.max_steps is None and args.epochs is None:
        args.epochs = 1
    for name in ("batch_size", "grad_accum", "max_len", "log_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if (args.max_steps is not None and args.max_steps < 1) or (args.epochs is not None and args.epochs < 1):
        p.error("--max-steps / --epochs must be >= 1")
    if not (args.beta > 0 and math.isfinite(args.beta)):
        p.error("--beta must be a positive number")
    if not 0 <= args.label_smoothing < 0.5:
        p.error("--label-smoothing must be in [0, 0.5)")
    if not 0 <= args.val_frac < 1:
        p.error("--val-frac must be in [0, 1)")
    if args.lr is None:
        args.lr = 1e-4 if args.lora_rank > 0 else 1e-5
    if args.lora_alpha is None:
        args.lora_alpha = 2.0 * args.lora_rank
    return args


# ----------------------------------------------------------------------------------------------------
# Distributed helpers: every rank takes its slice of the same global batch


def init_distributed(device):
    """(rank, world_size); joins the process group under torchrun (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world


def all_reduce_sum(t, world):
    if world > 1:
        dist.all_reduce(t)
    return t


def rank_part(indices, rank, world):
    """This rank's contiguous slice of a global batch, and whether it is real (1.0) or a stand-in (0.0).
    A rank whose slice is empty runs the batch's first pair with weight 0, so that every rank makes
    the same forward/backward calls (DDP and FSDP need them in lockstep)."""
    part = np.array_split(np.asarray(indices), world)[rank]
    return (part, 1.0) if len(part) else (np.asarray(indices[:1]), 0.0)


class SequenceLogps(nn.Module):
    """model -> sequence_logps as a module call, so DDP / FSDP2 hooks see the whole forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, response_mask):
        return sequence_logps(self.model, input_ids, attention_mask, response_mask)[0]


def shard_fsdp(module, world, device):
    """FSDP2: one shard group per transformer block, the rest (embeddings, norm, head) in the root."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    mesh = init_device_mesh(device.type, (world,))
    for layer in module.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


# ----------------------------------------------------------------------------------------------------
# Checkpoints


def save_atomic(obj, path):
    """torch.save to PATH.tmp, fsync, then os.replace: PATH is always the old or the new whole file."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def rng_state():
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,  # this rank's device
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "python": random.getstate()}


def set_rng_state(s):
    torch.set_rng_state(s["torch"])
    if s["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(s["cuda"])
    name, keys, *rest = s["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    random.setstate(s["python"])


def state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions
    return StateDictOptions(**kw)


def gather_training_state(seq, opt, lora, step, epoch, pos, args):
    """The whole training state as full (unsharded) CPU tensors; a collective call under FSDP2.
    Weights are keyed like Transformer.state_dict(); with LoRA only the trainable (LoRA) ones."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict
    opts = state_dict_options(full_state_dict=True, cpu_offload=True, ignore_frozen_params=lora)
    trainable = {n for n, p in seq.named_parameters(remove_duplicate=False) if p.requires_grad}
    weights = {k.removeprefix("model."): v for k, v in get_model_state_dict(seq, options=opts).items()
               if k in trainable}
    return {"step": step, "epoch": epoch, "pos": pos, "weights": weights,
            "optimizer": get_optimizer_state_dict(seq, opt, options=opts),
            "scheduler": {"step": step, "lr": args.lr, "warmup_steps": args.warmup_steps},
            "rng": rng_state(), "args": vars(args)}


def restore_training_state(state, seq, opt):
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict
    opts = state_dict_options(full_state_dict=True, strict=False)
    weights = {"model." + k: v for k, v in state["weights"].items()}
    set_model_state_dict(seq, weights, options=opts)
    set_optimizer_state_dict(seq, opt, optim_state_dict=state["optimizer"], options=opts)
    set_rng_state(state["rng"])


def export_final(policy, tokenizer, out, lora):
    """Final model in HF layout in OUT (merged weights with LoRA; the adapter in OUT/adapter).
    Written to a temp folder first, then each file moved in with os.replace."""
    tmp = os.path.join(out, ".final.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if lora:
        modeling.save_adapter(policy, os.path.join(tmp, "adapter"))
    modeling.save(policy, tokenizer, tmp)  # LoRA merged into the weights
    for name in sorted(os.listdir(tmp)):
        src, dst = os.path.join(tmp, name), os.path.join(out, name)
        if os.path.isdir(src) and os.path.isdir(dst):
            old = dst + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(dst, old)
            os.replace(src, dst)
            shutil.rmtree(old)
        else:
            os.replace(src, dst)
    os.rmdir(tmp)


# ----------------------------------------------------------------------------------------------------
# Data: pairs -> tensors


def load_scorer():
    """score.py, imported only when scores must be computed (crpo.py works without it)."""
    return importlib.import_module("score") if importlib.util.find_spec("score") else None


def ensure_scores(pairs, lambdas, args, score_model, tokenizer, rank, world):
    """Creativity scores for every dimension with lambda > 0: from the pairs' own columns
    ('novelty_chosen', 'novelty_rejected', ...) or, for dimensions they lack, from score.py."""
    missing = [k for k in DIMS if lambdas[k] > 0
               and any(f"{k}_chosen" not in p or f"{k}_rejected" not in p for p in pairs)]
    if not missing:
        return
    score = load_scorer()
    if score is None:
        flags = " ".join(f"--lambda-{k} 0" for k in missing)
        raise CrpoError(
            f"{args.data}: lambda > 0 for {', '.join(missing)} but the pairs have no "
            f"{', '.join(k + '_chosen/' + k + '_rejected' for k in missing)} scores, and score.py "
            f"(which computes them) is not available. Either add score.py next to crpo.py, add "
            f"precomputed columns to the data, or train without them: {flags}")
    if not hasattr(score, "score_pairs"):
        raise CrpoError("score.py has no score_pairs(); update score.py, add precomputed score columns "
                        f"to the data, or pass {' '.join(f'--lambda-{k} 0' for k in missing)}")
    keys = [f"{k}_{side}" for k in missing for side in ("chosen", "rejected")]
    error = None
    if rank == 0:
        try:
            reference = score.read_reference(args.score_reference) if args.score_reference else None
            needs_encoder = ({"novelty", "diversity"} & set(missing)
                             or ("surprise" in missing and args.score_surprise == "embedding"))
            encoder = (load_model(args.score_encoder, score_model.embed.weight.device, loader=modeling.load_encoder)
                       if needs_encoder else None)
            print(f"scoring {len(pairs):,} pairs for {', '.join(missing)} with score.py ...")
            score.score_pairs(pairs, missing, model=score_model, tokenizer=tokenizer, encoder=encoder,
                              cache_dir=args.score_cache, novelty=args.score_novelty, surprise=args.score_surprise,
                              quality=" ".join(args.score_quality), reference=reference, source=args.data)
        except (data.DataError, CrpoError, ValueError) as e:  # ValueError: a bad option, e.g. --score-quality
            error = CrpoError(f"score.py: {e}")
    if world > 1:  # rank 0 scored; the others take its numbers (or its error)
        box = [(str(error) if error else None, [{k: p[k] for k in keys} for p in pairs] if rank == 0 and not error
                else None)]
        dist.broadcast_object_list(box, src=0)
        message, scores = box[0]
        if message:
            raise CrpoError(message)
        for p, s in zip(pairs, scores):
            p.update(s)
    elif error:
        raise error


def score_tensors(pairs, lambdas, path):
    """{"chosen": {dim: Tensor[n]}, "rejected": {...}} for the dimensions with lambda > 0."""
    out = {"chosen": {}, "rejected": {}}
    for k in DIMS:
        if lambdas[k] <= 0:
            continue
        for side in ("chosen", "rejected"):
            values = torch.tensor([float(p[f"{k}_{side}"]) for p in pairs], dtype=torch.float32)
            bad = (~torch.isfinite(values)).nonzero()
            if len(bad):
                i = int(bad[0])
                where = f"line {pairs[i]['line']}" if "line" in pairs[i] else f"prompt {pairs[i]['prompt'][:60]!r}"
                raise CrpoError(f"{path}: {where}: {k}_{side} is {values[i].item()} (scores must be finite "
                                f"numbers; fix or drop the row, or pass --lambda-{k} 0)")
            out[side][k] = values
    return out


class Split:
    """One split's pairs, token ids, score tensors and (optionally precomputed) reference log-probs."""

    def __init__(self, pairs, items, scores):
        self.pairs, self.items, self.scores, self.ref = pairs, items, scores, None

    def batch(self, idx, pad_id, device):
        b = {k: v.to(device) for k, v in data.collate([self.items[i] for i in idx], pad_id).items()}
        t = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        b["scores_chosen"] = {k: v[t].to(device) for k, v in self.scores["chosen"].items()}
        b["scores_rejected"] = {k: v[t].to(device) for k, v in self.scores["rejected"].items()}
        b["ref"] = None if self.ref is None else self.ref[t.to(self.ref.device)]
        return b


# ----------------------------------------------------------------------------------------------------
# Training


def train(args):
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrpoError("--device cuda but CUDA is not available (use --device cpu)")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    rank, world = init_distributed(device)
    main_proc = rank == 0
    log = print if main_proc else (lambda *a, **k: None)
    lora = args.lora_rank > 0
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)

    # 1. rows -> pairs -> splits
    if not os.path.isfile(args.data):
        raise CrpoError(f"{args.data}: no such file (pass --data with a JSON Lines file)")
    rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows)
    log(report.summary())
    pairs, pair_stats = data.build_pairs(rows, min_margin=args.min_margin,
                                         max_pairs_per_response=args.max_pairs_per_response or None,
                                         length_balance=args.length_balance, seed=args.seed, source=args.data)
    log(data.pairs_summary(pair_stats))
    train_pairs, val_pairs = data.split_by_prompt(pairs, args.val_frac, args.seed)
    log(data.split_summary(train_pairs, val_pairs))
    # fixed, seeded samples (before scoring, so only what is used gets scored): quick runs on big files
    train_pairs = subsample(train_pairs, args.max_train_pairs, args.seed, "training", "--max-train-pairs", log)
    val_pairs = subsample(val_pairs, args.max_val_pairs, args.seed, "held-out", "--max-val-pairs", log)

    # 2. models: policy, reference
    dtype = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    policy, tokenizer = load_model(args.model, device, dtype)
    ref_model = load_model(args.ref_model, device, dtype)[0] if args.ref_model else None
    if ref_model is not None and ref_model.config.vocab_size != policy.config.vocab_size:
        raise CrpoError(f"--ref-model {args.ref_model}: vocabulary size {ref_model.config.vocab_size} "
                        f"differs from the policy's {policy.config.vocab_size}; use the same tokenizer")

    # 3. creativity scores (precomputed columns, else score.py with the reference LM)
    lambdas = {k: getattr(args, f"lambda_{k}") for k in DIMS}
    ensure_scores(train_pairs + val_pairs, lambdas, args, ref_model or policy, tokenizer, rank, world)
    active = {k: v for k, v in lambdas.items() if v > 0}
    log(f"creativity weight: {args.strategy} of " + (", ".join(f"{v:g} * {k}" for k, v in active.items())
        + f" (on {args.weight_on})" if active else "none (plain DPO, c = 1)"))

    # 4. token ids (tokenize_pairs drops pairs left without a response: item["index"] says which remain)
    splits = {}
    for name, ps in (("train", train_pairs), ("val", val_pairs)):
        items, tok_stats = data.tokenize_pairs(ps, tokenizer, max_len=args.max_len) if ps else ([], None)
        ps = [ps[it["index"]] for it in items]
        splits[name] = Split(ps, items, score_tensors(ps, lambdas, args.data))
        log(f"{name}: {len({p['prompt'] for p in ps}):,} prompts; "
            + (data.tokens_summary(tok_stats) if tok_stats else "no pairs"))
    train_split, val_split = splits["train"], splits["val"]
    if not train_split.pairs:
        raise CrpoError(f"{args.data}: no training pairs after the split (lower --val-frac {args.val_frac})")

    # 5. LoRA / reference / gradient checkpointing / distribution
    if lora:
        targets = tuple(t.strip() for t in args.lora_targets.split(",") if t.strip())
        modeling.add_lora(policy, rank=args.lora_rank, alpha=args.lora_alpha, targets=targets,
                          dropout=args.lora_dropout)
    elif ref_model is None:
        ref_model = copy.deepcopy(policy)
    if ref_model is not None:
        ref_model.requires_grad_(False).eval()
    policy.gradient_checkpointing = args.grad_checkpointing
    policy.train()
    seq = SequenceLogps(policy)
    ref_seq = None if ref_model is None else SequenceLogps(ref_model)
    ddp = fsdp = False
    if world > 1 and lora:
        seq = nn.parallel.DistributedDataParallel(
            seq, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)
        ddp = True
    elif world > 1:
        seq = shard_fsdp(seq, world, device)
        ref_seq = shard_fsdp(ref_seq, world, device)
        fsdp = True
    state_root = seq.module if ddp else seq  # what state dicts are taken from
    eval_seq = seq.module if ddp else seq  # no-grad forwards need no DDP bookkeeping
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and dtype == torch.float32
                else contextlib.nullcontext())
    pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id

    @torch.no_grad()
    def reference_logps(b):
        with autocast:
            if ref_seq is not None:
                return ref_seq(b["input_ids"], b["attention_mask"], b["response_mask"])
            with modeling.lora_disabled(policy):
                return sequence_logps(policy, b["input_ids"], b["attention_mask"], b["response_mask"])[0]

    def lockstep_batches(split, batch_size):
        """Global batches over a whole split; yields (this rank's part, live flag, batch)."""
        n = len(split.pairs)
        for start in range(0, n, batch_size):
            part, live = rank_part(np.arange(start, min(n, start + batch_size)), rank, world)
            yield part, live, split.batch(part, pad_id, device)

    if args.precompute_ref:  # reference log-probs of every pair, once; then the reference is not needed
        for name, split in splits.items():
            table = torch.zeros(len(split.pairs), 2, device=device)
            for part, live, b in tqdm(lockstep_batches(split, args.batch_size), desc=f"reference log-probs ({name})",
                                      total=math.ceil(len(split.pairs) / args.batch_size), disable=not main_proc):
                lp = reference_logps(b).float()
                table[torch.as_tensor(part, device=device)] += live * torch.stack(lp.chunk(2), dim=1)
            split.ref = all_reduce_sum(table, world)
        ref_seq = ref_model = None

    # 6. optimizer, schedule, data order
    params = [p for p in seq.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": args.weight_decay},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.999),
                            fused=world == 1)  # one fused kernel per step (many times faster on CPU); FSDP2's DTensors: foreach
    n_train = len(train_split.pairs)
    step_pairs = args.batch_size * args.grad_accum
    steps_per_epoch = math.ceil(n_train / step_pairs)
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    log(f"model: {sum(p.numel() for p in policy.parameters()):,} parameters, "
        f"{sum(p.numel() for p in params):,} trainable ({'LoRA rank %d' % args.lora_rank if lora else 'full'})"
        f"; {world} process(es) on {device}{' (DDP)' if ddp else ' (FSDP2)' if fsdp else ''}; "
        f"{total_steps} steps of {step_pairs} pairs, peak lr {args.lr:g}")

    # 7. resume
    if main_proc:
        os.makedirs(args.out, exist_ok=True)
    state_path = os.path.join(args.out, STATE_FILE)
    metrics_path = os.path.join(args.out, METRICS_FILE)
    step = epoch = pos = 0
    if not args.resume and os.path.isfile(state_path):
        log(f"note: {state_path} exists; starting over (pass --resume to continue from it)")
    if args.resume:
        if not os.path.isfile(state_path):
            raise CrpoError(f"--resume: {state_path} not found (no saved training state; run without --resume)")
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            restore_training_state(state, state_root, opt)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CrpoError(f"--resume: cannot restore {state_path} ({str(e).splitlines()[0]}); resume with the "
                            "flags of the saved run (model, --lora-rank, --lora-targets), or start over") from None
        step, epoch, pos = state["step"], state["epoch"], state["pos"]
        log(f"resumed from {state_path} at step {step} (epoch {epoch}, batch {pos})")
        if state["args"].get("max_steps") != args.max_steps or state["args"].get("epochs") != args.epochs:
            log("note: the run length differs from the saved run's, so the learning-rate schedule does too")
    if main_proc:  # metrics.jsonl: on resume keep the rows up to the resumed step, else start fresh
        kept = []
        if args.resume and os.path.isfile(metrics_path):
            with open(metrics_path) as f:
                kept = [line for line in f if line.endswith("\n") and json.loads(line)["step"] <= step]
        with open(metrics_path, "w") as f:
            f.writelines(kept)

    def write_metrics(row):
        if main_proc:
            with open(metrics_path, "a") as f:
                f.write(json.dumps(row) + "\n")

    def save_state():
        state = gather_training_state(state_root, opt, lora, step, epoch, pos, args)
        if main_proc:
            save_atomic(state, state_path)
        if world > 1:
            dist.barrier()

    stat_names = ["loss", "mean_c", "rewards_chosen", "rewards_rejected", "reward_accuracy", "reward_margin"]

    def batch_loss(forward, b, live):
        """CrPO loss (mean over this rank's part of the batch) and a row of sums for the metrics:
        [loss, mean_c, rewards_chosen, rewards_rejected, reward_accuracy, reward_margin] * pairs, pairs, tokens."""
        with autocast:
            lp = forward(b["input_ids"], b["attention_mask"], b["response_mask"]).float()
        ref = b["ref"].unbind(1) if b["ref"] is not None else reference_logps(b).float().chunk(2)
        c = creativity_weights(b["scores_chosen"], b["scores_rejected"], lambdas, args.strategy,
                               args.weight_on) if active else None
        loss, stats = crpo_loss(*lp.chunk(2), *ref, beta=args.beta, weights=c, label_smoothing=args.label_smoothing)
        n = live * (len(lp) // 2)
        counts = torch.stack([lp.new_tensor(n), b["attention_mask"].sum() * live])
        return loss, torch.cat([torch.stack([loss.detach(), *(stats[k] for k in stat_names[1:])]) * n, counts]).double()

    @torch.no_grad()
    def evaluate():
        policy.eval()  # no (LoRA) dropout
        sums = sum(batch_loss(eval_seq, b, live)[1] for _, live, b in lockstep_batches(val_split, args.batch_size))
        policy.train()
        sums = all_reduce_sum(sums, world)
        row = {"step": step, "split": "val", "pairs": int(sums[-2])}
        row.update({k: (sums[i] / sums[-2]).item() for i, k in enumerate(stat_names)})
        write_metrics(row)
        log(f"step {step}: val loss {row['loss']:.4f}, reward accuracy {row['reward_accuracy']:.3f}, "
            f"margin {row['reward_margin']:.4f} ({row['pairs']} pairs)")

    # 8. the loop
    bar = tqdm(total=total_steps, initial=step, desc="crpo", disable=not main_proc, dynamic_ncols=True)
    window, window_time = 0, 0.0  # metric sums and seconds since the last logged step
    while step < total_steps:
        order = np.random.default_rng([args.seed, epoch]).permutation(n_train)  # f(seed, epoch) only
        step_idx = order[pos * step_pairs:(pos + 1) * step_pairs]
        if len(step_idx) == 0:
            epoch, pos = epoch + 1, 0
            continue
        lr = learning_rate(step, lr=args.lr, warmup_steps=args.warmup_steps, total_steps=total_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        sums = 0
        micro = [step_idx[i:i + args.batch_size] for i in range(0, len(step_idx), args.batch_size)]
        for m, micro_idx in enumerate(micro):
            part, live = rank_part(micro_idx, rank, world)
            b = train_split.batch(part, pad_id, device)
            with seq.no_sync() if ddp and m < len(micro) - 1 else contextlib.nullcontext():
                loss, micro_sums = batch_loss(seq, b, live)
                # (mean over the part) * |part| = sum over the part; DDP/FSDP average over ranks, hence * world
                (loss * (live * len(part) * world / len(step_idx))).backward()
            sums = sums + micro_sums
        sums = all_reduce_sum(sums, world)
        step_loss = (sums[0] / sums[-2]).item()
        grad_norm = (nn.utils.clip_grad_norm_(params, args.max_grad_norm) if args.max_grad_norm > 0
                     else torch.tensor(0.0))
        grad_norm = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
        if not (math.isfinite(step_loss) and math.isfinite(grad_norm)):
            bar.close()
            what = f"the loss is {step_loss}" if not math.isfinite(step_loss) else f"the gradient norm is {grad_norm}"
            path = os.path.join(args.out, f"nonfinite_step{step + 1}.jsonl")
            if main_proc:
                with open(path, "w") as f:
                    for i in step_idx:
                        p = train_split.pairs[i]
                        row = {k: p[k] for k in ("prompt", "chosen", "rejected", "line") if k in p}
                        f.write(json.dumps(row) + "\n")
            raise CrpoError(f"step {step + 1}: {what} (non-finite); stopped before the update. The batch's "
                            f"{len(step_idx)} pairs are in {path}. Try a lower --lr, a smaller --max-grad-norm, "
                            f"or check those rows and their scores.")
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, pos = step + 1, pos + 1
        if pos * step_pairs >= n_train:
            epoch, pos = epoch + 1, 0
        window += sums
        window_time += time.perf_counter() - t0
        if step % args.log_every == 0 or step == total_steps:
            row = {"step": step, "split": "train", "epoch": round(epoch + pos / steps_per_epoch, 4)}
            row.update({k: (window[i] / window[-2]).item() for i, k in enumerate(stat_names)})
            row.update({"lr": lr, "grad_norm": grad_norm, "tokens_per_s": window[-1].item() / window_time})
            write_metrics(row)
            bar.set_postfix(loss=f"{row['loss']:.4f}", acc=f"{row['reward_accuracy']:.2f}",
                            tok_s=f"{row['tokens_per_s']:.0f}")
            window, window_time = 0, 0.0
        bar.update(1)
        if args.save_every > 0 and step % args.save_every == 0 and step < total_steps:
            save_state()
        if val_split.pairs and args.eval_every > 0 and step % args.eval_every == 0 and step < total_steps:
            evaluate()
    bar.close()

    # 9. the end: state, validation, final model
    save_state()
    if val_split.pairs:
        evaluate()
    if fsdp:  # gather the full weights into an unsharded copy on rank 0
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        full = get_model_state_dict(seq, options=state_dict_options(full_state_dict=True, cpu_offload=True))
        if main_proc:
            with torch.device("meta"):
                final = modeling.Transformer(policy.config)
            final.load_state_dict({k.removeprefix("model."): v for k, v in full.items()}, strict=False, assign=True)
            if policy.config.tie_embeddings:
                final.lm_head.weight = final.embed.weight
            export_final(final, tokenizer, args.out, lora=False)
    elif main_proc:
        export_final(policy, tokenizer, args.out, lora)
    if world > 1:
        dist.barrier()
    log(f"saved the final model to {args.out}" + (f" (adapter in {os.path.join(args.out, 'adapter')})" if lora else ""))
    return 0


def load_model(path, device, dtype=None, loader=None):
    try:
        if loader is not None:
            return loader(path, device=device)
        return modeling.load(path, device=device, dtype=dtype)
    except (ValueError, FileNotFoundError, OSError, KeyError) as e:
        raise CrpoError(f"cannot load model {path or '(embedded default)'}: {e}") from None


def main(argv=None):
    args = parse_args(argv)
    try:
        return train(args)
    except (data.DataError, modeling.ModelError, CrpoError) as e:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
