"""Creativity scores for CrPO: novelty, diversity, surprise, quality (SPEC section 4).

Every score is computed per prompt group G (the unique responses to one prompt) and then min-max
normalised inside the group to [0, 1]. e(t) is the encoder's unit-norm sentence embedding and
d(u, v) = 1 - cos(u, v).

    diversity(r) = mean_{r' in G, r' != r} d(e(r), e(r'))                 ("inverse homogenisation")
    novelty(r)   = 2 |DSI(r) - DSI(C)|                                     (--novelty dsi, default)
                   DSI(t) = mean_{i<j} d(e(w_i), e(w_j)) over the unique lower-cased words w of t
                   C = the group's responses concatenated (or an external reference set)
                 = d(e(r), mean_{r' != r} e(r'))                           (--novelty centroid)
    surprise(r)  = exp(-(1/|r|) sum_t log p(r_t | prompt, r_<t)) under the reference LM   (--surprise lm)
                 = d(e(prompt), e(r))                                      (--surprise embedding)
    quality(r)   = p(Yes) / (p(Yes) + p(No)) of an instruct LM asked whether r is a sensible answer
                                                                           (--quality judge, default)
                 = reward model score head on the last token               (--quality rm PATH)
                 = a numeric field of the data                             (--quality field NAME)

Expensive values (sentence/word embeddings, perplexities, judge and reward scores) are cached on disk
per (scorer, model, text) in a sqlite file, so a second run recomputes nothing.

    python score.py --data ratings.jsonl --out scored.jsonl
"""
import argparse
import glob
import hashlib
import json
import math
import os
import re
import sqlite3
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from tqdm import tqdm

import checkpoint
import data
import encoder as sentence_encoder
import files
from generate import shared_prefix_hidden
from model import ModelError, response_logps

DIMS = ("novelty", "diversity", "surprise", "quality")
JUDGE_QUESTION = (  # the prompt and response come last, so every response of a prompt shares the prefix
    "Is the answer below a sensible, well-formed answer to the prompt? Reply with Yes or No.\n\n"
    "Prompt: {prompt}\n"
    "Answer: {response}"
)

# --------------------------------------------------------------------------------------------------
# On-disk cache


def default_cache_dir():
    return os.environ.get("CRPO_CACHE") or os.path.join(".cache", "crpo")


class Cache:
    """sqlite store: key = sha1(namespace, text) -> a float vector (a scalar score is a vector of length 1).

    namespace = "<scorer>|<model name>|<weights hash>[|<chat-format hash>]", e.g. "surprise-lm|SmolLM2...|1a2b...|3c4d...".
    """

    def __init__(self, cache_dir=None):
        self.dir = cache_dir or default_cache_dir()
        os.makedirs(self.dir, exist_ok=True)
        self.path = os.path.join(self.dir, "scores.sqlite")
        self.db = sqlite3.connect(self.path, timeout=60)
        self.db.execute("CREATE TABLE IF NOT EXISTS cache (key TEXT PRIMARY KEY, value BLOB)")
        self.db.commit()

    @staticmethod
    def key(namespace, text):
        return hashlib.sha1(f"{namespace}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, namespace, texts, dtype):
        """-> {text: np.ndarray} for the texts found."""
        keys = {self.key(namespace, t): t for t in texts}
        found, key_list = {}, list(keys)
        for i in range(0, len(key_list), 500):
            chunk = key_list[i:i + 500]
            sql = f"SELECT key, value FROM cache WHERE key IN ({','.join('?' * len(chunk))})"
            for k, v in self.db.execute(sql, chunk):
                found[keys[k]] = np.frombuffer(v, dtype=dtype)
        return found

    def put(self, namespace, items, dtype):
        rows = [(self.key(namespace, t), np.asarray(v, dtype=dtype).tobytes()) for t, v in items]
        self.db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?)", rows)
        self.db.commit()


def cached_compute(cache, namespace, keys, compute, *, dtype, desc, show_progress, stats):
    """Values for the unique keys: read what the cache holds, compute the rest. compute(missing) yields
    (keys, values) batch by batch; each batch is stored as soon as it is done. -> {key: np.ndarray}."""
    unique = list(dict.fromkeys(keys))
    found = cache.get(namespace, unique, dtype)
    missing = [k for k in unique if k not in found]
    stats["cached"][desc] = stats["cached"].get(desc, 0) + len(found)
    stats["computed"][desc] = stats["computed"].get(desc, 0) + len(missing)
    t0 = time.perf_counter()
    with tqdm(total=len(missing), desc=desc, unit="text", disable=not show_progress or not missing) as bar:
        if missing:
            for chunk, values in compute(missing):
                values = [np.asarray(v, dtype=dtype).reshape(-1) for v in values]
                cache.put(namespace, zip(chunk, values), dtype)
                found.update(zip(chunk, values))
                bar.update(len(chunk))
    stats["seconds"][desc] = stats["seconds"].get(desc, 0.0) + time.perf_counter() - t0
    return found


def model_fingerprint(model):
    """A short hash of the weights, so that two checkpoints sharing a tokenizer name never share cache rows."""
    h = hashlib.sha1()
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = p.detach().float()
            h.update(f"{name}{tuple(p.shape)}{x.sum().item():.6e}{x.abs().sum().item():.6e}".encode())
    return h.hexdigest()[:12]


def chat_fingerprint(tokenizer):
    """A short hash of how the tokenizer turns a conversation into ids (chat template, default system
    turn, vocabulary): the LM's scores depend on it, so it is part of their cache key."""
    ids, start = tokenizer.chat("A prompt?", "A response.")
    return hashlib.sha1(f"{ids}|{start}".encode()).hexdigest()[:8]


# --------------------------------------------------------------------------------------------------
# Embedding scorers (diversity, novelty, surprise embedding): O(n d) per group via sums of unit vectors


def unit_rows(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-300)


def diversity(E):
    """diversity_i = mean_{j != i} (1 - cos(e_i, e_j)) = 1 - (e_i . S - 1) / (n - 1), S = sum_j e_j,
    e unit vectors [n, d]. One response: 0 (normalised to 0.5)."""
    E = unit_rows(E)
    n = len(E)
    if n < 2:
        return np.zeros(n)
    return 1.0 - (E @ E.sum(0) - 1.0) / (n - 1)


def centroid_novelty(E):
    """novelty_i = 1 - cos(e_i, m_i), m_i = mean_{j != i} e_j = (S - e_i) / (n - 1). One response: 0."""
    E = unit_rows(E)
    n = len(E)
    if n < 2:
        return np.zeros(n)
    M = (E.sum(0) - E) / (n - 1)
    norms = np.linalg.norm(M, axis=1)
    cos = np.where(norms > 0, (E * M).sum(1) / np.maximum(norms, 1e-300), 0.0)
    return 1.0 - cos


def words(text):
    """The unique lower-cased words of a text, punctuation stripped ("Don't!" -> "dont"), in order."""
    text = re.sub(r"['\u2019`]", "", text.lower())
    return list(dict.fromkeys(re.findall(r"[^\W_]+", text)))


def dsi(W):
    """DSI = mean_{i<j} (1 - cos(w_i, w_j)) over k word vectors = 1 - (|sum_i w_i|^2 - k) / (k (k - 1))
    for unit w_i; 0 when k < 2 (no pair)."""
    W = unit_rows(W)
    k = len(W)
    if k < 2:
        return 0.0
    s = W.sum(0)
    return float(1.0 - (s @ s - k) / (k * (k - 1)))


def dsi_novelty(response_words, context_words, word_vectors):
    """novelty_i = 2 |DSI(r_i) - DSI(C)|; C's words = union of the words of the context texts."""
    dsi_c = dsi(np.stack([word_vectors[w] for w in context_words])) if context_words else 0.0
    out = []
    for ws in response_words:
        d_r = dsi(np.stack([word_vectors[w] for w in ws])) if ws else 0.0
        out.append(2.0 * abs(d_r - dsi_c))
    return np.array(out)


def minmax(values):
    """s_i = (v_i - min v) / (max v - min v) in [0, 1]; 0.5 for all when the group has one response or
    all values are equal (within 1e-9 relative)."""
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v
    lo, hi = v.min(), v.max()
    if not hi - lo > 1e-9 * max(1.0, abs(lo), abs(hi)):
        return np.full(len(v), 0.5)
    return (v - lo) / (hi - lo)


# --------------------------------------------------------------------------------------------------
# LM scorers (surprise lm, quality judge, quality rm): per prompt, the shared chat prefix runs once
# (KV cache: generate.shared_prefix_hidden), then the responses in right-padded batches


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
            logps, n_tokens = response_logps(hidden, model.lm_head.weight, ids, resp)
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
        yield idx, torch.softmax(z, dim=-1)[:, 0].numpy()


def load_reward_model(path, device="cpu"):
    """A Llama-family sequence classifier: the transformer via checkpoint.load, plus `score.weight` [labels, D]
    read from the folder's safetensors. -> (model, tokenizer, score_weight)."""
    from safetensors import safe_open

    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        with safe_open(f, framework="pt") as st:
            if "score.weight" in st.keys():
                rm, tok = checkpoint.load(path, device=device)
                return rm, tok, st.get_tensor("score.weight").float()
    raise data.DataError(f"{path}: no `score.weight` tensor in its *.safetensors (--quality rm needs a "
                         "Llama-family sequence-classification checkpoint with a score head)")


def reward(rm, tokenizer, score_weight, prompt, responses, batch_size=16, stats=None):
    """quality = h_last . w_score, h_last = the final hidden state at the last token (end of turn) of
    tokenizer.chat(x, r). Yields (indices, rewards)."""
    seqs = [tokenizer.chat(prompt, r)[0] for r in responses]
    for idx, z in last_token_scores(rm, seqs, score_weight[:1], batch_size, stats):
        yield idx, z[:, 0].numpy()


# --------------------------------------------------------------------------------------------------
# Scoring prompt groups


def parse_quality(quality):
    """"judge" | ("rm", PATH) | ("field", NAME), also written "rm PATH" / "field NAME"."""
    if isinstance(quality, str):
        quality = quality.split(None, 1)
    quality = tuple(quality)
    if quality == ("judge",) or (len(quality) == 2 and quality[0] in ("rm", "field")):
        return quality
    raise ValueError(f"quality must be 'judge', ('rm', PATH) or ('field', NAME), got {quality!r}")


def new_stats():
    return {"groups": 0, "responses": 0, "single_response_groups": 0, "seconds": {}, "computed": {}, "cached": {},
            "lm_tokens": 0, "lm_head_tokens": 0, "attention_pairs": 0, "encoder_tokens": 0}


def cache_name(m):
    """What identifies a model in cache keys: its name plus a hash of its weights (when it has any)."""
    return f"{m.name}|{model_fingerprint(m)}" if isinstance(m, torch.nn.Module) else str(m.name)


def score_groups(groups, dims=DIMS, *, model=None, tokenizer=None, encoder=None, cache_dir=None, novelty="dsi",
                 surprise="lm", quality="judge", reference=None, batch_size=16, show_progress=True, stats=None):
    """Raw and per-group normalised scores.

    groups: [{"prompt": str, "responses": [unique str], "field": [float] (only for quality field)}].
    reference: None, a list of texts (C for every prompt) or {prompt: [texts]} (a prompt it lacks uses all
    of its texts): the set C of DSI novelty in place of the group itself.
    model/tokenizer (the reference LM, also the judge) and encoder: loaded (embedded defaults) when None
    and needed. -> ([{dim: normalised np.ndarray, "<dim>_raw": raw np.ndarray} per group], stats).
    """
    dims = list(dims)
    for d in dims:
        if d not in DIMS:
            raise ValueError(f"unknown score {d!r}; choose from {DIMS}")
    if novelty not in ("dsi", "centroid"):
        raise ValueError(f"novelty must be 'dsi' or 'centroid', got {novelty!r}")
    if surprise not in ("lm", "embedding"):
        raise ValueError(f"surprise must be 'lm' or 'embedding', got {surprise!r}")
    quality = parse_quality(quality) if "quality" in dims else None
    stats = stats or new_stats()
    stats["groups"] += len(groups)
    stats["responses"] += sum(len(g["responses"]) for g in groups)
    stats["single_response_groups"] += sum(len(g["responses"]) == 1 for g in groups)
    t_start = time.perf_counter()
    cache = Cache(cache_dir)
    progress = dict(show_progress=show_progress, stats=stats)
    option = {"novelty": novelty, "diversity": "diversity", "surprise": surprise, "quality": quality}
    want = {d: option[d] for d in dims}  # dim -> the scorer that computes it
    raw = [{} for _ in groups]

    need_encoder = "diversity" in want or "novelty" in want or want.get("surprise") == "embedding"
    need_lm = want.get("surprise") == "lm" or want.get("quality") == ("judge",)
    if need_encoder and encoder is None:
        encoder = sentence_encoder.load_encoder(None)
    if need_lm and model is None:
        model, tokenizer = checkpoint.load(None)

    def embed(texts, desc):
        """{text: unit embedding}, each unique text embedded once (and cached)."""
        def compute(missing):
            missing = sorted(missing, key=len)  # similar lengths together: little padding
            for i in range(0, len(missing), 256):
                chunk = missing[i:i + 256]
                if hasattr(encoder, "tok"):
                    stats["encoder_tokens"] += sum(len(e.ids) for e in encoder.tok.encode_batch(chunk))
                yield chunk, encoder.embed(chunk, batch_size=64).float().cpu().numpy()
        return cached_compute(cache, f"embed|{cache_name(encoder)}", texts, compute, dtype=np.float32, desc=desc,
                              **progress)

    def stack(vectors, texts):
        return np.stack([vectors[t] for t in texts])

    if {"diversity", "centroid", "embedding"} & set(want.values()):
        texts = [r for g in groups for r in g["responses"]]
        if want.get("surprise") == "embedding":
            texts += [g["prompt"] for g in groups]
        sentence = embed(texts, "embed texts")
        for g, out in zip(groups, raw):
            E = stack(sentence, g["responses"])
            if "diversity" in want:
                out["diversity"] = diversity(E)
            if want.get("novelty") == "centroid":
                out["novelty"] = centroid_novelty(E)
            if want.get("surprise") == "embedding":
                out["surprise"] = 1.0 - unit_rows(E) @ unit_rows(sentence[g["prompt"]])

    if want.get("novelty") == "dsi":
        if isinstance(reference, dict):
            everything = [t for ts in reference.values() for t in ts]
            contexts = [reference.get(g["prompt"], everything) for g in groups]
        else:
            contexts = [g["responses"] if reference is None else list(reference) for g in groups]
        text_words = {t: words(t) for ts in [g["responses"] for g in groups] + contexts for t in ts}
        vocab = list(dict.fromkeys(w for ws in text_words.values() for w in ws))  # embedded once, all groups
        word_vectors = embed(vocab, "embed words")
        for g, context, out in zip(groups, contexts, raw):
            context_words = list(dict.fromkeys(w for t in context for w in text_words[t]))
            out["novelty"] = dsi_novelty([text_words[r] for r in g["responses"]], context_words, word_vectors)

    def per_response(dim, namespace, desc, fn):
        """A cached value per (prompt, response); fn(prompt, responses) yields (indices, values) per batch."""
        keys = [[json.dumps([g["prompt"], r], ensure_ascii=False) for r in g["responses"]] for g in groups]

        def compute(missing):
            by_prompt = defaultdict(list)
            for k in missing:
                prompt, response = json.loads(k)
                by_prompt[prompt].append((k, response))
            for prompt, items in by_prompt.items():
                for idx, values in fn(prompt, [r for _, r in items]):
                    yield [items[i][0] for i in idx], values

        values = cached_compute(cache, namespace, [k for ks in keys for k in ks], compute, dtype=np.float64,
                                desc=desc, **progress)
        for ks, out in zip(keys, raw):
            out[dim] = np.array([values[k][0] for k in ks])

    if need_lm:
        lm_name = f"{tokenizer.name}|{model_fingerprint(model)}|{chat_fingerprint(tokenizer)}"
    if want.get("surprise") == "lm":
        per_response("surprise", f"surprise-lm|{lm_name}", "surprise (lm)",
                     lambda p, rs: perplexity(model, tokenizer, p, rs, batch_size, stats))
    if want.get("quality") == ("judge",):
        question = hashlib.sha1(JUDGE_QUESTION.encode()).hexdigest()[:8]
        per_response("quality", f"quality-judge|{lm_name}|{question}", "quality (judge)",
                     lambda p, rs: judge(model, tokenizer, p, rs, batch_size, stats))
    if quality and quality[0] == "rm":
        device = next(model.parameters()).device if model is not None else "cpu"
        rm, rm_tokenizer, w = load_reward_model(quality[1], device=device)
        head = hashlib.sha1(w.numpy().tobytes()).hexdigest()[:8]
        rm_name = f"{rm_tokenizer.name}|{model_fingerprint(rm)}|{chat_fingerprint(rm_tokenizer)}|{head}"
        per_response("quality", f"quality-rm|{rm_name}", "quality (rm)",
                     lambda p, rs: reward(rm, rm_tokenizer, w, p, rs, batch_size, stats))
    if quality and quality[0] == "field":
        for g, out in zip(groups, raw):
            out["quality"] = np.asarray(g["field"], dtype=np.float64)

    results = []
    for out in raw:
        res = {d: minmax(out[d]) for d in dims}
        res.update({f"{d}_raw": out[d] for d in dims})
        results.append(res)
    stats["seconds"]["total"] = stats["seconds"].get("total", 0.0) + time.perf_counter() - t_start
    return results, stats


def _field_value(row, name, source):
    v = row.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise data.DataError(f"{source or '<rows>'}:{row.get('line', '?')}: field {name!r} is {json.dumps(v)}, not a "
                             f"finite number (--quality field reads a number from every row)")
    return float(v)


def _score_items(items, dims, field_name, source, kw):
    """items: [(prompt, response, row, out_key_suffix)]. Groups by prompt (first-seen order), G = the
    unique responses; scores them; writes row[dim + suffix] for every item."""
    groups = {}
    for prompt, response, row, suffix in items:
        g = groups.setdefault(prompt, {"prompt": prompt, "responses": {}})
        if response not in g["responses"]:
            g["responses"][response] = _field_value(row, field_name + suffix, source) if field_name else None
    groups = [{"prompt": g["prompt"], "responses": list(g["responses"]), "field": list(g["responses"].values())}
              for g in groups.values()]
    results, stats = score_groups(groups, dims, **kw)
    lookup = {(g["prompt"], r): {d: float(res[d][i]) for d in dims}
              for g, res in zip(groups, results) for i, r in enumerate(g["responses"])}
    for prompt, response, row, suffix in items:
        for d, v in lookup[prompt, response].items():
            row[d + suffix] = v
    return stats


def _field_name(quality):
    q = parse_quality(quality)
    return q[1] if q[0] == "field" else None


def score_rows(rows, dims=DIMS, *, source=None, **kw):
    """Rating rows {"prompt", "response", ...}: the group is all responses to a prompt; adds row[dim]
    (normalised per prompt) in place. quality ("field", NAME) reads row[NAME]. kw: as score_groups. -> stats."""
    items = [(r["prompt"], r["response"], r, "") for r in rows]
    return _score_items(items, dims, _field_name(kw.get("quality", "judge")), source, kw)


def score_pairs(pairs, dims=DIMS, *, model, tokenizer, encoder=None, cache_dir=None, novelty="dsi", surprise="lm",
                quality="judge", reference=None, show_progress=True, batch_size=16, source=None):
    """Pairs {"prompt", "chosen", "rejected", ...}: the group is the unique responses in that prompt's
    pairs; adds pair["<dim>_chosen"], pair["<dim>_rejected"] in place. quality ("field", NAME) reads
    pair["NAME_chosen"] / pair["NAME_rejected"] (NAME = "score": the human ratings). -> stats."""
    items = [(p["prompt"], p[side], p, f"_{side}") for p in pairs for side in ("chosen", "rejected")]
    kw = dict(model=model, tokenizer=tokenizer, encoder=encoder, cache_dir=cache_dir, novelty=novelty,
              surprise=surprise, quality=quality, reference=reference, show_progress=show_progress,
              batch_size=batch_size)
    return _score_items(items, dims, _field_name(quality), source, kw)


def summary(stats):
    parts = [f"{stats['groups']:,} prompt groups, {stats['responses']:,} unique responses"
             + (f" ({stats['single_response_groups']:,} prompts with one response: scores 0.5)"
                if stats["single_response_groups"] else "")]
    for k, v in stats["seconds"].items():
        if k != "total":
            parts.append(f"  {k}: {v:.1f} s ({stats['computed'].get(k, 0):,} computed, "
                         f"{stats['cached'].get(k, 0):,} from cache)")
    parts.append(f"  scoring total: {stats['seconds'].get('total', 0.0):.1f} s")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# CLI


def read_reference(path, skip_bad_rows=False):
    """{prompt: [texts]} from a rating file (its responses) or a preference file (chosen and rejected)."""
    rows, _ = data.read_rows(path, skip_bad_rows=skip_bad_rows)
    reference = defaultdict(list)
    for r in rows:
        reference[r["prompt"]].extend([r["response"]] if r["kind"] == "rating" else [r["chosen"], r["rejected"]])
    return dict(reference)


def output_rows(path, rows, keys):
    """Every input line whose row data.read_rows kept, duplicates included, in order: the line's own JSON
    object plus the scores (keys) of the row it was kept or merged into. -> (objects, lines left out)."""
    row_of_line = {}
    for r in rows:
        for line in r.get("merged_lines", [r["line"]]):
            row_of_line[line] = r
    lines = files.read_lines(path)  # as data.read_rows reads them, so line numbers agree
    out, left_out = [], 0
    for line_no, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        row = row_of_line.get(line_no)
        if row is None:
            left_out += 1  # a bad row, skipped (and counted) by data.read_rows under --skip-bad-rows
            continue
        obj = json.loads(raw.decode("utf-8"))
        obj.update({k: row[k] for k in keys})
        out.append(obj)
    return out, left_out


def main(argv=None):
    ap = argparse.ArgumentParser(description="Add novelty, diversity, surprise, quality (each in [0, 1], normalised "
                                             "per prompt) to every row of a JSON Lines file.")
    ap.add_argument("--data", required=True, help="rating or preference rows (JSON Lines)")
    ap.add_argument("--out", required=True, help="output JSON Lines: every input row, in order, with the scores")
    ap.add_argument("--novelty", choices=("dsi", "centroid"), default="dsi")
    ap.add_argument("--surprise", choices=("lm", "embedding"), default="lm")
    ap.add_argument("--quality", nargs="+", default=["judge"], metavar="judge | rm PATH | field NAME")
    ap.add_argument("--reference", help="reference responses (JSON Lines) for DSI novelty, in place of each group")
    ap.add_argument("--model", help="reference LM and judge (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--encoder", help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--cache-dir", help="default: $CRPO_CACHE or .cache/crpo")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per LM forward pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-bad-rows", action="store_true")
    args = ap.parse_args(argv)
    try:
        quality = parse_quality(args.quality)
    except ValueError as e:
        ap.error(str(e))
    t0 = time.perf_counter()
    try:
        rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows)
        print(report.summary())
        reference = read_reference(args.reference, args.skip_bad_rows) if args.reference else None
        lm = tokenizer = None
        if args.surprise == "lm" or quality == ("judge",):
            lm, tokenizer = checkpoint.load(args.model, device=args.device)
        encoder = sentence_encoder.load_encoder(args.encoder, device=args.device)
        print(f"models loaded in {time.perf_counter() - t0:.1f} s")
        kw = dict(model=lm, tokenizer=tokenizer, encoder=encoder, cache_dir=args.cache_dir, novelty=args.novelty,
                  surprise=args.surprise, quality=quality, reference=reference, batch_size=args.batch_size,
                  source=args.data)
        if report.kind == "preference":
            stats = score_pairs(rows, DIMS, **kw)
            keys = [f"{d}_{side}" for d in DIMS for side in ("chosen", "rejected")]
        else:
            stats = score_rows(rows, DIMS, **kw)
            keys = list(DIMS)
        out, left_out = output_rows(args.data, rows, keys)
    except (data.DataError, ModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    files.write_jsonl(args.out, out)
    print(summary(stats))
    print(f"wrote {len(out):,} rows to {args.out} in {time.perf_counter() - t0:.1f} s"
          + (f" ({left_out:,} bad rows skipped, see above)" if left_out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
