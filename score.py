"""Creativity scores for CrPO: one registry of dimensions and their scorers, scoring of prompt groups, and
the `python score.py` command line.

Every score is computed per prompt group G (the unique responses to one prompt) and then normalised inside
the group to [0, 1] (min-max by default, `--normalize rank` as an option). e(t) is the encoder's unit-norm
sentence embedding and d(u, v) = 1 - cos(u, v) (the math lives in measures.py).

    diversity(r) = mean_{r' in G, r' != r} d(e(r), e(r'))                 ("inverse homogenisation")
    novelty(r)   = 2 |DSI(r) - DSI(C)|                                     (--novelty dsi, default)
                   DSI(t) = mean_{i<j} d(e(w_i), e(w_j)) over the unique lower-cased words w of t
                   C = the group's responses concatenated (or an external reference set)
                 = the same, with a response of < 2 distinct words at the group's median (--novelty dsi-neutral)
                 = d(e(r), mean_{r' != r} e(r'))                           (--novelty centroid)
    surprise(r)  = exp(-(1/|r|) sum_t log p(r_t | prompt, r_<t)) under the reference LM   (--surprise lm)
                 = exp(mean NLL of every token of [BOS] + chat(prompt, r)), template included, under the LM at
                   PATH or the embedded default: the authors' surprise                (--surprise chat [PATH])
                 = -(1/|r|) sum_t log p(r_t | prompt, r_<t), mean token NLL            (--surprise nll)
                 = d(e(prompt), e(r))                                      (--surprise embedding)
    quality(r)   = p(Yes) / (p(Yes) + p(No)) of an instruct LM asked whether r is a sensible answer
                                                                           (--quality judge, default)
                 = reward model score head on the last token               (--quality rm PATH)
                 = a numeric field of the data                             (--quality field NAME)
    originality(r) = the human originality rating predicted by originality.py's fitted model (--originality
                   model [DIR]; default: the shipped scorers/originality)
    relevance(r) = p(r answers the prompt), relevance.py's model; with --gate [THRESHOLD] (default 0.5) a
                   response below it gets the group's minimum of every other raw score (off-topic is never rare)

A new scorer is one function (groups, ctx) -> [raw values per group] under an @scorer line; a new
dimension is one dimension(...) line plus its scorer. crpo.py's and score.py's flags come from the registry.
Expensive values (sentence/word embeddings, perplexities, judge and reward scores) are cached on disk
per (scorer, model, text) (cache.py), so a second run recomputes nothing.

    python score.py --data ratings.jsonl --out scored.jsonl [--dims novelty,diversity,...]
    python score.py fit [--scorer originality|relevance] --data RATINGS --out DIR     (fit.py: the learned scorers)
"""
import argparse
import functools
import hashlib
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

import checkpoint
import data
import encoder as sentence_encoder
from conversation import by_prompt_key, prompt_key
import files
import originality
import relevance
from cache import Cache, cache_name, cached_compute, chat_fingerprint, model_fingerprint, new_stats
from measures import NORMALIZE, centroid_novelty, diversity, dsi_novelty, unit_rows, words
from lm_scores import (JUDGE_QUESTION, conversation_ids, conversation_perplexity, judge, judge_prompt,  # noqa: F401
                       last_token_scores, load_reward_model, perplexity, reward)  # (public through score too)
from model import ModelError
from registry import DIMENSIONS, ScorerArg, paper_dims, parse_variant, scorer

def embed_texts(encoder, texts, *, cache_dir=None, cache=None, desc="embed texts", show_progress=True, stats=None):
    """{text: e(text)} (unit-norm float32), each unique text embedded once and cached on disk."""
    stats = stats if stats is not None else new_stats()

    def compute(missing):
        missing = sorted(missing, key=len)  # similar lengths together: little padding
        for i in range(0, len(missing), 256):
            chunk = missing[i:i + 256]
            if hasattr(encoder, "tok"):
                stats["encoder_tokens"] += sum(len(e.ids) for e in encoder.tok.encode_batch(chunk))
            yield chunk, encoder.embed(chunk, batch_size=64).float().cpu().numpy()
    return cached_compute(cache or Cache(cache_dir), f"embed|{cache_name(encoder)}", texts, compute, dtype=np.float32,
                          desc=desc, show_progress=show_progress, stats=stats)


@dataclass
class Context:
    """What scorers share: the cache, the models (the embedded defaults are loaded on first use), options."""
    cache: Cache
    stats: dict
    model: object = None  # the reference LM (also the judge)
    tokenizer: object = None
    encoder: object = None
    reference: object = None  # None, [texts] or {prompt: [texts]}: DSI novelty's C in place of each group
    population: dict = None  # {prompt: [texts]}: the responses originality compares with (default: the group)
    batch_size: int = 16
    show_progress: bool = True
    arg: str | None = None  # the variant's argument (rm PATH, field NAME)
    scorer: str | None = None  # the scorer running now, and those that used the sentence encoder
    embedding_scorers: list = None

    def lm(self):
        if self.model is None:
            self.model, self.tokenizer = checkpoint.load(None)
        return self.model, self.tokenizer

    def embed(self, texts, desc):
        if self.embedding_scorers is not None and self.scorer not in self.embedding_scorers:
            self.embedding_scorers.append(self.scorer)
        if self.encoder is None:
            self.encoder = sentence_encoder.load_encoder(None)
        return embed_texts(self.encoder, texts, cache=self.cache, desc=desc, show_progress=self.show_progress,
                           stats=self.stats)

    def embed_fn(self):
        """texts -> [n, d] array through the cache (the encoder loaded now, so that cache keys name it)."""
        if self.encoder is None:
            self.encoder = sentence_encoder.load_encoder(None)

        def embed(texts):  # one cached lookup (and encoder pass for what is missing) per call
            vectors = self.embed(list(texts), "embed texts")
            return np.stack([vectors[t] for t in texts])
        return embed

    def per_response(self, groups, namespace, desc, fn):
        """A cached value per (prompt, response); fn(prompt, responses) yields (indices, values) per batch."""
        # a conversation's key is its turns, and fn gets the prompt object itself (rendered turn by turn)
        keys = [[json.dumps([getattr(g["prompt"], "messages", g["prompt"]), r], ensure_ascii=False)
                 for r in g["responses"]] for g in groups]
        prompt_of = {k: g["prompt"] for g, ks in zip(groups, keys) for k in ks}

        def compute(missing):
            by_prompt = defaultdict(list)
            for k in missing:
                identity, response = json.loads(k)
                by_prompt[json.dumps(identity)].append((k, response))
            for items in by_prompt.values():
                for idx, values in fn(prompt_of[items[0][0]], [r for _, r in items]):
                    yield [items[i][0] for i in idx], values

        values = cached_compute(self.cache, namespace, [k for ks in keys for k in ks], compute, dtype=np.float64,
                                desc=desc, show_progress=self.show_progress, stats=self.stats)
        return [np.array([values[k][0] for k in ks]) for ks in keys]

    def lm_name(self, model, tokenizer):
        return f"{tokenizer.name}|{model_fingerprint(model)}|{chat_fingerprint(tokenizer)}"


# --------------------------------------------------------------------------------------------------
# The scorers. A new one: a function (groups, ctx) -> [raw values per group] and its @scorer line.

def _sentences(groups, ctx):
    sentence = ctx.embed([r for g in groups for r in g["responses"]], "embed texts")
    return [np.stack([sentence[r] for r in g["responses"]]) for g in groups]


@scorer("diversity", "embedding", default=True)
def diversity_scorer(groups, ctx):
    return [diversity(E) for E in _sentences(groups, ctx)]


@scorer("novelty", "centroid")
def centroid_scorer(groups, ctx):
    return [centroid_novelty(E) for E in _sentences(groups, ctx)]


def _dsi_novelty(groups, ctx):
    reference = ctx.reference
    if isinstance(reference, dict):
        everything = [t for ts in reference.values() for t in ts]
        contexts = [reference.get(prompt_key(g["prompt"]), everything) for g in groups]
    else:
        contexts = [g["responses"] if reference is None else list(reference) for g in groups]
    text_words = {t: words(t) for ts in [g["responses"] for g in groups] + contexts for t in ts}
    vocab = list(dict.fromkeys(w for ws in text_words.values() for w in ws))  # embedded once, all groups
    word_vectors = ctx.embed(vocab, "embed words")
    out = []
    for g, context in zip(groups, contexts):
        context_words = list(dict.fromkeys(w for t in context for w in text_words[t]))
        out.append((dsi_novelty([text_words[r] for r in g["responses"]], context_words, word_vectors),
                    np.array([len(text_words[r]) >= 2 for r in g["responses"]])))
    return out


@scorer("novelty", "dsi", default=True)
def dsi_scorer(groups, ctx):
    return [v for v, _ in _dsi_novelty(groups, ctx)]


@scorer("novelty", "dsi-neutral")
def dsi_neutral_scorer(groups, ctx):
    """DSI novelty, except that a response of fewer than two distinct words (no word pair: DSI undefined, which
    the paper's definition turns into DSI 0 and so the group's largest novelty) gets the median novelty of the
    group's measurable responses: neither rewarded nor penalised for being short."""
    out = []
    for v, measurable in _dsi_novelty(groups, ctx):
        fill = np.median(v[measurable]) if measurable.any() else 0.0
        out.append(np.where(measurable, v, fill))
    return out


@scorer("surprise", "lm", default=True)
def lm_surprise_scorer(groups, ctx):
    model, tokenizer = ctx.lm()
    return ctx.per_response(groups, f"surprise-lm|{ctx.lm_name(model, tokenizer)}", "surprise (lm)",
                            lambda p, rs: perplexity(model, tokenizer, p, rs, ctx.batch_size, ctx.stats))


@functools.lru_cache(maxsize=2)
def _surprise_lm(path, device):
    return checkpoint.load(path, device=device)


@scorer("surprise", "chat", arg=ScorerArg("PATH", optional=True))
def chat_surprise_scorer(groups, ctx):
    """The authors' surprise: perplexity of the whole chat-formatted conversation (conversation_perplexity) under
    the LM at PATH (they used google/gemma-2-27b-it); without PATH the embedded default SmolLM2-135M-Instruct."""
    if ctx.arg is None and ctx.model is None:
        model, tokenizer = ctx.lm()  # loads the embedded default
    else:
        device = str(next(ctx.model.parameters()).device) if ctx.model is not None else "cpu"
        model, tokenizer = _surprise_lm(ctx.arg, device)
    return ctx.per_response(groups, f"surprise-chat|{ctx.lm_name(model, tokenizer)}", "surprise (chat)",
                            lambda p, rs: conversation_perplexity(model, tokenizer, p, rs, ctx.batch_size, ctx.stats))


@scorer("surprise", "nll")
def nll_surprise_scorer(groups, ctx):
    """Mean token NLL = log perplexity: the same ranking, without perplexity's long right tail."""
    return [np.log(v) for v in lm_surprise_scorer(groups, ctx)]


@scorer("surprise", "embedding")
def embedding_surprise_scorer(groups, ctx):
    sentence = ctx.embed([r for g in groups for r in g["responses"]] + [g["prompt"] for g in groups], "embed texts")
    return [1.0 - unit_rows(np.stack([sentence[r] for r in g["responses"]])) @ unit_rows(sentence[g["prompt"]])
            for g in groups]


@scorer("quality", "judge", default=True)
def judge_scorer(groups, ctx):
    model, tokenizer = ctx.lm()
    question = hashlib.sha1(JUDGE_QUESTION.encode()).hexdigest()[:8]
    return ctx.per_response(groups, f"quality-judge|{ctx.lm_name(model, tokenizer)}|{question}", "quality (judge)",
                            lambda p, rs: judge(model, tokenizer, p, rs, ctx.batch_size, ctx.stats))


@scorer("quality", "rm", arg=ScorerArg("PATH"))
def reward_model_scorer(groups, ctx):
    device = next(ctx.model.parameters()).device if ctx.model is not None else "cpu"
    rm, rm_tokenizer, w = load_reward_model(ctx.arg, device=device)
    head = hashlib.sha1(w.numpy().tobytes()).hexdigest()[:8]
    return ctx.per_response(groups, f"quality-rm|{ctx.lm_name(rm, rm_tokenizer)}|{head}", "quality (rm)",
                            lambda p, rs: reward(rm, rm_tokenizer, w, p, rs, ctx.batch_size, ctx.stats))


@scorer("originality", "model", default=True, arg=ScorerArg("DIR", optional=True))
def originality_scorer(groups, ctx):
    """originality.predict with the fitted scorer in DIR (default: the shipped scorers/originality), each response
    compared with its prompt's population (all responses to the prompt in the file; in eval, the human ones)."""
    path = ctx.arg or originality.default_path()
    fitted, weights_hash = load_originality(path)
    embed = ctx.embed_fn()
    fitted_dim = originality.embedding_dim(fitted.weights["mu"].numel(), fitted.config)
    dim = len(embed([groups[0]["prompt"]])[0]) if groups else fitted_dim
    if dim != fitted_dim:
        raise data.DataError(f"originality scorer {path} was fitted on {fitted_dim}-dimensional sentence embeddings "
                             f"({fitted.card.get('encoder', '?')}); this encoder gives {dim}: fit one with it")
    out, encoder_name = [], cache_name(ctx.encoder)  # fingerprinted once, not per group
    for g in groups:
        population = (ctx.population or {}).get(prompt_key(g["prompt"]))
        key = hashlib.sha1(json.dumps(sorted(population or g["responses"]), ensure_ascii=False).encode()).hexdigest()
        namespace = f"originality|{weights_hash}|{encoder_name}|{key[:12]}"
        out += ctx.per_response([g], namespace, "originality", lambda p, rs: [
            (list(range(len(rs))), originality.predict(fitted, p, rs, population or g["responses"], embed=embed))])
    return out


@functools.lru_cache(maxsize=4)
def load_originality(path):
    """(fitted scorer, hash of its weights) from a folder `score.py fit` wrote; one-line error otherwise."""
    try:
        fitted = originality.load(path)
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise data.DataError(f"originality scorer {path}: {e}") from None
    h = hashlib.sha1()
    for name in sorted(fitted.weights):
        h.update(name.encode() + fitted.weights[name].float().numpy().tobytes())
    return fitted, h.hexdigest()[:12]


@scorer("relevance", "model", default=True, arg=ScorerArg("DIR", optional=True))
def relevance_scorer(groups, ctx):
    """relevance.predict (p(on-topic)) with the fitted model in DIR (default: the shipped scorers/relevance),
    each response compared with its prompt's known answers (ctx.population, e.g. eval's human answers, else
    the group)."""
    path = ctx.arg or relevance.default_path()
    try:
        fitted, card = relevance.load(path)
    except (FileNotFoundError, KeyError, ValueError, OSError) as e:
        raise data.DataError(f"relevance scorer {path}: {e}") from None
    weights_hash = hashlib.sha1(json.dumps(card["weights"]).encode()).hexdigest()[:12]
    embed, encoder_name, out = ctx.embed_fn(), cache_name(ctx.encoder), []
    for g in groups:
        population = (ctx.population or {}).get(g["prompt"]) or g["responses"]
        key = hashlib.sha1(json.dumps(sorted(population), ensure_ascii=False).encode()).hexdigest()
        namespace = f"relevance|{weights_hash}|{encoder_name}|{key[:12]}"
        out += ctx.per_response([g], namespace, "relevance", lambda p, rs: [
            (list(range(len(rs))), relevance.predict(fitted, p, rs, population, embed=embed))])
    return out


@scorer("quality", "field", arg=ScorerArg("NAME"))
def field_scorer(groups, ctx):
    return [np.asarray(g["field"], dtype=np.float64) for g in groups]


# --------------------------------------------------------------------------------------------------
# Scoring prompt groups, rows and pairs


def score_groups(groups, dims=None, *, model=None, tokenizer=None, encoder=None, cache_dir=None, reference=None,
                 population=None, normalize="minmax", batch_size=16, show_progress=True, stats=None, gate=None,
                 **variants):
    """Raw and per-group normalised scores of the dimensions `dims` (default: the paper's four).

    groups: [{"prompt": str, "responses": [unique str], "field": [float] (only for quality field)}].
    variants: dim=spec, e.g. novelty="centroid", quality="rm PATH" (default: each dimension's default scorer).
    reference: None, a list of texts (C for every prompt) or {prompt: [texts]} (a prompt it lacks uses all
    of its texts): the set C of DSI novelty in place of the group itself.
    population: {prompt: [texts]}: what originality compares each response with (default: its group).
    normalize: "minmax" (default) or "rank" (robust to outliers such as typo perplexities).
    gate: None (off) or a threshold: responses whose relevance (variants["relevance"], default the shipped
    model) is below it get the group's minimum raw value of every other dimension (relevance.gate_values).
    model/tokenizer (the reference LM, also the judge) and encoder: loaded (embedded defaults) when None
    and needed. -> ([{dim: normalised np.ndarray, "<dim>_raw": raw np.ndarray} per group], stats).
    """
    dims = paper_dims() if dims is None else list(dims)
    for d in dims:
        if d not in DIMENSIONS:
            raise ValueError(f"unknown score {d!r}; choose from {', '.join(DIMENSIONS)}")
    for d in variants:
        if d not in DIMENSIONS:
            raise TypeError(f"score_groups() got an unexpected keyword argument {d!r}")
    if normalize not in NORMALIZE:
        raise ValueError(f"normalize must be one of {', '.join(NORMALIZE)}, not {normalize!r}")
    chosen = {d: parse_variant(d, variants.get(d)) for d in dims}
    stats = stats or new_stats()
    stats["groups"] += len(groups)
    stats["responses"] += sum(len(g["responses"]) for g in groups)
    stats["single_response_groups"] += sum(len(g["responses"]) == 1 for g in groups)
    t_start = time.perf_counter()
    reference = by_prompt_key(reference) if isinstance(reference, dict) else reference
    ctx = Context(Cache(cache_dir), stats, model, tokenizer, encoder, reference, by_prompt_key(population), batch_size,
                  show_progress)
    raw, ctx.embedding_scorers = {}, []
    for d, (variant, arg) in chosen.items():
        ctx.arg, ctx.scorer = arg, f"{d} ({variant})"
        raw[d] = DIMENSIONS[d].scorers[variant](groups, ctx)
    if gate is not None:
        variant, ctx.arg = chosen.get("relevance") or parse_variant("relevance", variants.get("relevance"))
        on_topic = raw["relevance"] if "relevance" in raw else DIMENSIONS["relevance"].scorers[variant](groups, ctx)
        stats["gated"] = stats.get("gated", 0) + int(sum((np.asarray(r) < gate).sum() for r in on_topic))
        for d in dims:
            if d != "relevance":
                raw[d] = [relevance.gate_values(v, r, gate) for v, r in zip(raw[d], on_topic)]
    language_note(groups, ctx)
    results = []
    for i in range(len(groups)):
        res = {d: NORMALIZE[normalize](raw[d][i]) for d in dims}
        res.update({f"{d}_raw": np.asarray(raw[d][i], dtype=np.float64) for d in dims})
        results.append(res)
    stats["seconds"]["total"] = stats["seconds"].get("total", 0.0) + time.perf_counter() - t_start
    return results, stats


_NOTED = set()  # language notes already printed in this process: each is said once


def language_note(groups, ctx):
    """Print encoder.language_note once per process when the default sentence encoder scored these groups."""
    if ctx.embedding_scorers and getattr(ctx.encoder, "is_default", True):
        note = sentence_encoder.language_note([r for g in groups for r in g["responses"]],
                                              {lang for g in groups for lang in g.get("languages", ())}, ctx.embedding_scorers)
        if note and note not in _NOTED:
            _NOTED.add(note)
            print(note, file=sys.stderr)


def _field_value(row, name, source):
    v = row.get(name)
    if "line" not in row and v is None:  # a pair built from rating rows: it carries score_chosen/_rejected only
        raise data.DataError(f"{source or '<pairs>'}: the pairs have no field {name!r} (pairs built from rating "
                             f"rows carry their rows' scores: use --quality field score)")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise data.DataError(f"{source or '<rows>'}:{row.get('line', '?')}: field {name!r} is {json.dumps(v)}, not a "
                             f"finite number (--quality field reads a number from every row)")
    return float(v)


def _field_name(dims, variants):
    """NAME of quality's `field NAME` scorer when it is in use, else None."""
    if "quality" not in dims:
        return None
    variant, arg = parse_variant("quality", variants.get("quality"))
    return arg if variant == "field" else None


def _score_items(items, dims, source, kw):
    """items: [(prompt, response, row, out_key_suffix)]. Groups by prompt (first-seen order), G = the
    unique responses; scores them; writes row[dim + suffix] for every item."""
    dims = paper_dims() if dims is None else list(dims)
    field_name = _field_name(dims, {d: kw[d] for d in DIMENSIONS if d in kw})
    groups = {}  # prompt_key -> the group, under the prompt's first spelling
    for prompt, response, row, suffix in items:
        g = groups.setdefault(prompt_key(prompt), {"prompt": prompt, "responses": {}, "languages": set()})
        if row.get("language"):
            g["languages"].add(row["language"])
        if response not in g["responses"]:
            g["responses"][response] = _field_value(row, field_name + suffix, source) if field_name else None
    groups = [{"prompt": g["prompt"], "responses": list(g["responses"]), "field": list(g["responses"].values()),
               "languages": g["languages"]} for g in groups.values()]
    results, stats = score_groups(groups, dims, **kw)
    lookup = {(prompt_key(g["prompt"]), r): {d: float(res[d][i]) for d in dims}
              for g, res in zip(groups, results) for i, r in enumerate(g["responses"])}
    for prompt, response, row, suffix in items:
        for d, v in lookup[prompt_key(prompt), response].items():
            row[d + suffix] = v
    return stats


def score_rows(rows, dims=None, *, source=None, **kw):
    """Rating rows {"prompt", "response", ...}: the group is all responses to a prompt; adds row[dim]
    (normalised per prompt) in place. quality "field NAME" reads row[NAME]. kw: as score_groups. -> stats."""
    return _score_items([(r["prompt"], r["response"], r, "") for r in rows], dims, source, kw)


def score_pairs(pairs, dims=None, *, source=None, sides=("chosen", "rejected"), **kw):
    """Pairs {"prompt", "chosen", "rejected", ...}: the group is the unique responses on `sides` of that prompt's
    pairs; adds pair["<dim>_<side>"] in place for each side. sides=("chosen",): the paper's and the authors'
    population, the set of preferred responses (no "_rejected" scores). quality "field NAME" reads
    pair["NAME_chosen"] / pair["NAME_rejected"] (NAME = "score": the human ratings). kw: as score_groups. -> stats."""
    items = [(p["prompt"], p[side], p, f"_{side}") for p in pairs for side in sides]
    return _score_items(items, dims, source, kw)


def summary(stats):
    parts = [f"{stats['groups']:,} prompt groups, {stats['responses']:,} unique responses"
             + (f" ({stats['single_response_groups']:,} prompts with one response: scores 0.5)"
                if stats["single_response_groups"] else "")]
    for k, v in stats["seconds"].items():
        if k != "total":
            parts.append(f"  {k}: {v:.1f} s ({stats['computed'].get(k, 0):,} computed, "
                         f"{stats['cached'].get(k, 0):,} from cache)")
    if stats.get("gated"):
        parts.append(f"  relevance gate: {stats['gated']:,} off-topic responses set to their group's minimum")
    parts.append(f"  scoring total: {stats['seconds'].get('total', 0.0):.1f} s")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# CLI


def read_reference(path, skip_bad_rows=False):
    """{prompt_key: [texts]} from a rating file (its responses) or a preference file (chosen and rejected)."""
    rows, _ = data.read_rows(path, skip_bad_rows=skip_bad_rows)
    reference = defaultdict(list)
    for r in rows:
        reference[prompt_key(r["prompt"])].extend([r["response"]] if r["kind"] == "rating" else [r["chosen"], r["rejected"]])
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


def add_scorer_flags(ap, prefix=""):
    """--<prefix><dim> VARIANT [ARG] for every registered dimension, with its choices and default in the help."""
    for name, d in DIMENSIONS.items():
        choices = " | ".join(v + (f" {d.arg[v]}" if d.arg[v] else "") for v in d.scorers)
        ap.add_argument(f"--{prefix}{name}", nargs="+", default=[d.default], metavar="VARIANT",
                        help=f"{name} scorer: {choices} (default: {d.default})")
    ap.add_argument(f"--{prefix}normalize", choices=tuple(NORMALIZE), default="minmax",
                    help="per-prompt normalisation to [0, 1]")
    ap.add_argument(f"--{prefix}gate", nargs="?", type=float, const=relevance.THRESHOLD, default=None,
                    metavar="THRESHOLD", help="relevance gate: a response with relevance below THRESHOLD (default "
                    f"{relevance.THRESHOLD}) gets its group's minimum of every other score (off-topic)")


def scorer_options(args, prefix=""):
    """{dim: "VARIANT [ARG]"} from the flags add_scorer_flags made; ValueError names a bad one."""
    options = {}
    for name in DIMENSIONS:
        spec = " ".join(getattr(args, f"{prefix}{name}".replace("-", "_")))
        parse_variant(name, spec)
        options[name] = spec
    return options


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["fit"]:  # python score.py fit [--scorer relevance] --data RATINGS --out DIR: fit.py
        import fit
        return fit.main(argv[1:])
    ap = argparse.ArgumentParser(description="Add creativity scores (each in [0, 1], normalised per prompt) to every "
                                             "row of a JSON Lines file.",
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--data", required=True, help="rating or preference rows (JSON Lines, .jsonl or .jsonl.gz)")
    ap.add_argument("--out", required=True, help="output JSON Lines: every input row, in order, with the scores")
    ap.add_argument("--dims", default=",".join(paper_dims()),
                    help=f"comma-separated dimensions to add (registered: {', '.join(DIMENSIONS)})")
    add_scorer_flags(ap)
    ap.add_argument("--reference", help="reference responses (JSON Lines) for DSI novelty, in place of each group")
    ap.add_argument("--model", help="reference LM and judge (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--encoder", help="sentence encoder folder (default: the embedded all-MiniLM-L6-v2)")
    ap.add_argument("--cache-dir", help="score cache (default: $CRPO_CACHE or .cache/crpo)")
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per LM forward pass")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-bad-rows", action="store_true")
    args = ap.parse_args(argv)
    dims = [d.strip() for d in args.dims.split(",") if d.strip()]
    try:
        unknown = [d for d in dims if d not in DIMENSIONS]
        if unknown or not dims:
            raise ValueError(f"--dims {args.dims!r}: unknown {', '.join(unknown) or 'empty'} "
                             f"(registered: {', '.join(DIMENSIONS)})")
        if args.batch_size < 1:
            raise ValueError("--batch-size must be >= 1")
        options = {d: v for d, v in scorer_options(args).items() if d in dims}
    except ValueError as e:
        ap.error(str(e))

    t0 = time.perf_counter()
    try:
        rows, report = data.read_rows(args.data, skip_bad_rows=args.skip_bad_rows, score_columns=list(DIMENSIONS))
        print(report.summary())
        reference = read_reference(args.reference, args.skip_bad_rows) if args.reference else None
        lm = tokenizer = encoder = None
        if args.model or args.device != "cpu":  # the defaults too: the scorers would load them on the CPU
            lm, tokenizer = checkpoint.load(args.model, device=args.device)
        if args.encoder or args.device != "cpu":
            encoder = sentence_encoder.load_encoder(args.encoder, device=args.device)
        kw = dict(model=lm, tokenizer=tokenizer, encoder=encoder, cache_dir=args.cache_dir, reference=reference,
                  gate=args.gate, batch_size=args.batch_size, source=args.data, normalize=args.normalize, **options)
        if report.kind == "preference":
            stats = score_pairs(rows, dims, **kw)
            keys = [f"{d}_{side}" for d in dims for side in ("chosen", "rejected")]
        else:
            stats = score_rows(rows, dims, **kw)
            keys = dims
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
