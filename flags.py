"""crpo.py's command line: every flag, in groups (data and pairs, model and LoRA, objective and weights, scores,
optimisation, hardware and memory, output and resume), and the checks made before anything loads.

    args = parse_args(["--data", "muce.jsonl", "--lora-rank", "16"])

A meaningless value stops with one line (`crpo.py: error: --lora-rank must be >= 0 ...`); --preset NAME
(presets.py) supplies defaults that explicit flags override; --help shows every default.
"""
import argparse
import math

import data
import kernels
import model
import pairs
import presets
import registry
import score


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and that shows every default in --help."""

    def __init__(self, **kw):
        super().__init__(formatter_class=argparse.ArgumentDefaultsHelpFormatter, **kw)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_args(argv=None):
    p = Parser(prog="crpo.py", description="Train a language model with CrPO (creativity-weighted DPO) or SFT on "
               "rated responses or preference pairs.")
    presets.add_flag(p)

    a = p.add_argument_group("data and pairs").add_argument
    a("--data", required=True, help="JSON Lines (.jsonl or .jsonl.gz): rating rows {prompt, response, score} or "
      "preference rows {prompt, chosen, rejected}")
    a("--sft-min-score", type=float, default=None, help="sft: train on rating rows with score >= this (default: all)")
    a("--sft-top-frac", type=float, default=None, help="sft: or on the top fraction of each prompt's responses")
    a("--min-margin", type=float, default=data.PAIR_DEFAULTS["min_margin"],
      help="minimum score difference for a rating pair (the file's own score scale)")
    a("--max-pairs-per-response", type=int, default=data.PAIR_DEFAULTS["max_pairs_per_response"],
      help="cap on the pairs any one response joins (0 = no cap; a prompt with n responses has n(n-1)/2 pairs, "
           "which explodes on real rating files)")
    a("--length-balance", action="store_true", help="as many pairs with the longer chosen as shorter")
    a("--val-frac", type=float, default=data.PAIR_DEFAULTS["val_frac"], help="fraction of prompts held out")
    a("--max-val-pairs", type=int, default=None, help="validate on a seeded sample of at most this many held-out "
      "pairs (0 = all; default: a quarter of the training pairs, between 32 and 256)")
    a("--max-train-pairs", type=int, default=0, help="train on a seeded sample of this many pairs (0 = all)")
    a("--max-len", type=int, default=512, help="tokens per sequence (prompt + response)")
    a("--skip-bad-rows", action="store_true", help="skip (and count) bad rows instead of stopping")
    pairs.add_flags(p.add_argument_group("the authors' pair rules, split column and score population"))

    a = p.add_argument_group("model and LoRA").add_argument
    a("--model", default=None, help="HF folder, .gguf file or adapter folder (default: the embedded "
      "SmolLM2-135M-Instruct)")
    a("--ref-model", default=None, help="reference model (default: the initial policy, frozen; with LoRA: the "
      "policy with LoRA switched off)")
    a("--lora-rank", type=int, default=0, help="> 0: train LoRA adapters of this rank; 0: full fine-tuning")
    a("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 * rank)")
    a("--lora-dropout", type=float, default=0.0)
    a("--lora-targets", default=",".join(model.LORA_TARGETS), help="comma-separated linear layer names")

    a = p.add_argument_group("objective and creativity weights").add_argument
    a("--objective", choices=("crpo", "sft"), default="crpo", help="crpo: creativity-weighted DPO on pairs; sft: "
      "mean NLL of the response tokens of well-rated responses (the paper's first stage)")
    a("--beta", type=float, default=0.1, help="DPO beta")
    a("--label-smoothing", type=float, default=0.0, help="conservative DPO eps in [0, 0.5)")
    for name, dim in registry.DIMENSIONS.items():
        a(f"--lambda-{name}", type=float, default=dim.default_lambda, help=f"weight of {name}: {dim.help}")
    a("--strategy", choices=("add", "mult"), default="add", help="combine dimensions: sum or product")
    a("--weight-on", choices=("chosen", "margin"), default="chosen",
      help="d_k = score of the chosen response (the paper's equation, what the authors trained with) or "
      "max(0, chosen - rejected) (their weight function when rejected scores exist)")

    g = p.add_argument_group("scores the data lacks (computed with score.py's scorers before training)")
    score.add_scorer_flags(g, prefix="score-")
    g.add_argument("--score-reference", default=None, help="reference responses (JSON Lines) for DSI novelty")
    g.add_argument("--score-encoder", default=None, help="sentence encoder folder (default: the embedded "
                   "all-MiniLM-L6-v2)")
    g.add_argument("--score-cache", default=None, help="score cache folder (default: $CRPO_CACHE or .cache/crpo)")

    g = p.add_argument_group("optimisation")
    steps = g.add_mutually_exclusive_group()
    steps.add_argument("--max-steps", type=int, default=None, help="optimizer steps")
    steps.add_argument("--epochs", type=int, default=None, help="passes over the training pairs (default 1)")
    a = g.add_argument
    a("--batch-size", type=int, default=8, help="pairs (sft: sequences) per micro-batch, global over all ranks")
    a("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    a("--lr", type=float, default=None, help="peak learning rate (default 1e-4 with LoRA, 1e-5 without)")
    a("--warmup-steps", type=int, default=10)
    a("--weight-decay", type=float, default=0.0, help="AdamW weight decay (matrices only)")
    a("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0 = off)")
    a("--seed", type=int, default=0)

    a = p.add_argument_group("hardware and memory").add_argument
    a("--device", choices=("auto", "cpu", "cuda"), default="auto")
    a("--dtype", choices=("auto", "float32", "bfloat16"), default="auto", help="weights; auto = float32 on CPU; on "
      "CUDA bf16 autocast, with the frozen base in bf16 and LoRA adapters in float32")
    a("--grad-checkpointing", action="store_true", help="recompute layer activations in backward")
    a("--checkpoint-policy", choices=("full", "save-matmuls"), default="full", help="with --grad-checkpointing: "
      "recompute everything, or keep the big matmul outputs (within --checkpoint-budget-mib per block)")
    a("--checkpoint-budget-mib", type=float, default=None, help="save-matmuls: MiB one block keeps (default: all)")
    a("--kernels", choices=kernels.PATHS, default=None, help=kernels.dispatch.FLAG_HELP)
    a("--precompute-ref", action="store_true", help="compute all reference log-probs once up front")

    a = p.add_argument_group("output and resume").add_argument
    a("--out", default="out", help="output folder: final model, metrics.jsonl, training state")
    a("--eval-every", type=int, default=50, help="validate every N steps (and at the end; 0 = end only)")
    a("--save-every", type=int, default=100, help="save the training state every N steps (and at the end)")
    a("--log-every", type=int, default=1, help="write a metrics row every N steps")
    a("--resume", action="store_true", help="continue from the training state saved in --out")
    a("--final-state", action=argparse.BooleanOptionalAction, default=True, help="write train_state.pt at the end "
      "(weights, optimizer, RNG: what --resume needs to extend the run; --no-final-state keeps less on disk)")

    args = presets.parse(p, argv)  # parse_args with --preset's values as defaults
    problem = check_args(args)
    if problem:
        p.error(problem)
    if args.max_steps is None and args.epochs is None:
        args.epochs = 1
    if args.lr is None:
        args.lr = 1e-4 if args.lora_rank > 0 else 1e-5
    if args.lora_alpha is None:
        args.lora_alpha = 2.0 * args.lora_rank
    return args


def check_args(args):
    """The first meaningless flag value as a one-line message (checked before any file or model is read)."""
    finite = lambda v: v is None or math.isfinite(v)  # noqa: E731
    at_least = lambda lo: (lambda v: v is None or v >= lo)  # noqa: E731
    rules = [(n, at_least(1), ">= 1") for n in ("batch_size", "grad_accum", "log_every", "max_steps", "epochs")]
    rules += [(n, at_least(0), ">= 0 (0 = off / all)") for n in ("warmup_steps", "max_pairs_per_response",
                                                                  "max_val_pairs", "max_train_pairs", "eval_every",
                                                                  "save_every", "lora_rank")]
    rules += [(n, lambda v: v is None or (v >= 0 and finite(v)), "a number >= 0")
              for n in ("weight_decay", "max_grad_norm", "min_margin", "checkpoint_budget_mib")]
    rules += [(n, lambda v: v is None or (v > 0 and finite(v)), "a positive number") for n in ("lr", "beta", "lora_alpha")]
    rules += [("max_len", at_least(2), ">= 2"), ("label_smoothing", lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
              ("lora_dropout", lambda v: 0 <= v < 1, "in [0, 1)"), ("val_frac", lambda v: 0 <= v < 1, "in [0, 1)"),
              ("sft_min_score", finite, "a finite number"), ("sft_top_frac", lambda v: v is None or 0 < v <= 1, "in (0, 1]")]
    rules += [(f"lambda_{k}", lambda v: v >= 0 and finite(v), "a number >= 0") for k in registry.DIMENSIONS]
    for name, ok, what in rules:
        value = getattr(args, name)
        if not ok(value):
            return f"--{name.replace('_', '-')} must be {what}, not {value}"
    if args.lora_rank == 0 and args.lora_alpha is not None:
        return "--lora-alpha needs --lora-rank > 0"
    if args.sft_min_score is not None and args.sft_top_frac is not None:
        return "give --sft-min-score or --sft-top-frac, not both"
    try:
        score.scorer_options(args, prefix="score-")
    except ValueError as e:
        return f"--score-{e}"
    return None
