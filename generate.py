"""Running a trained model forward: sampling with a KV cache, and the shared-prefix pass the scorers use.

    generate(model, tokenizer, prompts, n=4, temperature=1.0, top_p=0.95, seed=0)  # [[n texts] per prompt]
    shared_prefix_hidden(model, seqs, batch_size)   # one prompt's chat prefix run once, its KV cache reused

As a command (an HF folder, a .gguf file, a LoRA adapter folder, or the embedded default):

    python generate.py --model out "Suggest one unusual, creative use for a brick." --n 3 --temperature 0.8
"""
import argparse
import math
import sys
import time

import torch

from data import pad_batch
from tokenizer import common_prefix_len
from model import ModelError


def new_kv_cache(model, batch, length):
    """An empty KV cache for model.hidden: per layer, k and v buffers [batch, n_kv_heads, length, head_dim] in the
    weights' dtype and device; "start" = how many positions already hold keys and values. Sliding-window layers
    (Gemma-2) keep every position too: their mask (model.attention_masks) hides the keys past the window."""
    c, weight = model.config, model.embed.weight
    shape = (batch, c.n_kv_heads, length, c.head_dim)
    return {name: [torch.empty(shape, dtype=weight.dtype, device=weight.device) for _ in range(c.n_layers)]
            for name in ("k", "v")} | {"start": 0}


@torch.no_grad()
def generate(model, tokenizer, prompts, *, n=1, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=None):
    """n samples per prompt: batched, left-padded, with a KV cache; stops at end-of-turn/EOS; temperature 0 is greedy."""
    device = model.embed.weight.device
    seqs = [tokenizer.chat(p)[0] for p in prompts for _ in range(n)]
    B, T = len(seqs), max(len(s) for s in seqs)
    input_ids = torch.full((B, T), tokenizer.pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(B, T + max_new_tokens, dtype=torch.long, device=device)
    for i, s in enumerate(seqs):
        input_ids[i, T - len(s):] = torch.tensor(s, device=device)
        mask[i, T - len(s):T] = 1
    cache = new_kv_cache(model, B, T + max_new_tokens)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else torch.seed())
    out = torch.empty(B, 0, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    step_ids = input_ids
    for step in range(max_new_tokens):
        logits = model.logits(model.hidden(step_ids, mask[:, :T + step], cache)[:, -1])  # last position only
        cache["start"] = T + step
        next_ids = sample(logits, temperature, top_p, gen)
        next_ids = next_ids.masked_fill(done, tokenizer.pad_id)
        out = torch.cat([out, next_ids[:, None]], dim=1)
        mask[:, T + step] = 1
        done = done | torch.isin(next_ids, torch.tensor(sorted(tokenizer.stop_ids), device=device))
        if bool(done.all()):
            break
        step_ids = next_ids[:, None]
    texts = []
    for row in out.tolist():
        stop = next((i for i, t in enumerate(row) if t in tokenizer.stop_ids), len(row))
        texts.append(tokenizer.decode(row[:stop]).strip())
    return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]


def sample(logits, temperature, top_p, gen):
    """Greedy at temperature 0; else sample from softmax(z / T) restricted to the smallest set with mass >= top_p."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep tokens until the mass before them reaches top_p
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs.masked_fill(drop, 0.0))
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


@torch.inference_mode()  # on a generator: applied each time it resumes
def shared_prefix_hidden(model, seqs, batch_size, stats=None):
    """Final hidden states of sequences that share a prefix (the chat-formatted prompt of one group):
    the P prefix tokens run once and their keys/values (model.hidden's KV cache) serve every sequence,
    which then runs only its own suffix, batch_size at a time, right-padded. Exact: the same causal
    attention as one pass over the whole sequence.
    Yields (indices, hidden [b, P + S, D] right-padded full sequences, lengths [b])."""
    c, device = model.config, model.embed.weight.device
    P = max(0, min(common_prefix_len(seqs), min(len(s) for s in seqs) - 1))  # each sequence keeps >= 1 token to run
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    was_training = model.training
    model.eval()
    try:
        prefix_cache = new_kv_cache(model, 1, P)
        prefix_hidden = (model.hidden(torch.tensor([seqs[0][:P]], device=device), None, prefix_cache) if P
                         else torch.zeros(1, 0, c.dim, dtype=model.embed.weight.dtype, device=device))
        if stats is not None:
            stats["lm_tokens"] += P
            stats["attention_pairs"] += P * (P + 1) // 2
        for b0 in range(0, len(order), batch_size):
            idx = order[b0:b0 + batch_size]
            suffixes = [seqs[i][P:] for i in idx]
            ids, mask, _ = pad_batch(suffixes, 0)
            b, S = ids.shape
            cache = new_kv_cache(model, b, P + S)
            for name in ("k", "v"):
                for buf, prefix in zip(cache[name], prefix_cache[name]):
                    buf[:, :, :P] = prefix
            cache["start"] = P
            full_mask = torch.cat([torch.ones(b, P, dtype=torch.long), mask], dim=1).to(device)
            hidden = model.hidden(ids.to(device), full_mask, cache)
            hidden = torch.cat([prefix_hidden.expand(b, -1, -1), hidden], dim=1)
            lengths = torch.tensor([len(seqs[i]) for i in idx], device=device)
            if stats is not None:
                stats["lm_tokens"] += sum(len(s) for s in suffixes)
                stats["attention_pairs"] += sum(sum(range(P + 1, len(seqs[i]) + 1)) for i in idx)
            yield idx, hidden, lengths
    finally:
        model.train(was_training)


# ----------------------------------------------------------------------------- CLI

def main(argv=None):
    import checkpoint  # the command loads checkpoints; the functions above need only a model

    ap = argparse.ArgumentParser(description="Sample from a model: the chat-formatted prompts, n samples each.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("prompts", nargs="*", help="user prompts",
                    default=["What is the capital of France?", "Suggest one unusual, creative use for a brick."])
    ap.add_argument("--model", default=None, help="HF folder (e.g. crpo.py's out/), .gguf file or LoRA adapter folder "
                                                  "(out/adapter); None: the embedded SmolLM2-135M-Instruct")
    ap.add_argument("--n", type=int, default=1, help="samples per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="most tokens generated per sample")
    ap.add_argument("--temperature", type=float, default=0.0, help="softmax temperature; 0 = greedy")
    ap.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: smallest token set with this mass")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, or auto (cuda when available)")
    args = ap.parse_args(argv)
    checks = {"--n must be >= 1": args.n >= 1, "--max-new-tokens must be >= 1": args.max_new_tokens >= 1,
              "--temperature must be a number >= 0": math.isfinite(args.temperature) and args.temperature >= 0,
              "--top-p must be in (0, 1]": 0 < args.top_p <= 1}
    for message in (m for m, ok in checks.items() if not ok):
        ap.error(message)  # exits at the first
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except RuntimeError:
        ap.error(f"--device {args.device!r} is not a device (cpu, cuda, cuda:N or auto)")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU is visible here (use --device cpu)")
    t0 = time.time()
    try:
        model, tokenizer = checkpoint.load(args.model, device=device)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"loaded {args.model or 'the embedded default'} in {time.time() - t0:.1f} s")
    outputs = generate(model, tokenizer, args.prompts, n=args.n, max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    for prompt, texts in zip(args.prompts, outputs):
        print(f"\n> {prompt}")
        for text in texts:
            print(f"  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
