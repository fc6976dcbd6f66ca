"""What a language model says about texts: the per-response numbers behind the LM scorers of score.py.

    perplexity(x, r)             = exp(-(1/|r|) sum_{t in r} log p(r_t | x, r_<t))   (response tokens only)
    conversation_perplexity(x, r) = exp of the mean NLL of every token of [BOS] + chat(x, r) after the first
    judge(x, r)                  = p(Yes) / (p(Yes) + p(No)) after a fixed question about r
    reward(x, r)                 = h_last . w_score of a sequence-classification reward model

Per prompt, the shared chat prefix runs once (KV cache: generate.shared_prefix_hidden), then the responses in
right-padded batches. Each function yields (indices, values) batch by batch; score.py caches and normalises.
"""
import torch

import checkpoint
import data
from generate import shared_prefix_hidden
from model import response_logps, softcap

JUDGE_QUESTION = (  # the prompt and response come last, so every response of a prompt shares the prefix
    "Is the answer below a sensible, well-formed answer to the prompt? Reply with Yes or No.\n\n"
    "Prompt: {prompt}\n"
    "Answer: {response}"
)


def perplexity(model, tokenizer, prompt, responses, batch_size=16, stats=None):
    """ppl(r | x) = exp(-(1/|r|) sum_{t in r} log p(r_t | x, r_<t)), the response tokens being those of
    tokenizer.chat(x, r) from response_start on (the end-of-turn token included); log p from
    model.response_logps on the hidden states of shared_prefix_hidden. Responses of one prompt x.
    Yields (indices, perplexities)."""
    chats = [tokenizer.chat(prompt, r) for r in responses]
    seqs = [ids for ids, _ in chats]
    for idx, hidden, _ in shared_prefix_hidden(model, seqs, batch_size, stats):
        ids, _, resp = data.pad_batch([seqs[i] for i in idx], tokenizer.pad_id, [chats[i][1] for i in idx])
        ids, resp = ids.to(hidden.device), resp.to(hidden.device)
        with torch.inference_mode():
            logps, n_tokens = response_logps(hidden, model.lm_head.weight, ids, resp, model.config.final_softcap)
        if stats is not None:
            stats["lm_head_tokens"] += int(n_tokens.sum())
        yield idx, torch.exp(-logps.double() / n_tokens.clamp(min=1).double()).cpu().numpy()


def last_token_scores(model, seqs, weight, batch_size=16, stats=None):
    """z = h_last W^T: each sequence's final hidden state at its last token times the rows of weight
    [k, D] (two vocabulary rows for the judge, the score head of a reward model). Yields (indices, z [b, k])."""
    for idx, hidden, lengths in shared_prefix_hidden(model, seqs, batch_size, stats):
        with torch.inference_mode():
            last = hidden[torch.arange(len(idx), device=hidden.device), lengths - 1]
            z = (last.double() @ weight.to(last.device).double().t()).cpu()
        yield idx, z


def judge_prompt(prompt, response):
    return JUDGE_QUESTION.format(prompt=prompt, response=response)


def judge(model, tokenizer, prompt, responses, batch_size=16, stats=None):
    """quality = p(Yes) / (p(Yes) + p(No)) = softmax(z_Yes, z_No)_0, z = the next-token logits after the
    assistant header of the judge question (first token of "Yes" and of "No"). Yields (indices, p)."""
    yes, no = tokenizer.encode("Yes")[0], tokenizer.encode("No")[0]
    seqs = [tokenizer.chat(judge_prompt(prompt, r))[0] for r in responses]
    for idx, z in last_token_scores(model, seqs, model.lm_head.weight[[yes, no]], batch_size, stats):
        yield idx, torch.softmax(softcap(z, model.config.final_softcap), dim=-1)[:, 0].numpy()  # Gemma-2's cap


def load_reward_model(path, device="cpu"):
    """A sequence-classification reward model (Llama, Gemma-2, Qwen2/3, Mistral: checkpoint.REWARD_HEADS): the
    backbone and `score.weight` [labels, D] via checkpoint.load_reward_model. -> (model, tokenizer, score_weight)."""
    return checkpoint.load_reward_model(path, device=device)


def reward(rm, tokenizer, score_weight, prompt, responses, batch_size=16, stats=None):
    """quality = h_last . w_score, h_last = the final hidden state at the last token (end of turn) of
    tokenizer.chat(x, r). Yields (indices, rewards)."""
    seqs = [tokenizer.chat(prompt, r)[0] for r in responses]
    for idx, z in last_token_scores(rm, seqs, score_weight[:1], batch_size, stats):
        yield idx, z[:, 0].numpy()


def conversation_ids(tokenizer, prompt, response):
    """The token ids the authors' surprise reads: [BOS] + the chat-formatted [user, assistant] conversation, template
    tokens included (src/crpo/metrics.py compute_perplexity: apply_chat_template, then a BOS prepended). ChatML
    templates end every turn with "<|im_end|>\n"; tokenizer.chat stops at the end-of-turn token, so the newline is
    added here. A tokenizer without a BOS token gets none."""
    ids = tokenizer.chat(prompt, response)[0]
    if getattr(tokenizer, "chat_format", None) == "chatml":
        ids = ids + tokenizer.encode("\n")
    bos = getattr(tokenizer, "bos_id", None)
    return ([bos] if bos is not None else []) + ids


def conversation_perplexity(model, tokenizer, prompt, responses, batch_size=16, stats=None):
    """ppl(c) = exp(-(1/(|c| - 1)) sum_{t=1}^{|c|-1} log p(c_t | c_<t)), c = conversation_ids(x, r): every token
    after the first counts, prompt and template included (the authors' surprise). Yields (indices, perplexities)."""
    seqs = [conversation_ids(tokenizer, prompt, r) for r in responses]
    for idx, hidden, _ in shared_prefix_hidden(model, seqs, batch_size, stats):
        ids, _, counted = data.pad_batch([seqs[i] for i in idx], tokenizer.pad_id, [1] * len(idx))
        ids, counted = ids.to(hidden.device), counted.to(hidden.device)
        with torch.inference_mode():
            logps, n_tokens = response_logps(hidden, model.lm_head.weight, ids, counted, model.config.final_softcap)
        yield idx, torch.exp(-logps.double() / n_tokens.clamp(min=1).double()).cpu().numpy()
