"""Presets: the authors' released configurations as one flag of crpo.py.

    python crpo.py --data muce.jsonl --preset authors-sft --out runs/sft       # their SFT stage
    python crpo.py --data muce.jsonl --preset authors --model runs/sft          # their CrPO run

Facts from github mismayil/creative-preference-optimization at commit fb53d9e (paths are theirs). A preset sets
crpo.py's defaults; every flag given on the command line overrides it. What a preset set, what the command line
overrode and what of their configuration crpo cannot do are printed when the run starts (and listed in --help).
Their thresholds (min score 20, margin 5, SFT min score 30) are in MuCE's `facsco_grm_scaled` units; on a file
with another scale (data/dt_ratings.jsonl.gz: 1 to 5) pass --min-score / --min-margin / --sft-min-score in it.
"""
import os

DPO = "experiments/configs/dpo/dpo_lora_cre.yaml"
SFT = "experiments/configs/sft/sft_lora.yaml"
PAIRS = "experiments/data/prepare_crpo_data.sh (msd5_mm10_ms20) -> src/crpo/data.py"
TRL = "unset in their config: TRL's default"
LORA_TARGETS = ("q_proj,v_proj", "lora_target_modules unset: peft's default for Llama, Mistral and Gemma-2")
SCALE = "in MuCE's facsco_grm_scaled units; on another scale (data/dt_ratings.jsonl.gz: 1-5) pass your own"
NOT_THEIR_MODELS = ("their scorer models (jinaai/jina-embeddings-v3 embeddings, google/gemma-2-27b-it surprise, "
                    "Skywork-Reward-Gemma-2-27B-v0.2 quality): crpo's embedded all-MiniLM-L6-v2 and SmolLM2-135M-"
                    "Instruct unless you pass --score-encoder DIR / --score-surprise chat PATH / --score-quality rm PATH")
COMMON_CANNOT = [
    "fp16 mixed precision: crpo runs bf16 autocast on CUDA, float32 on CPU",
    "their MuCE subset (English, text-only, full rater agreement): give crpo that file; it trains on what it reads",
]

PRESETS = {
    "authors": {
        "about": f"their DPO/CrPO run ({DPO}; pairs: {PAIRS}; scores: src/crpo/extend_crpo_data.py)",
        "set": {  # argparse dest -> (value, where it comes from)
            "objective": ("crpo", "src/crpo/train_dpo.py"),
            "lora_rank": (128, "lora_r"), "lora_alpha": (256.0, "lora_alpha"), "lora_dropout": (0.05, TRL),
            "lora_targets": LORA_TARGETS,
            "lr": (5e-6, "learning_rate, lr_scheduler_type linear"), "warmup_steps": (0, TRL),
            "epochs": (1, "num_train_epochs"), "batch_size": (8, "per_device_train_batch_size"),
            "grad_accum": (8, "gradient_accumulation_steps"), "max_len": (1024, "max_length"),
            "beta": (0.1, TRL), "label_smoothing": (0.0, "TRL's default loss_type sigmoid"),
            "weight_decay": (0.0, TRL), "max_grad_norm": (1.0, TRL), "grad_checkpointing": (True, "gradient_checkpointing"),
            "eval_every": (32, "eval_steps"), "save_every": (512, "save_steps"),
            "max_val_pairs": (1024, "dataset_test_split val_sample1024"),
            "lambda_novelty": (1.0, "lambda_novelty"), "lambda_diversity": (1.0, "lambda_diversity"),
            "lambda_surprise": (1.0, "lambda_surprise"), "lambda_quality": (0.0, "unset: 0"),
            "lambda_originality": (0.0, "not theirs"), "strategy": ("add", "crpo_strategy default"),
            "weight_on": ("chosen", "their data has only *_chosen scores (no --include-rejected)"),
            "score_population": ("chosen", "src/crpo/extend_crpo_data.py scores the chosen responses of each prompt"),
            "score_surprise": (["chat"], "perplexity of the chat-formatted conversation (metrics.compute_perplexity)"),
            "min_score": (20.0, f"-ms 20, {SCALE}"), "min_margin": (5.0, f"-msd 5, {SCALE}"),
            "max_pairs_per_response": (10, "-mm 10"), "cap_order": ("file", "prepare_preference_data's i < j loop"),
            "split_column": ("Set", "src/crpo/prepare_raw_data.py"),
        },
        "cannot": COMMON_CANNOT + [
            "TRL's max_prompt_length 512 (prompt cut to 512 tokens first): crpo cuts prompt-left, then response-right, "
            "to --max-len only",
            NOT_THEIR_MODELS,
            "DSI words from spaCy tokens: crpo splits words itself (measures.words)",
            "a prompt with one chosen response: novelty and diversity 0 there, 0.5 in crpo (surprise 0.5 in both)",
            "their starting model (their SFT of Llama-3.1-8B-Instruct, Mistral-7B-Instruct-v0.3 or Gemma-2-9b-it): "
            "pass --model (e.g. the output of --preset authors-sft)",
        ],
    },
    "authors-sft": {
        "about": f"their SFT stage ({SFT}; data: experiments/data/prepare_sft_data.sh, responses scored >= 30)",
        "set": {
            "objective": ("sft", "src/crpo/train_sft.py"),
            "lora_rank": (128, "lora_r"), "lora_alpha": (256.0, "lora_alpha"), "lora_dropout": (0.05, TRL),
            "lora_targets": LORA_TARGETS, "lr": (3e-5, "learning_rate"), "epochs": (1, "num_train_epochs"),
            "batch_size": (2, "per_device_train_batch_size"), "grad_accum": (4, "gradient_accumulation_steps"),
            "max_len": (1024, "max_length"), "weight_decay": (0.0, TRL), "max_grad_norm": (1.0, TRL),
            "grad_checkpointing": (True, "gradient_checkpointing"), "eval_every": (32, "eval_steps"),
            "save_every": (512, "save_steps"), "sft_min_score": (30.0, f"sft_ms30, {SCALE}"),
            "split_column": ("Set", "src/crpo/prepare_raw_data.py"),
        },
        "cannot": COMMON_CANNOT + [
            "lr_scheduler_type cosine: crpo's schedule is linear warmup then linear decay",
            "warmup_ratio 0.5: crpo takes --warmup-steps (default 10); pass half of the run's optimizer steps",
            "lora_modules_to_save [lm_head, embed_tokens] (embedding and output layers trained in full): crpo trains "
            "the LoRA adapters only",
            "their starting model allenai/Llama-3.1-Tulu-3-8B-SFT (or an Instruct model): pass --model",
            "note: their src/crpo/train_sft.py returns at the top of main() at fb53d9e; this is the config it names",
        ],
    },
}


def flag(dest):
    return "--" + dest.replace("_", "-")


def shown(value):
    return " ".join(map(str, value)) if isinstance(value, list) else ("" if value is True else f"{value:g}" if
                                                                      isinstance(value, float) else str(value))


def settings(name):
    """One line: the flags preset `name` sets, e.g. '--lora-rank 128 --lora-alpha 256 ...'."""
    return " ".join(f"{flag(d)} {shown(v)}".strip() for d, (v, _) in PRESETS[name]["set"].items())


def add_flag(p):
    """--preset NAME, its help listing what each preset sets."""
    p.add_argument("--preset", choices=tuple(PRESETS), default=None, help="the authors' released configuration "
                   "(flags you give override it): " + "; ".join(f"{n} = {settings(n)}" for n in PRESETS))


def parse(p, argv=None):
    """p.parse_args with the chosen preset as defaults (explicit flags win); prints what the preset did."""
    args = p.parse_args(argv)
    if args.preset is None:
        return args
    preset = PRESETS[args.preset]
    p.set_defaults(**{dest: value for dest, (value, _) in preset["set"].items()})
    args = p.parse_args(argv)
    if os.environ.get("RANK", "0") == "0":
        print(report(args))
    return args


def report(args):
    """What --preset set (value and source), what the command line overrode, and what crpo cannot do."""
    preset = PRESETS[args.preset]
    lines = [f"--preset {args.preset}: {preset['about']}"]
    for dest, (value, source) in preset["set"].items():
        got = getattr(args, dest)
        if dest == "epochs" and args.max_steps is not None:
            lines.append(f"  {flag(dest)} {shown(value)}: not used, --max-steps {args.max_steps} given")
        elif got != value:
            lines.append(f"  {flag(dest)} {shown(got)} (yours; the preset's {shown(value)}: {source})")
        else:
            lines.append(f"  {flag(dest)} {shown(value)}".rstrip() + f"  ({source})")
    lines.append("  not reproduced (crpo cannot):")
    lines += [f"    - {c}" for c in preset["cannot"]]
    return "\n".join(lines)
