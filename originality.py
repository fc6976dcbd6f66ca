"""Originality: a model of the human originality rating of a response r to a prompt x.

The rating of an idea depends on what it says and on how many others said the same thing, so every
response is described twice: on its own and relative to its prompt group G (the responses it is
compared against: in training and in score.py all responses to that prompt in the file; in evaluation
the human responses when there are some). With e(t) the sentence encoder's unit-norm embedding,
a(r) = e(r), c(r) = e(x + " " + r) (the answer read in its prompt's context), d(u, v) = 1 - cos(u, v):

    f(r; x, G) = [ c(r),  c(r) - mean_{r' in G} c(r'),  a(r),  s_a(r; G),  s_c(r; G),  len(r) ]

    s_u(r; G)  = the group statistics below for the embedding u, each also as its percentile in G
      nn_{k,m}(r) = E_{S subset of G\\r, |S| = m} [ k-th smallest d(u(r), u(r')) over r' in S ]
                    (statistical infrequency: distance to the k-th nearest other answer in a random group
                    of m answers, m clipped to |G\\r|; an exact expectation over subsets, so 30 and
                    3,000 answers read alike)
      dens_t(r)   = |{r' in G\\r : cos(u(r), u(r')) > t}| / |G\\r|       (share of near-duplicates)
      mean d(u(r), u(r')) over G\\r,  cos(u(r), mean_G u),  cos(u(r), e(x))
    len(r)     = log(1 + chars), log(1 + words) and their percentiles in G

The head maps the standardised features z = (f - mu) / sigma to the prompt-standardised rating
t = (y - mean_x y) / sd_x y (only the order inside a prompt is asked of the scorer):

    y_hat(r) = w_ridge * z . beta  +  (1 - w_ridge) * (1/M) sum_m MLP_m(z)
    MLP_m(z) = W2 gelu(W1 z + b1) + b2          (trained with dropout and AdamW on squared error)
    beta     = argmin sum_r w_r (t_r - z_r . beta)^2 + lambda * n * |beta|^2,   w_r = n_x^-1/2
    (row weights between "every response counts the same" and "every prompt counts the same": the
    validity metric averages over prompts, and prompts range from 30 to 5,000 responses)
    y(r)     = y_hat(r) + gamma min(0, a(r) - a_0)    (gamma 10, a_0 0.3: rarity alone rewards nonsense)
    a(r)     = the same head fitted to 1 for human answers and 0 for probes.py's negatives (gibberish, random
               words, shuffled answers, unrelated text, other prompts' answers, non-answers, rambles; built
               from the training prompts only), each prompt's weight n_x^1/2 split half and half

Validity: prompt-grouped cross-validation (no prompt on both sides of a fold), mean per-prompt Spearman with the
human rating, and the partial Spearman with length held fixed.
    python score.py fit --data data/dt_ratings.jsonl.gz --out scorers/originality

Measured (data/dt_ratings.jsonl.gz, 44 prompts, 5 prompt-grouped folds, seed 0): mean per-prompt Spearman
+0.618 +- 0.019 (partial, length in chars held fixed, +0.572), beside length +0.277 and diversity +0.183;
before the answer head (2 MLPs, no negatives) +0.621: the price of rating nonsense low (README).
Earlier choices: ridge alone +0.596; unweighted rows +0.614; seed-1 folds +0.620.
On a task left out of training: 0.466 (alternate uses) to 0.607 (sentence completion); before 0.47-0.63.
"""
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

import probes
from cache import disk_embed
from conversation import prompt_key
from files import file_sha256, json_safe  # noqa: F401 (originality.json_safe, .file_sha256)
from measures import word_tokens

TRAINED_ON = ("Trained on English divergent-thinking answers (alternate uses, instances, consequences, sentence "
              "completion) rated for originality by people; it may not transfer to other languages, tasks or "
              "kinds of text.")


@dataclass
class Config:
    subset_sizes: tuple = (10, 30)           # m in nn_{k,m}
    neighbours: tuple = (1, 3)               # k in nn_{k,m}
    thresholds: tuple = (0.6, 0.7, 0.8, 0.9)  # t in dens_t
    ridge_lambda: float = 0.1
    prompt_weight_power: float = 0.5         # row weight n_x^-power: between rows equal (0) and prompts equal (1)
    ridge_weight: float = 1.0 / 3.0
    mlp_members: int = 4
    hidden: int = 256
    dropout: float = 0.5
    weight_decay: float = 1e-2
    lr: float = 1e-3
    epochs: int = 20
    batch_size: int = 256
    seed: int = 0
    negatives: float = 0.02                  # negatives of each probes.KINDS per prompt: max(min, round(frac * n_x))
    negatives_min: int = 2                   # (0.0: no answer head, the scorer of before)
    answer_members: int = 2                  # MLPs of the answer head
    answer_cut: float = 0.3                  # a_0: answer-ness below which the rating is lowered
    answer_penalty: float = 10.0             # gamma: prompt SDs taken off per unit of answer-ness below a_0


# ----------------------------------------------------------------------------------------------------
# rank statistics (numpy; scipy only as a test oracle)

def average_ranks(x):
    """0-based ranks of x, ties sharing the mean of the ranks they span."""
    x = np.asarray(x, dtype=np.float64)
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    return (starts + (counts - 1) / 2.0)[inverse]


def pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / den if den > 0 else float("nan")


def spearman(a, b):
    """rho = Pearson correlation of the average ranks of a and b."""
    return pearson(average_ranks(a), average_ranks(b))


def partial_spearman(a, b, z):
    """rho_ab.z = (rho_ab - rho_az rho_bz) / sqrt((1 - rho_az^2)(1 - rho_bz^2)): a vs b with z held fixed."""
    ab, az, bz = spearman(a, b), spearman(a, z), spearman(b, z)
    den = math.sqrt(max((1 - az * az) * (1 - bz * bz), 0.0))
    return (ab - az * bz) / den if den > 0 else float("nan")


# ----------------------------------------------------------------------------------------------------
# group features

def log_binomial(n, k, log_fact):
    return log_fact[n] - log_fact[k] - log_fact[n - k]


def subset_order_weights(n, m, k):
    """w_j = P(the j-th nearest of n others is the k-th nearest of a random m-subset)
           = C(j-1, k-1) C(n-j, m-k) / C(n, m),  j = 1..n  (m, k clipped to n, m); sum_j w_j = 1."""
    m = min(m, n)
    k = min(k, m)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])
    j = np.arange(1, n + 1)
    ok = (j >= k) & (n - j >= m - k)
    w = np.zeros(n)
    jj = j[ok]
    w[ok] = np.exp(log_binomial(jj - 1, k - 1, log_fact) + log_binomial(n - jj, m - k, log_fact)
                   - log_binomial(n, m, log_fact))
    return w


def percentile_in(values, reference, rel_tol=1e-9):
    """(#reference < v + #reference == v / 2) / |reference| for each v: the percentile of v in the group.
    Equal means within rel_tol, so a value recomputed in another matrix shape keeps its ties."""
    ref = np.sort(reference)
    tol = rel_tol * np.maximum(1.0, np.abs(values))
    below = np.searchsorted(ref, values - tol, side="left")
    upto = np.searchsorted(ref, values + tol, side="right")
    return (below + 0.5 * (upto - below)) / len(ref)


def rarity(U, V, self_index, prompt_vec, config, block=1024):
    """Group statistics of rows U [n, d] against the group V [N, d] (unit rows); self_index[i] is the row
    of V that is U[i] itself (left out of its own comparisons) or -1. Returns [n, S] and the names."""
    n, N = len(U), len(V)
    mu = V.mean(0)
    mu = mu / max(np.linalg.norm(mu), 1e-12)
    weights = {}
    out = []
    for s in range(0, n, block):
        S = U[s:s + block] @ V.T
        own = self_index[s:s + block]
        rows = np.nonzero(own >= 0)[0]
        S[rows, own[rows]] = np.nan
        others = N - (own >= 0)
        D = np.sort(1.0 - S, axis=1)  # nan (itself) sorts last
        cols = []
        for m in config.subset_sizes:
            for k in config.neighbours:
                c = np.empty(len(S))
                for n_others in np.unique(others):
                    key = (int(n_others), m, k)
                    if key not in weights:
                        weights[key] = subset_order_weights(int(n_others), m, k)
                    sel = others == n_others
                    c[sel] = D[sel, :n_others] @ weights[key] if n_others > 0 else 1.0
                cols.append(c)
        valid = ~np.isnan(S)
        for t in config.thresholds:
            cols.append(((S > t) & valid).sum(1) / np.maximum(others, 1))
        cols.append(np.where(valid, 1.0 - S, 0.0).sum(1) / np.maximum(others, 1))
        cols.append(U[s:s + block] @ mu)
        cols.append(U[s:s + block] @ prompt_vec)
        out.append(np.stack(cols, 1))
    names = ([f"nn{k}_m{m}" for m in config.subset_sizes for k in config.neighbours]
             + [f"dens{t}" for t in config.thresholds] + ["mean_distance", "cos_centroid", "cos_prompt"])
    return np.concatenate(out), names


def length_stats(texts):
    return np.array([[math.log1p(len(t)), math.log1p(len(word_tokens(t)))] for t in texts])


def context_text(prompt, response):
    return f"{prompt} {response}"


def group_features(embed, prompt, responses, group=None, config=Config()):
    """f(r; x, G) of the module docstring for each response -> float64 [n, F] (group defaults to responses).
    embed(list of texts) -> unit-norm [n, d] (numpy or torch)."""
    responses = list(responses)
    self_group = group is None
    group = responses if self_group else list(group)
    if not group:
        raise ValueError("originality: an empty comparison group")
    position = {t: i for i, t in enumerate(group)}
    self_index = np.arange(len(responses)) if self_group else np.array([position.get(t, -1) for t in responses])
    texts = list(dict.fromkeys([prompt] + responses + group + [context_text(prompt, t) for t in responses + group]))
    vectors = np.asarray(embed(texts), dtype=np.float64)
    row = {t: i for i, t in enumerate(texts)}
    E = lambda ts: vectors[[row[t] for t in ts]]
    p = E([prompt])[0]
    blocks_r, blocks_g = [], []
    for make in (lambda t: t, lambda t: context_text(prompt, t)):
        Ur, Ug = E([make(t) for t in responses]), E([make(t) for t in group])
        stats_r, _ = rarity(Ur, Ug, self_index, p, config)
        stats_g = stats_r if self_group else rarity(Ug, Ug, np.arange(len(group)), p, config)[0]
        blocks_r.append((Ur, Ug, stats_r))
        blocks_g.append(stats_g)
    len_r = length_stats(responses)
    len_g = len_r if self_group else length_stats(group)
    scalars_r = np.hstack([blocks_r[0][2], blocks_r[1][2], len_r])
    scalars_g = np.hstack([blocks_g[0], blocks_g[1], len_g])
    pct = np.stack([percentile_in(scalars_r[:, j], scalars_g[:, j]) for j in range(scalars_r.shape[1])], 1)
    A, C, Cg = blocks_r[0][0], blocks_r[1][0], blocks_r[1][1]
    return np.hstack([C, C - Cg.mean(0), A, scalars_r, pct])


def embedding_dim(n_features, config=Config()):
    """d from F = 3 d + 2 S, S = 2 (statistics per embedding) + 2 length columns (with percentiles)."""
    n_stats = len(config.subset_sizes) * len(config.neighbours) + len(config.thresholds) + 3
    return (n_features - 2 * (2 * n_stats + 2)) // 3


def feature_names(dim, config=Config()):
    _, names = rarity(np.zeros((1, dim)), np.zeros((1, dim)), np.array([-1]), np.zeros(dim), config)
    scalars = [f"a_{s}" for s in names] + [f"c_{s}" for s in names] + ["log_chars", "log_words"]
    return ([f"c{i}" for i in range(dim)] + [f"c_offset{i}" for i in range(dim)] + [f"a{i}" for i in range(dim)]
            + scalars + [f"pct_{s}" for s in scalars])


# ----------------------------------------------------------------------------------------------------
# head

def standardise_within(values, groups):
    """t = (y - mean_g y) / sd_g y per group (sd 0 -> t = 0)."""
    out = np.zeros(len(values))
    for g in np.unique(groups):
        sel = groups == g
        v = values[sel]
        sd = v.std()
        out[sel] = (v - v.mean()) / sd if sd > 0 else 0.0
    return out


def make_mlp(dim, config):
    return torch.nn.Sequential(torch.nn.Dropout(config.dropout), torch.nn.Linear(dim, config.hidden), torch.nn.GELU(),
                               torch.nn.Dropout(config.dropout), torch.nn.Linear(config.hidden, 1))


def train_mlp(Z, t, w, config, seed):
    """Weighted squared error sum w (MLP(z) - t)^2 / sum w, AdamW, one-cycle learning rate, dropout."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    X, T, W = (torch.tensor(a, dtype=torch.float32) for a in (Z, t, w))
    net = make_mlp(Z.shape[1], config)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * ((len(X) + config.batch_size - 1) // config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps)
    for _ in range(config.epochs):
        perm = torch.randperm(len(X), generator=gen)
        for s in range(0, len(X), config.batch_size):
            b = perm[s:s + config.batch_size]
            loss = (W[b] * (net(X[b]).squeeze(-1) - T[b]) ** 2).sum() / W[b].sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def fit_head(F, t, w, config):
    """Weighted feature scaling (mu, sigma), weighted ridge beta (closed form, float64) and the MLP members
    -> dict of float32 tensors. w: row weights (mean 1)."""
    w = w / w.mean()
    mu = w @ F / w.sum()
    sigma = np.sqrt(w @ (F - mu) ** 2 / w.sum()) + 1e-8
    Z = (F - mu) / sigma
    t_mean = float(w @ t / w.sum())
    Zw = Z * w[:, None]
    beta = np.linalg.solve(Zw.T @ Z + config.ridge_lambda * len(Z) * np.eye(Z.shape[1]), Zw.T @ (t - t_mean))
    weights = {"mu": mu, "sigma": sigma, "ridge.beta": beta, "ridge.bias": np.array([t_mean])}
    for m in range(config.mlp_members):
        net = train_mlp(Z, t, w, config, seed=config.seed * 1000 + m)
        for name, value in net.state_dict().items():
            weights[f"mlp{m}.{name}"] = value.numpy()
    return {k: torch.tensor(np.asarray(v), dtype=torch.float32) for k, v in weights.items()}


@torch.no_grad()
def apply_head(weights, F, config):
    """y_hat = w_ridge z.beta + (1 - w_ridge) mean_m MLP_m(z), z = (f - mu) / sigma."""
    Z = torch.tensor((F - weights["mu"].double().numpy()) / weights["sigma"].double().numpy(), dtype=torch.float32)
    ridge = Z @ weights["ridge.beta"] + weights["ridge.bias"]
    if config.mlp_members == 0:
        return ridge.double().numpy()
    mlps = []
    for m in range(config.mlp_members):
        net = make_mlp(Z.shape[1], config).eval()
        net.load_state_dict({k[len(f"mlp{m}."):]: v for k, v in weights.items() if k.startswith(f"mlp{m}.")})
        mlps.append(net(Z).squeeze(-1))
    y = config.ridge_weight * ridge + (1 - config.ridge_weight) * torch.stack(mlps).mean(0)
    return y.double().numpy()


# ----------------------------------------------------------------------------------------------------
# model: fit, predict, save, load

@dataclass
class Model:
    config: Config
    weights: dict
    card: dict = field(default_factory=dict)


def group_rows(rows):
    """{prompt: (responses, scores, task)} in first-seen order; one group per conversation.prompt_key, under the
    prompt's first spelling."""
    groups, first = {}, {}
    for r in rows:
        prompt = first.setdefault(prompt_key(r["prompt"]), r["prompt"])
        g = groups.setdefault(prompt, ([], [], r.get("task") or "(no task)"))
        g[0].append(r["response"])
        g[1].append(float(r["score"]))
    return groups


def featurise(groups, embed, config):
    """Features of every prompt group (each against itself) -> {prompt: [n, F]}."""
    return {p: group_features(embed, p, rs, None, config) for p, (rs, _, _) in groups.items()}


def negative_features(groups, prompts, embed, config):
    """Each prompt's negatives: probes.training_negatives (style "train") built from the answers of `prompts`
    only (in CV, the fold's training prompts), max(negatives_min, round(negatives * n_x)) of each kind, and
    their features against the prompt's human answers -> ({prompt: [n_neg, F]}, {kind: count})."""
    feats, counts = {}, dict.fromkeys(probes.KINDS, 0)
    for p in prompts if config.negatives > 0 else ():
        n = max(config.negatives_min, round(config.negatives * len(groups[p][0])))
        own = set(groups[p][0])
        kinds = {k: [t for t in ts if t not in own] for k, ts in
                 probes.training_negatives(config.seed, p, groups, prompts, n).items()}
        texts = list(dict.fromkeys(t for ts in kinds.values() for t in ts))
        counts.update({k: counts[k] + len(ts) for k, ts in kinds.items()})
        if texts:
            feats[p] = group_features(embed, p, texts, groups[p][0], config)
    return feats, counts


def fit_features(groups, feats, prompts, config, neg_feats=None):
    """The rating head on the prompts' answers (target t, prompt-standardised; row weight n_x^-power) and,
    with negatives, the answer head: target 1 for the answers, 0 for the negatives, each prompt weighing
    n_x^(1 - power) split half and half -> weights (the answer head's prefixed "answer.")."""
    t = [standardise_within(np.array(groups[p][1]), np.zeros(len(groups[p][1]))) for p in prompts]
    n = [len(groups[p][1]) for p in prompts]
    weights = fit_head(np.vstack([feats[p] for p in prompts]), np.concatenate(t),
                       np.concatenate([np.full(k, k ** -config.prompt_weight_power) for k in n]), config)
    neg = [neg_feats[p] if p in (neg_feats or {}) else np.zeros((0, feats[p].shape[1])) for p in prompts]
    if sum(map(len, neg)):
        mass = [k ** (1 - config.prompt_weight_power) / 2 for k in n]
        answer = fit_head(np.vstack([feats[p] for p in prompts] + neg), np.r_[np.ones(sum(n)), np.zeros(sum(map(len, neg)))],
                          np.concatenate([np.full(k, m / k) for k, m in zip(n, mass)]
                                         + [np.full(len(f), m / max(len(f), 1)) for f, m in zip(neg, mass)]),
                          replace(config, mlp_members=config.answer_members))
        weights.update({f"answer.{k}": v for k, v in answer.items()})
    return weights


def predict_features(weights, F, config):
    """y = y_hat(z) + gamma min(0, a(z) - a_0): the rating head, lowered where the answer head a (trained to
    give 1 to human answers, 0 to non-answers and off-topic text) doubts that r answers the prompt."""
    y = apply_head(weights, F, config)
    if "answer.mu" in weights:
        a = apply_head({k[len("answer."):]: v for k, v in weights.items() if k.startswith("answer.")}, F,
                       replace(config, mlp_members=config.answer_members))
        y = y + config.answer_penalty * np.minimum(0.0, a - config.answer_cut)
    return y


def fit(rows, embed, config=Config(), feats=None):
    """Fit on all rating rows (dicts with prompt, response, score[, task]) -> Model."""
    torch.manual_seed(config.seed)
    groups = group_rows(rows)
    feats = featurise(groups, embed, config) if feats is None else feats
    neg_feats, counts = negative_features(groups, list(groups), embed, config)
    weights = fit_features(groups, feats, list(groups), config, neg_feats)
    card = {"training_prompts": list(groups), "n_rows": sum(len(g[0]) for g in groups.values()),
            "negatives": counts, "config": asdict(config), "trained_on": TRAINED_ON}
    return Model(config, weights, card)


def predict(model, prompt, responses, group=None, *, embed):
    """Predicted originality (prompt-standardised human rating scale) of each response to prompt, compared
    against group (default: the responses themselves) -> float64 [n]. The group's own statistics cost
    O(|G|^2): score all responses of a prompt in one call (with a cached embed, 100 responses against a
    4,988-answer group took 1.6 s on one core, 0.2 s against 2,000)."""
    if len(responses) == 0:
        return np.zeros(0)
    F = group_features(embed, prompt, responses, group, model.config)
    return predict_features(model.weights, F, model.config)


def save(model, out_dir):
    from safetensors.torch import save_file
    os.makedirs(out_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.weights.items()}, os.path.join(out_dir, "model.safetensors"))
    card = dict(model.card, config=asdict(model.config))
    with open(os.path.join(out_dir, "card.json"), "w") as f:
        json.dump(json_safe(card), f, indent=1, allow_nan=False)


def load(path):
    """Model from a folder with model.safetensors and card.json (as save writes)."""
    from safetensors.torch import load_file
    files = [os.path.join(path, n) for n in ("model.safetensors", "card.json")]
    for f in files:
        if not os.path.exists(f):
            raise FileNotFoundError(f"{path}: no {os.path.basename(f)} (expected a folder written by `score.py fit`)")
    with open(files[1]) as f:
        card = json.load(f)
    config = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in card["config"].items()})
    return Model(config, load_file(files[0]), card)


def default_path():
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "scorers", "originality")


# ----------------------------------------------------------------------------------------------------
# prompt-grouped cross-validation

def prompt_folds(prompt_tasks, k, seed):
    """{prompt: fold}: each task's prompts shuffled (seeded) and dealt round-robin, so every fold gets a
    share of every task and no prompt is in two folds."""
    rng = np.random.default_rng(seed)
    by_task = {}
    for p, task in prompt_tasks.items():
        by_task.setdefault(task, []).append(p)
    fold, dealt = {}, 0
    for task in sorted(by_task):
        prompts = sorted(by_task[task])
        for i in rng.permutation(len(prompts)):
            fold[prompts[i]] = dealt % k
            dealt += 1
    return fold


def mean_se(values):
    v = np.asarray([x for x in values if not math.isnan(x)])
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    se = v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
    return float(v.mean()), float(se), len(v)


def prompt_metrics(pred, scores, responses, diversity):
    chars = np.array([len(t) for t in responses], dtype=np.float64)
    words = np.array([len(word_tokens(t)) for t in responses], dtype=np.float64)
    return {"spearman": spearman(pred, scores), "partial_chars": partial_spearman(pred, scores, chars),
            "partial_words": partial_spearman(pred, scores, words), "length": spearman(chars, scores),
            "diversity": spearman(diversity, scores), "diversity_partial_chars": partial_spearman(diversity, scores, chars)}


METRICS = ("spearman", "partial_chars", "partial_words", "length", "diversity", "diversity_partial_chars")


def summarise(per_prompt, prompts):
    return {m: dict(zip(("mean", "se", "n"), mean_se([per_prompt[p][m] for p in prompts]))) for m in METRICS}


def cross_validate(rows, embed, k=5, seed=0, config=Config(), feats=None, log=print):
    """Prompt-grouped k-fold CV: fit on k-1 folds' prompts, predict the held-out prompts (each against its
    own responses). Prints and returns the table: per fold, per task and overall mean per-prompt Spearman
    +- SE, pooled Spearman, partial Spearman with length (chars, words) held fixed, and the length and
    diversity baselines (diversity = mean cosine distance to the group's other answers)."""
    groups = group_rows(rows)
    if len(groups) < k:
        raise ValueError(f"originality: {len(groups)} prompts cannot fill {k} folds (use --folds {max(2, len(groups))} or fewer)")
    feats = featurise(groups, embed, config) if feats is None else feats
    diversity_col = feature_names(embedding_dim(feats[next(iter(feats))].shape[1], config), config).index("a_mean_distance")
    fold = prompt_folds({p: g[2] for p, g in groups.items()}, k, seed)
    per_prompt, pooled_pred, pooled_y = {}, [], []
    for f in range(k):
        t0 = time.time()
        train = [p for p in groups if fold[p] != f]
        test = [p for p in groups if fold[p] == f]
        assert not set(train) & set(test)
        neg_feats, _ = negative_features(groups, train, embed, config)  # from the training prompts only
        weights = fit_features(groups, feats, train, config, neg_feats)
        for p in test:
            pred = predict_features(weights, feats[p], config)
            responses, scores, _ = groups[p]
            per_prompt[p] = prompt_metrics(pred, np.array(scores), responses, feats[p][:, diversity_col])
            pooled_pred.append(pred)
            pooled_y.append(scores)
        s = summarise(per_prompt, test)
        log(f"fold {f}: {len(test)} prompts, {sum(len(groups[p][0]) for p in test):,} rows: spearman "
            f"{s['spearman']['mean']:+.3f} +- {s['spearman']['se']:.3f}, partial (chars) {s['partial_chars']['mean']:+.3f}, "
            f"length {s['length']['mean']:+.3f}, diversity {s['diversity']['mean']:+.3f} ({time.time() - t0:.0f} s)")
    tasks = sorted({g[2] for g in groups.values()})
    table = {"folds": k, "seed": seed, "per_task": {}, "per_fold": {},
             "per_prompt": {p: dict(per_prompt[p], task=groups[p][2], n=len(groups[p][0]), fold=fold[p]) for p in groups}}
    for f in range(k):
        table["per_fold"][str(f)] = summarise(per_prompt, [p for p in groups if fold[p] == f])
    for task in tasks:
        table["per_task"][task] = summarise(per_prompt, [p for p in groups if groups[p][2] == task])
    table["overall"] = summarise(per_prompt, list(groups))
    table["overall"]["pooled_spearman"] = spearman(np.concatenate(pooled_pred), np.concatenate(pooled_y))
    log(format_table(table))
    return table


def format_table(table):
    cols = [("spearman", "originality"), ("partial_chars", "partial|chars"), ("partial_words", "partial|words"),
            ("length", "length"), ("diversity", "diversity"), ("diversity_partial_chars", "divers.|chars")]
    head = f"{'':24s} {'prompts':>7s} " + " ".join(f"{name:>15s}" for _, name in cols)
    lines = [f"mean per-prompt Spearman with the human rating on unseen prompts ({table['folds']}-fold, +- SE)", head]
    rows = [(f"fold {f}", s) for f, s in table["per_fold"].items()] + list(table["per_task"].items()) + [("overall", table["overall"])]
    for name, s in rows:
        lines.append(f"{name[:24]:24s} {s['spearman']['n']:7d} "
                     + " ".join(f"{s[m]['mean']:+7.3f} +-{s[m]['se']:5.3f}" for m, _ in cols))
    lines.append(f"pooled Spearman (all held-out rows, predictions on the prompt-standardised scale): "
                 f"{table['overall']['pooled_spearman']:+.3f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# a scorer folder: python score.py fit --scorer originality (fit.py) calls this

def fit_and_save(rows, out, *, encoder, data_path, folds=5, seed=0, cache_dir=None, negatives=Config.negatives,
                 log=print):
    """Fit the scorer on rating rows and write it to the folder `out` (model.safetensors, card.json): first a
    prompt-grouped `folds`-fold cross-validation report (folds = 0 skips it), then the fit on all prompts. The card
    records the data file (name, sha256), the encoder, the CV table and the wall times."""
    t0 = time.time()
    embed = disk_embed(encoder, cache_dir)
    config = Config(seed=seed, negatives=negatives)
    groups = group_rows(rows)
    feats = featurise(groups, embed, config)
    log(f"features of {len(rows):,} responses in {len(groups)} prompt groups: {time.time() - t0:.0f} s")
    table = None
    if folds:
        t1 = time.time()
        table = cross_validate(rows, embed, k=folds, seed=seed, config=config, feats=feats)
        table["wall_s"] = round(time.time() - t1, 1)
        log(f"cross-validation: {table['wall_s']:.0f} s")
    t1 = time.time()
    fitted = fit(rows, embed, config, feats=feats)
    fitted.card.update({"data_file": os.path.basename(data_path), "data_sha256": file_sha256(data_path),
                        "encoder": getattr(encoder, "name", "encoder"), "cv": table,
                        "fit_wall_s": round(time.time() - t1, 1), "features": feature_names(encoder.config.dim, config)})
    save(fitted, out)
    log(f"final fit on {len(groups)} prompts: {time.time() - t1:.0f} s; wrote {out}/model.safetensors, card.json")
    return fitted
