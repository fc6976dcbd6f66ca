"""Relevance: is a response an answer to its prompt? A logistic model on how the response sits among the
known answers to the prompt, calibrated on human answers against answers to other prompts and nonsense.

A rare answer looks creative to every rarity score (originality, novelty, diversity, surprise), and an
answer to another question, gibberish or a news sentence is the rarest of all. This scorer gives
p(on-topic | r, x, G), G = the known answers to prompt x (the human ones in eval and training), so that
score.py's relevance gate can set off-topic responses' creativity scores to their group's minimum.
With e(t) the sentence encoder's unit-norm embedding, c(r) = e(x + " " + r) (the answer read after its
prompt) and u-bar = mean_{g in G} u(g) / |mean_{g in G} u(g)|:

    f(r; x, G) = [ cos(e(r), e(x)),  cos(e(r), e-bar),  cos(c(r), c-bar),
                   knn_k(e; r) for k in (1, 5, 20),  knn_5(c; r),          knn_k(u; r) = mean of the k
                   the percentile of each of the six in G (leave-one-out),   largest cos(u(r), u(g)), g in G\\r
                   log(1 + words(r)) ]
    p(on-topic) = sigmoid(z . beta + b),   z = (f - mu) / sigma

beta, b minimise the weighted logistic loss + lambda |beta|^2 (Newton's method, float64); rows are
weighted so that every training prompt counts the same and positives and negatives weigh half each.
Positives: human answers to a prompt. Negatives: human answers to other prompts (half from prompts of
the same task) and probes.py's gibberish, random words and unrelated text (style "train").
Validity: prompt-grouped cross-validation AUC of human answers to a prompt against answers to other
prompts (the prompts of a held-out fold are never seen in fitting, nor their answers used as negatives).

    python score.py fit --scorer relevance --data data/dt_ratings.jsonl.gz --out scorers/relevance
"""
import json
import os
import time

import numpy as np

import originality
import probes
from cache import disk_embed
from measures import word_tokens

THRESHOLD = 0.5  # p(on-topic) below this = off-topic for score.py's gate and eval.py's on-topic share
KNN = (1, 5, 20)
NEGATIVE_KINDS = ("other_prompt", "gibberish", "random_words", "unrelated")


# ----------------------------------------------------------------------------------------------------
# features

def knn_similarity(U, V, self_index, k):
    """Mean of the k largest cos(U_i, V_j) over j != self_index[i] (k clipped to the others) -> [n]."""
    S = U @ V.T
    rows = np.nonzero(self_index >= 0)[0]
    S[rows, self_index[rows]] = -np.inf
    others = len(V) - (self_index >= 0).astype(int)
    kk = max(1, min(k, int(others.min()) if len(others) else 1))
    top = -np.sort(-S, axis=1)[:, :kk]
    return top.mean(1)


def raw_features(E_r, C_r, p, E_g, C_g, self_index, n_words):
    """The seven similarity columns and the length column of f(r; x, G) -> [n, 8] (unit rows in)."""
    unit = lambda v: v / max(np.linalg.norm(v), 1e-12)  # noqa: E731
    e_bar, c_bar = unit(E_g.mean(0)), unit(C_g.mean(0))
    cols = [E_r @ p, E_r @ e_bar, C_r @ c_bar]
    cols += [knn_similarity(E_r, E_g, self_index, k) for k in KNN]
    cols += [knn_similarity(C_r, C_g, self_index, 5), np.log1p(n_words)]
    return np.stack(cols, 1)


FEATURES = ["cos_prompt", "cos_centroid", "cos_context_centroid"] + [f"knn{k}" for k in KNN] + ["knn5_context"]
NAMES = FEATURES + ["log_words"] + [f"pct_{n}" for n in FEATURES[1:]]


def features(embed, prompt, responses, group):
    """f(r; x, G) for each response -> float64 [n, 14]; a response equal to a member of G is compared with
    the others only. embed(texts) -> unit-norm [n, d]. Raises ValueError for an empty group."""
    responses, group = list(responses), list(group)
    if not group:
        raise ValueError("relevance: an empty group of known answers")
    ctx = originality.context_text
    texts = list(dict.fromkeys([prompt] + responses + group + [ctx(prompt, t) for t in responses + group]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    row = {t: i for i, t in enumerate(texts)}
    E = lambda ts: vectors[[row[t] for t in ts]]  # noqa: E731
    p = E([prompt])[0]
    E_g, C_g = E(group), E([ctx(prompt, t) for t in group])
    position = {t: i for i, t in enumerate(group)}
    self_r = np.array([position.get(t, -1) for t in responses])
    f_r = raw_features(E(responses), E([ctx(prompt, t) for t in responses]), p, E_g, C_g, self_r,
                       np.array([len(word_tokens(t)) for t in responses]))
    f_g = raw_features(E_g, C_g, p, E_g, C_g, np.arange(len(group)), np.array([len(word_tokens(t)) for t in group]))
    pct = [originality.percentile_in(f_r[:, j], f_g[:, j]) for j in range(1, len(FEATURES))]
    return np.hstack([f_r, np.stack(pct, 1)])


# ----------------------------------------------------------------------------------------------------
# logistic model

def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -500, 500)))


def fit_logistic(F, y, w, ridge=1e-3, iters=50):
    """beta, b = argmin sum_i w_i [-y_i log s_i - (1 - y_i) log(1 - s_i)] / sum w + ridge |beta|^2,
    s_i = sigmoid(z_i . beta + b), z = (f - mu) / sigma, by Newton's method -> {"mu", "sigma", "beta", "bias"}."""
    w = w / w.sum()
    mu = w @ F
    sigma = np.sqrt(w @ (F - mu) ** 2) + 1e-8
    X = np.hstack([(F - mu) / sigma, np.ones((len(F), 1))])
    theta = np.zeros(X.shape[1])
    reg = np.full(X.shape[1], 2 * ridge)
    reg[-1] = 0.0  # the bias is not shrunk
    for _ in range(iters):
        s = sigmoid(X @ theta)
        grad = X.T @ (w * (s - y)) + reg * theta
        hess = (X * (w * s * (1 - s))[:, None]).T @ X + np.diag(reg)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"mu": mu, "sigma": sigma, "beta": theta[:-1], "bias": float(theta[-1])}


def apply_logistic(model, F):
    """p(on-topic) = sigmoid((f - mu) / sigma . beta + bias) -> [n]."""
    return sigmoid(((F - np.asarray(model["mu"])) / np.asarray(model["sigma"])) @ np.asarray(model["beta"])
                   + model["bias"])


def auc(positive, negative):
    """P(a positive scores above a negative) + P(tie) / 2 (Mann-Whitney U / (n_pos n_neg))."""
    positive, negative = np.asarray(positive, float), np.asarray(negative, float)
    ranks = originality.average_ranks(np.concatenate([positive, negative])) + 1
    n1, n0 = len(positive), len(negative)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


# ----------------------------------------------------------------------------------------------------
# training data: positives and negatives of the prompts in `prompts` only

def training_rows(groups, prompts, embed, seed=0, max_positives=400, n_per_kind=40):
    """(F, y, w, prompt index) for fitting on `prompts`: every prompt weighs 1, half positives, half negatives."""
    rng = np.random.default_rng(seed)
    F, y, w, idx = [], [], [], []
    for i, p in enumerate(prompts):
        responses = groups[p][0]
        pos = [responses[j] for j in sorted(rng.choice(len(responses), min(max_positives, len(responses)), replace=False))]
        neg = [t for ts in probes.training_negatives(rng, p, groups, prompts, n_per_kind, NEGATIVE_KINDS).values() for t in ts]
        f = features(embed, p, pos + neg, responses)
        F.append(f)
        y.append(np.r_[np.ones(len(pos)), np.zeros(len(neg))])
        w.append(np.r_[np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
        idx.append(np.full(len(f), i))
    return np.vstack(F), np.concatenate(y), np.concatenate(w), np.concatenate(idx)


def fit(groups, prompts, embed, seed=0):
    return fit_logistic(*training_rows(groups, prompts, embed, seed)[:3])


def cross_validate(groups, embed, k=5, seed=0, n_other=200, log=print):
    """Prompt-grouped k-fold CV: fit on k-1 folds, then for each held-out prompt the AUC of p(on-topic) of
    its human answers (up to 400) against n_other answers to the fold's other held-out prompts (half of the
    same task where there are some) and against each kind of probe (style "heldout"). -> table."""
    fold = originality.prompt_folds({p: g[2] for p, g in groups.items()}, k, seed)
    per_prompt = {}
    for f in range(k):
        t0 = time.time()
        train = [p for p in groups if fold[p] != f]
        test = [p for p in groups if fold[p] == f]
        model = fit(groups, train, embed, seed)
        rng = np.random.default_rng(seed + 1)
        for p in test:
            responses = groups[p][0]
            pos = [responses[j] for j in sorted(rng.choice(len(responses), min(400, len(responses)), replace=False))]
            neg = probes.training_negatives(rng, p, groups, test, n_other, NEGATIVE_KINDS, style="heldout")
            everything = pos + [t for ts in neg.values() for t in ts]
            prob = apply_logistic(model, features(embed, p, everything, responses))
            s, row = len(pos), {"task": groups[p][2], "n": len(responses), "fold": f}
            row["on_topic_share_humans"] = float((prob[:s] >= THRESHOLD).mean())
            for kind, texts in neg.items():
                row[f"auc_{kind}"] = auc(prob[:s], prob[s:s + len(texts)])
                row[f"off_topic_share_{kind}"] = float((prob[s:s + len(texts)] < THRESHOLD).mean())
                s += len(texts)
            per_prompt[p] = row
        log(f"fold {f}: {len(test)} prompts, AUC other prompts "
            f"{np.mean([per_prompt[p]['auc_other_prompt'] for p in test]):.3f} ({time.time() - t0:.0f} s)")
    keys = [key for key in next(iter(per_prompt.values())) if key.startswith(("auc_", "off_topic", "on_topic"))]
    summary = {key: dict(zip(("mean", "se", "n"), originality.mean_se([r[key] for r in per_prompt.values()])))
               for key in keys}
    by_task = {t: {key: float(np.mean([r[key] for r in per_prompt.values() if r["task"] == t])) for key in keys}
               for t in sorted({r["task"] for r in per_prompt.values()})}
    return {"folds": k, "seed": seed, "threshold": THRESHOLD, "overall": summary, "per_task": by_task,
            "per_prompt": per_prompt}


def gate_values(values, relevance_values, threshold):
    """The relevance gate: v_i -> min_j v_j for every i with relevance_i < threshold (off-topic), else v_i
    (raw scores of one group; higher = more creative) -> float64 [n]."""
    values = np.asarray(values, dtype=np.float64)
    off = np.asarray(relevance_values) < threshold
    return np.where(off, values.min(), values) if len(values) else values


# ----------------------------------------------------------------------------------------------------
# save / load / predict

def save(model, card, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    weights = {k: (np.asarray(v).tolist() if not isinstance(v, float) else v) for k, v in model.items()}
    with open(os.path.join(out_dir, "card.json"), "w") as f:
        json.dump(originality.json_safe(dict(card, weights=weights, features=NAMES)), f, indent=1, allow_nan=False)


def load(path):
    """(model, card) from a folder save wrote (card.json holds the weights: 14 coefficients)."""
    file = os.path.join(path, "card.json")
    if not os.path.exists(file):
        raise FileNotFoundError(f"{path}: no card.json (expected a folder written by `python score.py fit --scorer relevance`)")
    with open(file) as f:
        card = json.load(f)
    weights = card["weights"]
    if len(weights["beta"]) != len(NAMES):
        raise ValueError(f"{file}: {len(weights['beta'])} coefficients, this code computes {len(NAMES)} features")
    return {k: (np.asarray(v) if isinstance(v, list) else v) for k, v in weights.items()}, card


def predict(model, prompt, responses, group, *, embed):
    """p(on-topic) of each response to prompt, G = group (the known answers) -> float64 [n]."""
    if len(responses) == 0:
        return np.zeros(0)
    return apply_logistic(model, features(embed, prompt, responses, group))


def default_path():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "scorers", "relevance")


def fit_and_save(rows, out, *, encoder, data_path, folds=5, seed=0, cache_dir=None, log=print):
    """Fit the scorer on rating rows and write it to the folder `out` (card.json: weights, training prompts, data
    file and sha256, encoder, threshold): first a prompt-grouped `folds`-fold CV AUC report (folds = 0 skips it),
    then the fit on all prompts. python score.py fit --scorer relevance (fit.py) calls this."""
    embed = disk_embed(encoder, cache_dir)
    groups = originality.group_rows(rows)
    table = None
    t0 = time.time()
    if folds:
        table = cross_validate(groups, embed, k=folds, seed=seed)
        log(json.dumps(table["overall"], indent=1))
    model = fit(groups, list(groups), embed, seed)
    card = {"training_prompts": list(groups), "data_file": os.path.basename(data_path),
            "data_sha256": originality.file_sha256(data_path), "encoder": getattr(encoder, "name", "encoder"),
            "threshold": THRESHOLD, "cv": table, "wall_s": round(time.time() - t0, 1)}
    save(model, card, out)
    log(f"wrote {out}/card.json ({time.time() - t0:.0f} s)")
    return model, card
