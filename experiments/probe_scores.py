"""Can the creativity scores be gamed? Each scorer's percentile of probe answers (gibberish, random words,
unrelated text, answers to other prompts, non-answers, ...) among the human answers, on held-out prompts.

Human raters put every probe near the bottom; a score that puts one high rewards a model for producing it.
The prompts of one fold of originality.prompt_folds (seed 0) are held out: the originality scorers
("before": no negatives, as shipped before; "after": trained with probes.training_negatives) and the
relevance scorer are fitted on the other prompts here, so no held-out prompt or answer is seen in fitting.
For each held-out prompt: 100 of its human answers (seeded sample) and, per probe kind, n probes of
probes.py's style "heldout" (building blocks disjoint from the training negatives), other_prompt = answers to
the other held-out prompts, and unrelated_kept_aside = NoveltyBench's prompts and paraphrases (natural
requests no scorer was built with). Each kind is scored as eval.py scores generations: the group is the
human answers plus that kind's probes, originality and relevance compare with the human answers, DSI
novelty's C is the human answers. A probe's percentile = (#humans below + #ties / 2) / #humans on the raw
score, and each cell is the median over all probes of the kind (with the range of the per-prompt medians).
Conditions: before, after, after + relevance gate (score.py's --gate 0.5).

    python -m experiments.probe_scores --out results/probes.json [--fold 0] [--per-kind 12] [--dims ...]
"""
import argparse
import json
import os
import tempfile
import time

import numpy as np

import cache
import checkpoint
import data
import encoder as sentence_encoder
import originality
import probes
import relevance
import score

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEPT_ASIDE = os.path.join(ROOT, "..", "shared", "data", "noveltybench", "curated.jsonl")
KINDS = probes.KINDS + ("unrelated_kept_aside",)


def kept_aside_texts(path):
    """NoveltyBench's prompts and their paraphrases: fluent requests about anything but the test items."""
    texts = []
    with open(path) as f:
        for line in f:
            row = json.loads(line)
            texts += [row["prompt"]] + list(row.get("prompt_paraphrases", []))
    return texts


def make_probe_sets(groups, test, per_kind, humans, seed, kept_aside):
    """{prompt: {kind: [texts]}}: style "heldout" probes; other_prompt from the other held-out prompts."""
    rng = np.random.default_rng(seed)
    out = {}
    for p in test:
        sets = probes.training_negatives(rng, p, groups, test, per_kind, probes.KINDS, style="heldout")
        human_set = set(humans[p])
        sets["unrelated_kept_aside"] = [kept_aside[i] for i in rng.choice(len(kept_aside), per_kind, replace=False)]
        out[p] = {k: [t for t in dict.fromkeys(ts) if t not in human_set] for k, ts in sets.items()}
    return out


def held_out_fold(groups, fold):
    """(test, train) prompts: fold `fold` of originality.prompt_folds (5 folds, seed 0) held out."""
    folds = originality.prompt_folds({p: g[2] for p, g in groups.items()}, 5, 0)
    return [p for p in groups if folds[p] == fold], [p for p in groups if folds[p] != fold]


def humans_and_probes(groups, test, humans=100, per_kind=12, seed=0):
    """The measuring set of each held-out prompt: a seeded sample of its human answers and make_probe_sets'
    probes -> ({prompt: [answers]}, {prompt: {kind: [texts]}})."""
    rng = np.random.default_rng(seed)
    sample = {p: [groups[p][0][i] for i in sorted(rng.choice(len(groups[p][0]), min(humans, len(groups[p][0])),
                                                             replace=False))] for p in test}
    return sample, make_probe_sets(groups, test, per_kind, sample, seed + 1, kept_aside_texts(KEPT_ASIDE))


def percentiles(groups_scores, dims):
    """[(kind, prompt, dim, percentile of each probe)] from {(prompt, kind): (raw results, n_humans)}."""
    out = []
    for (p, kind), (res, n_h) in groups_scores.items():
        for d in dims:
            raw = res[f"{d}_raw"]
            out.append((kind, p, d, originality.percentile_in(raw[n_h:], raw[:n_h])))
    return out


def summarise(rows, dims):
    table = {}
    for kind in KINDS:
        for d in dims:
            sel = [r for r in rows if r[0] == kind and r[2] == d]
            if not sel:
                continue
            allp = np.concatenate([r[3] for r in sel])
            per_prompt = [float(np.median(r[3])) for r in sel if len(r[3])]
            table.setdefault(kind, {})[d] = {"median": float(np.median(allp)), "n": int(len(allp)),
                                             "prompt_medians": [min(per_prompt), max(per_prompt)]}
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(ROOT, "data", "dt_ratings.jsonl.gz"))
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "probes.json"))
    ap.add_argument("--fold", type=int, default=0, help="which of 5 prompt-grouped folds is held out")
    ap.add_argument("--humans", type=int, default=100, help="human answers per held-out prompt")
    ap.add_argument("--per-kind", type=int, default=12, help="probes of each kind per held-out prompt")
    ap.add_argument("--dims", default="originality,novelty,diversity,surprise,quality")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", help="score cache (default: $CRPO_CACHE or .cache/crpo)")
    args = ap.parse_args(argv)
    dims = args.dims.split(",")
    t0 = time.time()
    rows, _ = data.read_rows(args.data)
    groups = originality.group_rows(rows)
    test, train = held_out_fold(groups, args.fold)
    train_set = set(train)
    encoder = sentence_encoder.load_encoder(None)
    embed = cache.disk_embed(encoder, args.cache_dir)
    train_rows = [r for r in rows if r["prompt"] in train_set]
    feats = originality.featurise(originality.group_rows(train_rows), embed, originality.Config())
    work = tempfile.mkdtemp(prefix="probe_scores_")
    fitted = {}
    for name, config in (("before", originality.Config(negatives=0.0)), ("after", originality.Config())):
        model = originality.fit(train_rows, embed, config, feats=feats)
        originality.save(model, os.path.join(work, name))
        fitted[name] = model.card.get("negatives", {})
    relevance.save(relevance.fit(groups, train, embed, args.seed), {"training_prompts": train},
                   os.path.join(work, "relevance"))
    print(f"fitted on {len(train)} prompts in {time.time() - t0:.0f} s; held out {len(test)}: "
          + "; ".join(p[:60] for p in test), flush=True)

    humans, probe_sets = humans_and_probes(groups, test, args.humans, args.per_kind, args.seed)
    lm, tokenizer = checkpoint.load(None) if {"surprise", "quality"} & set(dims) else (None, None)  # loaded once
    conditions = {"before": ("before", None), "after": ("after", None), "after_gate": ("after", relevance.THRESHOLD)}
    tables, detail = {}, {}
    for cond, (scorer_name, gate) in conditions.items():
        t1 = time.time()
        scored = {}
        for p in test:
            for kind, texts in probe_sets[p].items():
                group = {"prompt": p, "responses": humans[p] + texts}
                res, _ = score.score_groups([group], dims, model=lm, tokenizer=tokenizer, encoder=encoder,
                                            cache_dir=args.cache_dir,
                                            reference={p: humans[p]}, population={p: humans[p]}, gate=gate,
                                            show_progress=False, originality=f"model {os.path.join(work, scorer_name)}",
                                            relevance=f"model {os.path.join(work, 'relevance')}")
                scored[p, kind] = (res[0], len(humans[p]))
        rows_pct = percentiles(scored, dims)
        tables[cond] = summarise(rows_pct, dims)
        detail[cond] = [{"kind": k, "prompt": p, "dim": d, "percentiles": [round(float(x), 4) for x in v]}
                        for k, p, d, v in rows_pct]
        print(f"{cond}: scored in {time.time() - t1:.0f} s", flush=True)
        for kind in KINDS:
            print(f"  {kind:22s} " + "  ".join(f"{d} {tables[cond][kind][d]['median']:.2f}" for d in dims))
    out = {"config": dict(vars(args), held_out_prompts=test, training_prompts=len(train),
                          negatives_after=fitted["after"], gate_threshold=relevance.THRESHOLD,
                          wall_s=round(time.time() - t0, 1)),
           "probes": probe_sets, "median_percentile": tables, "detail": detail}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(originality.json_safe(out), f, indent=1, ensure_ascii=False)
    print(f"wrote {args.out} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
