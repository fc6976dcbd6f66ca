"""The math of the creativity measures, on unit sentence embeddings and word lists (no models here).

e(t) is a unit-norm sentence embedding and d(u, v) = 1 - cos(u, v). score.py's scorers compute embeddings
and LM values (cached) and call these; eval.py reuses them on generations.
"""
import re

import numpy as np



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


# Scripts written without spaces between words. Han text is segmented by jieba (a dictionary + HMM segmenter
# for Chinese); Japanese (Han mixed with kana) falls back to script runs (kanji, hiragana, katakana); Thai, Lao,
# Khmer, Myanmar and Tibetan to single letters with their combining marks. The fallbacks are crude but keep every
# word-based measure defined and counting words rather than whole clauses.
_NO_SPACES = re.compile("[\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
                        "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_RUNS = re.compile("([\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+)"  # Han
                   "|([\u3040-\u309f]+)|([\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]+)"  # hiragana, katakana
                   "|([\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff][\u0300-\u036f\u0e31\u0e34-\u0e3a"
                   "\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd\u0f71-\u0f84\u102b-\u103e\u17b4-\u17d3]*)"
                   "|([^\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff\u3400-"
                   "\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]+)")


def _segment_han(run):
    try:
        import jieba  # optional at import time: the first call loads its dictionary (about a second)
    except ImportError:  # documented fallback: one character per word
        return list(run)
    jieba.setLogLevel(60)  # its loading messages are not ours to print
    return [w for w in jieba.lcut(run) if w.strip()]


def word_tokens(text):
    """The lower-cased words of a text in order, punctuation stripped and apostrophes dropped inside words
    ("Don't!" -> "dont"). The one word splitter of the project: DSI novelty and eval's distinct-n use it.
    Text without spaces between words is segmented (see _NO_SPACES above): "把旧雨伞改造成风筝" ->
    ["把", "旧", "雨伞", "改造", "成", "风筝"]."""
    text = re.sub(r"['\u2019`]", "", text.lower())
    tokens = re.findall(r"[^\W_]+", text) if not _NO_SPACES.search(text) else \
        re.findall(r"[^\W_]+(?:[\u0300-\u036f\u0e31\u0e34-\u0e3a\u0e47-\u0e4e\u0eb1\u0eb4-\u0ebc\u0ec8-\u0ecd"
                   r"\u0f71-\u0f84\u102b-\u103e\u17b4-\u17d3]+[^\W_]*)*", text)
    out = []
    for token in tokens:
        if not _NO_SPACES.search(token):
            out.append(token)
            continue
        japanese = bool(_KANA.search(text))  # kana anywhere: Japanese, which jieba's Chinese dictionary does not fit
        for han, hira, kata, letter, other in _RUNS.findall(token):
            if han:
                out.extend([han] if japanese else _segment_han(han))  # Japanese: a kanji run is one word
            else:
                out.append(hira or kata or letter or other)
    return out


def words(text):
    """The unique lower-cased words of a text, in order of first appearance."""
    return list(dict.fromkeys(word_tokens(text)))


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


def rank01(values):
    """s_i = (rank_i - 1) / (n - 1) in [0, 1], ties sharing their mean rank; 0.5 for one response or all equal.
    Unlike min-max, one outlier (a typo's huge perplexity) cannot squash everyone else into a corner."""
    v = np.asarray(values, dtype=np.float64)
    n = len(v)
    if n == 0:
        return v
    if n == 1 or not np.ptp(v) > 1e-9 * max(1.0, np.abs(v).max()):
        return np.full(n, 0.5)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=np.float64)
    for value in np.unique(v):  # ties: their mean rank
        tie = v == value
        ranks[tie] = ranks[tie].mean()
    return ranks / (n - 1)


NORMALIZE = {"minmax": minmax, "rank": rank01}
