"""Tokenizers: the `tokenizers` BPE of a checkpoint plus its chat format (ChatML, Llama-3, Mistral, Gemma).

    tok.encode(text) -> ids;  tok.decode(ids) -> text
    tok.chat(prompt, response=None) -> (ids, response_start)    the prompt's turns, the response after

Data text is text: a control-token string ("<|im_end|>") inside a prompt or response is encoded as its
characters; only the chat template inserts control tokens. A prompt is text (one user turn) or a
conversation.Conversation (its turns, system message included, rendered by the model's format).

Built from an HF folder's tokenizer.json / tokenizer_config.json (hf_tokenizer) or from GGUF metadata
(gguf_tokenizer); the chat format is detected from the chat template (or, failing that, the vocabulary).
tokenize_pairs turns (prompt, chosen, rejected) pairs into chat-formatted token ids, truncated to max_len, and
collate pads them into [2B, T] batches; tokenize_sft and collate_sft do the same for SFT examples (a prompt and the
response to imitate): one sequence each (SftSequence), [B, T] batches.
"""
import functools
import json
import os
import re
from dataclasses import dataclass

import torch
from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tqdm import tqdm

from conversation import Conversation
from model import ModelError


class Tokenizer:
    """tokenizers' BPE plus the chat format of the checkpoint: chatml (SmolLM2, Qwen), llama3, mistral or gemma."""

    def __init__(self, tok, *, chat_format, bos=None, eos=None, pad=None, eot=None, system=None,
                 chat_template=None, name="tokenizer"):
        self.tok, self.chat_format, self.default_system, self.name = tok, chat_format, system, name
        self.chat_template = chat_template
        ids = lambda t: None if t is None else tok.token_to_id(t)  # noqa: E731
        self.bos_token, self.eos_token = bos, eos
        self.bos_id, self.eos_id = ids(bos), ids(eos)
        self.eot_token = eot or eos
        self.eot_id = ids(self.eot_token)
        self.pad_token = pad or eos
        self.pad_id = ids(self.pad_token)
        self.stop_ids = {i for i in (self.eos_id, self.eot_id) if i is not None}
        added = tok.get_added_tokens_decoder().values()
        self.added_tokens = {t.content for t in added}
        self.control_strings = [t.content for t in added if t.special]  # what data text must not turn into

    def encode(self, text):
        """Token ids of data text: every string is characters, a literal control-token string ("<|im_end|>")
        included; only the chat template (chat) inserts control tokens."""
        self.tok.encode_special_tokens = True
        try:
            return self.tok.encode(text, add_special_tokens=False).ids
        finally:
            self.tok.encode_special_tokens = False

    def decode(self, ids):
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def _encode_parts(self, parts):
        """Ids of a rendered chat: parts are template text (str), control tokens (Control) and data text (Data).
        Runs of text between control tokens are encoded as one string, as tokenizers does for a whole template
        string; a run holding data text with a control-token string in it is encoded with control tokens off."""
        ids, run, dirty = [], [], False

        def flush():
            if run:
                text = "".join(run)
                # a run after a control token: encoded behind one so that prefix-space rules see it mid-string
                marker = self.tok.id_to_token(ids[-1]) if ids else None
                if dirty:
                    ids.extend(self.encode(text))
                elif marker in self.added_tokens:
                    ids.extend(self.tok.encode(marker + text, add_special_tokens=False).ids[1:])
                else:
                    ids.extend(self.tok.encode(text, add_special_tokens=False).ids)
            run.clear()

        for part in parts:
            if isinstance(part, Control):
                flush()
                dirty = False
                token_id = self.tok.token_to_id(part)
                if token_id is None:  # a template marker this vocabulary lacks: it is plain text then
                    run.append(str(part))
                    continue
                ids.append(token_id)
            else:
                dirty = dirty or (isinstance(part, Data) and any(t in part for t in self.control_strings))
                run.append(str(part))
        flush()
        return ids

    def render(self, prompt, system=None):
        """The chat template's parts for a prompt (text: one user turn; a Conversation: its turns) up to and
        including the assistant header. The system turn: the conversation's own, else `system`, else the
        template's default; a format without a system role (mistral, gemma) folds it into the first user turn."""
        messages = list(prompt.messages) if isinstance(prompt, Conversation) else [("user", prompt)]
        if messages[0][0] == "system":
            system = messages.pop(0)[1]
        elif system is None:
            system = self.default_system
        C, D, fmt = Control, Data, self.chat_format
        parts, bos = [], [C(self.bos_token)] if self.bos_token else []
        if fmt == "chatml":
            if system:
                parts += [C("<|im_start|>"), "system\n", D(system), C("<|im_end|>"), "\n"]
            for role, content in messages:
                parts += [C("<|im_start|>"), f"{role}\n", D(content), C("<|im_end|>"), "\n"]
            parts += [C("<|im_start|>"), "assistant\n"]
        elif fmt == "llama3":  # the template trims every message
            parts += bos
            for role, content in ([("system", system)] if system else []) + messages:
                parts += [C("<|start_header_id|>"), role, C("<|end_header_id|>"), "\n\n", D(content.strip()),
                          C("<|eot_id|>")]
            parts += [C("<|start_header_id|>"), "assistant", C("<|end_header_id|>"), "\n\n"]
        elif fmt == "mistral":
            parts += bos
            for i, (role, content) in enumerate(messages):
                if role == "user":
                    lead = (system + "\n\n") if system and i == 0 else ""
                    parts += [C("[INST]"), " ", D(lead + content.strip()), " ", C("[/INST]")]
                else:
                    parts += [D(content.strip())] + ([C(self.eos_token)] if self.eos_token else [])
        elif fmt == "gemma":  # Gemma's template: "assistant" is "model", a system message opens the first user turn
            parts += bos
            for i, (role, content) in enumerate(messages):
                lead = (system + "\n\n") if system and i == 0 else ""
                parts += [C("<start_of_turn>"), ("model" if role == "assistant" else "user") + "\n",
                          D(lead + content.strip()), C("<end_of_turn>"), "\n"]
            parts += [C("<start_of_turn>"), "model\n"]
        else:
            raise ModelError(f"unknown chat format {fmt!r}")
        return parts

    def chat(self, prompt, response=None, system=None):
        """(ids, response_start): the prompt (text: a user turn; a Conversation: all its turns) rendered by the
        chat format, then the assistant turn's header; with a response, its tokens and the end-of-turn token.
        response_start indexes the first response token. Prompt and response text is data: control-token strings
        in it are encoded as characters."""
        ids = self._encode_parts(self.render(prompt, system))
        start = len(ids)
        if response is not None:
            ids = ids + self.encode(response) + [self.eot_id]
        return ids, start


class Control(str):
    """A control token the chat template inserts (encoded as its id)."""


class Data(str):
    """Text of the data inside a chat template (control-token strings in it stay characters)."""


def detect_chat_format(template, vocab):
    """Which of the four chat formats the checkpoint uses, from its chat template or, failing that, its vocab."""
    text = template or ""
    if "<start_of_turn>" in text or (not text and "<start_of_turn>" in vocab):
        return "gemma"
    if "<|im_start|>" in text or (not text and "<|im_start|>" in vocab):
        return "chatml"
    if "<|start_header_id|>" in text or (not text and "<|start_header_id|>" in vocab):
        return "llama3"
    if "[INST]" in text or not text:
        return "mistral"
    return "chatml"


def default_system_prompt(template):
    """The system turn a ChatML template inserts when the conversation has none (SmolLM2, Qwen2)."""
    m = re.search(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>", template or "")
    return m.group(1) if m else None


def make_tokenizer(tok, template, specials, name):
    """A Tokenizer from a `tokenizers` object, the checkpoint's chat template (or None) and its special tokens
    {"bos", "eos", "pad"} (token strings or None); the end-of-turn token follows from the chat format."""
    vocab = tok.get_vocab()
    fmt = detect_chat_format(template, vocab)
    eot = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "mistral": specials.get("eos"), "gemma": "<end_of_turn>"}[fmt]
    return Tokenizer(tok, chat_format=fmt, bos=specials.get("bos"), eos=specials.get("eos"), pad=specials.get("pad"),
                     eot=eot if eot in vocab else None, system=default_system_prompt(template) if fmt == "chatml" else None,
                     chat_template=template, name=name)


# Pre-tokenizer splits (regexes of the original tokenizers) for the GGUF `tokenizer.ggml.pre` values we know.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
GGUF_SPLITS = {"llama3": _LLAMA3_SPLIT, "llama-bpe": _LLAMA3_SPLIT, "qwen2": _QWEN2_SPLIT}


def gguf_tokenizer(meta, path):
    """Byte-level BPE from GGUF metadata (tokens, merges, token types, special ids)."""
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ModelError(f"{path}: tokenizer {meta.get('tokenizer.ggml.model')!r} is not supported "
                         "(supported: byte-level BPE, tokenizer.ggml.model = gpt2)")
    tokens = meta["tokenizer.ggml.tokens"]
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = HFTokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    split = GGUF_SPLITS.get(meta.get("tokenizer.ggml.pre"))
    if split:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type", [])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == 3])
    name = lambda key: tokens[meta[key]] if key in meta else None  # noqa: E731
    specials = {"bos": name("tokenizer.ggml.bos_token_id"), "eos": name("tokenizer.ggml.eos_token_id"),
                "pad": name("tokenizer.ggml.padding_token_id")}
    return make_tokenizer(tok, meta.get("tokenizer.chat_template"), specials, os.path.basename(path))


def hf_tokenizer(path, config):
    """The tokenizer of an HF folder: tokenizer.json, special tokens from tokenizer_config.json (else the
    eos id of config.json, the parsed config), the chat template from tokenizer_config.json or chat_template.jinja."""
    tok_path = os.path.join(path, "tokenizer.json")
    if not os.path.exists(tok_path):
        raise ModelError(f"{path}: no tokenizer.json")
    tok = HFTokenizer.from_file(tok_path)
    tok_cfg = {}
    if os.path.exists(os.path.join(path, "tokenizer_config.json")):
        with open(os.path.join(path, "tokenizer_config.json")) as f:
            tok_cfg = json.load(f)
    template = tok_cfg.get("chat_template")
    if template is None and os.path.exists(os.path.join(path, "chat_template.jinja")):
        with open(os.path.join(path, "chat_template.jinja")) as f:
            template = f.read()
    token = lambda v: v.get("content") if isinstance(v, dict) else v  # noqa: E731
    eos = token(tok_cfg.get("eos_token"))
    if eos is None and config.get("eos_token_id") is not None:
        eos_id = config["eos_token_id"]
        eos = tok.id_to_token(eos_id[0] if isinstance(eos_id, list) else eos_id)
    specials = {"bos": token(tok_cfg.get("bos_token")), "eos": eos, "pad": token(tok_cfg.get("pad_token"))}
    return make_tokenizer(tok, template, specials, os.path.basename(os.path.normpath(path)))


# ----------------------------------------------------------------------------- pairs -> token ids

def common_prefix_len(seqs):
    """Length of the longest prefix all the sequences share (0 when they differ at the first token)."""
    n, shortest = 0, min(len(s) for s in seqs)
    while n < shortest and all(s[n] == seqs[0][n] for s in seqs):
        n += 1
    return n


def _truncate(prompt_ids, keep_head, keep_tail, responses, max_len):
    """Fit prompt + each response into max_len: first drop prompt-text tokens from the left (the chat
    template's first keep_head and last keep_tail tokens, e.g. the assistant header, stay), then cut each
    response on the right. The prompt is cut once for all responses so they share the same context."""
    over = len(prompt_ids) + max(len(r) for r in responses) - max_len
    cut = max(0, min(over, len(prompt_ids) - keep_head - keep_tail))  # 0 when everything fits
    prompt_ids = prompt_ids[:keep_head] + prompt_ids[keep_head + cut:]
    room = max(0, max_len - len(prompt_ids))
    return prompt_ids, [r[:room] for r in responses], cut > 0


def _template_prompt(tokenizer):
    """The chat template's ids around an empty prompt (up to the assistant header): where the prompt text sits
    inside the template is what a prompt's ids share with these."""
    try:
        empty_ids, empty_start = tokenizer.chat("")
        return list(empty_ids[:empty_start])
    except Exception:  # a template that refuses empty prompts: fall back to cutting from the very left
        return []


def _fit(prompt_ids, responses, empty_prompt, max_len, stats):
    """_truncate with the template's head and tail found from empty_prompt (_template_prompt); counts the cuts in
    stats -> (prompt_ids, responses)."""
    head = common_prefix_len([prompt_ids, empty_prompt])
    tail = common_prefix_len([prompt_ids[head:][::-1], empty_prompt[head:][::-1]])
    new_prompt, new_responses, prompt_cut = _truncate(prompt_ids, head, tail, responses, max_len)
    stats["truncated_prompt"] += prompt_cut
    for old, new in zip(responses, new_responses):
        stats["truncated_response"] += len(new) < len(old)
    return new_prompt, new_responses


def tokenize_pairs(pairs, tokenizer, max_len=512, keep_identical=False):
    """Tokenize pairs through tokenizer.chat(prompt, response) -> (items, stats).

    Each item: {"chosen_ids", "chosen_start", "rejected_ids", "rejected_start", "index"} where ids is the
    chat-template prompt + response + end-of-turn, start the index of the first response token, and index
    the pair's position in `pairs`. Sequences longer than max_len are truncated from the prompt text's left
    (template head and assistant header kept; the same cut for both sides), then the response's right.
    A pair whose chosen or rejected response is left empty is dropped, and so is one whose chosen and
    rejected token ids are identical (after truncation, or rendering): it holds no preference, yet would
    take a share of a step. keep_identical=True keeps those. stats counts all of it. (SFT examples: tokenize_sft.)
    """
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    empty_prompt = _template_prompt(tokenizer)

    @functools.cache  # a response paired several times is tokenized once
    def chat(prompt, response):
        ids, start = tokenizer.chat(prompt, response)
        return list(ids[:start]), list(ids[start:])

    stats = {"pairs": len(pairs), "items": 0, "truncated_prompt": 0, "truncated_response": 0,
             "dropped_empty_response": 0, "dropped_identical": 0, "tokens": 0, "response_tokens": 0, "longest": 0, "max_len": max_len}
    items = []
    for index, p in enumerate(tqdm(pairs, desc="tokenizing", unit="pair", disable=len(pairs) < 2000, leave=False)):
        prompt_c, resp_c = chat(p["prompt"], p["chosen"])
        prompt_r, resp_r = chat(p["prompt"], p["rejected"])
        # one shared prompt: always, for a tokenizer whose chat() renders the prompt independently
        groups = [(prompt_c, [resp_c, resp_r])] if prompt_c == prompt_r else [(prompt_c, [resp_c]), (prompt_r, [resp_r])]
        out = []
        for prompt_ids, responses in groups:
            new_prompt, new_responses = _fit(prompt_ids, responses, empty_prompt, max_len, stats)
            out.extend((new_prompt, new) for new in new_responses)
        if any(len(r) == 0 for _, r in out):
            stats["dropped_empty_response"] += 1
            continue
        (pc, rc), (pr, rr) = out
        if pc + rc == pr + rr and not keep_identical:
            stats["dropped_identical"] += 1
            continue
        item = {"chosen_ids": pc + rc, "chosen_start": len(pc), "rejected_ids": pr + rr, "rejected_start": len(pr),
                "index": index}
        items.append(item)
        stats["tokens"] += len(item["chosen_ids"]) + len(item["rejected_ids"])
        stats["response_tokens"] += len(rc) + len(rr)
        stats["longest"] = max(stats["longest"], len(item["chosen_ids"]), len(item["rejected_ids"]))
    stats["items"] = len(items)
    return items, stats


def tokens_summary(stats):
    return (f"{stats['items']:,} of {stats['pairs']:,} pairs tokenized: {stats['tokens']:,} tokens "
            f"({stats['response_tokens']:,} response tokens), longest sequence {stats['longest']:,} "
            f"(max_len {stats['max_len']:,}); truncated: {stats['truncated_prompt']:,} prompts, "
            f"{stats['truncated_response']:,} responses; {stats['dropped_empty_response']:,} pairs dropped "
            f"(response empty after truncation), {stats['dropped_identical']:,} dropped (chosen and rejected "
            f"token-identical after truncation)")


@dataclass(frozen=True)
class SftSequence:
    """One tokenized SFT example: ids = the chat-formatted prompt + response + end-of-turn (tokenizer.chat),
    the loss on ids[response_start:] (the response mask), index = the example's position in the list tokenized."""
    ids: list
    response_start: int
    index: int

    @property
    def response_tokens(self):
        return len(self.ids) - self.response_start


def tokenize_sft(examples, tokenizer, max_len=512):
    """Tokenize SFT examples {"prompt", "chosen": the response to imitate} -> (list of SftSequence, stats).

    The same chat rendering and truncation as tokenize_pairs' chosen side (prompt text cut from the left with
    the template head and assistant header kept, then the response from the right); an example whose response
    is left empty is dropped. stats counts it all (sft_tokens_summary)."""
    if max_len < 2:
        raise ValueError(f"max_len must be >= 2, got {max_len}")
    empty_prompt = _template_prompt(tokenizer)
    stats = {"examples": len(examples), "items": 0, "truncated_prompt": 0, "truncated_response": 0,
             "dropped_empty_response": 0, "tokens": 0, "response_tokens": 0, "longest": 0, "max_len": max_len}
    items = []
    for index, e in enumerate(tqdm(examples, desc="tokenizing", unit="example", disable=len(examples) < 2000,
                                   leave=False)):
        ids, start = tokenizer.chat(e["prompt"], e["chosen"])
        prompt_ids, (response_ids,) = _fit(list(ids[:start]), [list(ids[start:])], empty_prompt, max_len, stats)
        if not response_ids:
            stats["dropped_empty_response"] += 1
            continue
        items.append(SftSequence(prompt_ids + response_ids, len(prompt_ids), index))
        stats["tokens"] += len(items[-1].ids)
        stats["response_tokens"] += len(response_ids)
        stats["longest"] = max(stats["longest"], len(items[-1].ids))
    stats["items"] = len(items)
    return items, stats


def sft_tokens_summary(stats):
    return (f"{stats['items']:,} of {stats['examples']:,} SFT examples tokenized: {stats['tokens']:,} tokens "
            f"({stats['response_tokens']:,} response tokens), longest sequence {stats['longest']:,} "
            f"(max_len {stats['max_len']:,}); truncated: {stats['truncated_prompt']:,} prompts, "
            f"{stats['truncated_response']:,} responses; {stats['dropped_empty_response']:,} dropped (response empty "
            f"after truncation)")


# ----------------------------------------------------------------------------------------------------
# token ids -> padded batches

def pad_batch(seqs, pad_id, response_starts=None):
    """Right-padded (input_ids, attention_mask, response_mask), each [B, T] torch.long, T = the longest.

    input_ids holds pad_id after each sequence's end, attention_mask 1 on its real tokens, response_mask
    1 from response_starts[i] to the end of sequence i (all 0 when response_starts is None)."""
    T = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), T), int(pad_id), dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), T), dtype=torch.long)
    response_mask = torch.zeros((len(seqs), T), dtype=torch.long)
    for i, s in enumerate(seqs):
        input_ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        attention_mask[i, :len(s)] = 1
        if response_starts is not None:
            response_mask[i, response_starts[i]:len(s)] = 1
    return input_ids, attention_mask, response_mask


def collate(items, pad_id):
    """pad_batch of 2B sequences (tokenize_pairs' items), rows 0..B-1 the chosen, rows B..2B-1 the rejected ->
    {"input_ids", "attention_mask", "response_mask"} [2B, T]; response_mask is 1 exactly on the response tokens
    (end-of-turn included)."""
    if not items:
        raise ValueError("collate needs at least one item")
    seqs = [it["chosen_ids"] for it in items] + [it["rejected_ids"] for it in items]
    starts = [it["chosen_start"] for it in items] + [it["rejected_start"] for it in items]
    input_ids, attention_mask, response_mask = pad_batch(seqs, pad_id, starts)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}


def collate_sft(items, pad_id):
    """pad_batch of B SftSequence (tokenize_sft), one row each -> {"input_ids", "attention_mask",
    "response_mask"} [B, T]; response_mask is 1 exactly on the response tokens (end-of-turn included)."""
    if not items:
        raise ValueError("collate_sft needs at least one item")
    input_ids, attention_mask, response_mask = pad_batch([it.ids for it in items], pad_id,
                                                         [it.response_start for it in items])
    return {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
