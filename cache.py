"""The on-disk cache of scorer values: key = (scorer, model, text) -> a float vector, in one sqlite file.

A model is named in keys by its name plus a hash of its weights (and of its chat format for LM scores), so two
checkpoints that share a tokenizer never share rows. score.py and eval.py read and fill it through
cached_compute; a second run recomputes nothing.
"""
import hashlib
import os
import sqlite3
import time

import numpy as np
import torch
from tqdm import tqdm



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


def new_stats():
    return {"groups": 0, "responses": 0, "single_response_groups": 0, "seconds": {}, "computed": {}, "cached": {},
            "lm_tokens": 0, "lm_head_tokens": 0, "attention_pairs": 0, "encoder_tokens": 0}


def cache_name(m):
    """What identifies a model in cache keys: its name plus a hash of its weights (when it has any)."""
    return f"{m.name}|{model_fingerprint(m)}" if isinstance(m, torch.nn.Module) else str(m.name)


def disk_embed(encoder, cache_dir=None):
    """embed(texts) -> unit-norm float32 [n, d], each text encoded once and kept in the score cache (the rows
    score.embed_texts reads and writes) and in memory, so a refit or a CV rerun encodes nothing twice."""
    store, namespace, stats, memory = Cache(cache_dir), f"embed|{cache_name(encoder)}", new_stats(), {}

    def compute(missing):
        missing = sorted(missing, key=len)
        for i in range(0, len(missing), 256):
            yield missing[i:i + 256], encoder.embed(missing[i:i + 256], batch_size=64).float().cpu().numpy()

    def embed(texts):
        texts = list(texts)
        missing = [t for t in dict.fromkeys(texts) if t not in memory]
        if missing:
            memory.update(cached_compute(store, namespace, missing, compute, dtype=np.float32, desc="embed texts",
                                         show_progress=False, stats=stats))
        return np.stack([memory[t] for t in texts]) if texts else np.zeros((0, encoder.config.dim), np.float32)
    return embed
