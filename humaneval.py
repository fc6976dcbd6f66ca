"""Human pairwise evaluation, as the CrPO paper ran it: raters see two responses to the same prompt (A and B, from
two models, order random and seeded) and say which is more creative (A / B / tie). Blinded sheet out, results in.

    python eval.py --models base=default crpo=out/ --data heldout.jsonl --human-sheet sheets/   # or:
    python humaneval.py sheet --from out/eval.json --out sheets/
        -> sheets/sheet.csv, sheets/sheet.html (open in a browser, answer, "Save CSV"), sheets/key.csv (keep it away
           from raters: which model is A and B)
    python humaneval.py results --key sheets/key.csv rater1.csv rater2.csv [--out results.json]

Per model pair (X, Y), each answered item is a win, tie or loss for X; over raters r and items i of prompt p:

    win_rate(X, Y) = sum_p W_p / sum_p N_p     W_p = X's wins on prompt p, N_p = answers on prompt p (ties: tie_rate)
    [lo, hi]       = 95% percentile bootstrap over prompts (intervals.bootstrap_interval, weights N_p)
    Cohen's kappa  = (p_o - p_e) / (1 - p_e)   two raters, items both answered; p_o = share of equal answers,
                                               p_e = sum_c p_1(c) p_2(c) over c in {A, B, tie}
    Fleiss' kappa  = (P - P_e) / (1 - P_e)     m >= 3 raters, items all answered; P = mean_i (sum_c n_ic^2 - m) /
                                               (m (m - 1)), P_e = sum_c p_c^2, p_c = share of all answers that are c
"""
import argparse
import csv
import hashlib
import html
import io
import json
import os
import random
import sys
from collections import Counter, defaultdict

import numpy as np

import files
from intervals import bootstrap_interval

SHEET_COLUMNS = ("item", "prompt", "response_a", "response_b", "choice", "comment")
KEY_COLUMNS = ("item", "prompt_index", "model_a", "model_b", "generation_a", "generation_b")
CHOICES = ("A", "B", "tie")


class SheetError(Exception):
    """A malformed sheet or key (file and row named): the CLI prints it on one line and exits 1."""


# ----------------------------------------------------------------------------------------------------
# The blinded sheet


def make_items(generations, *, seed=0):
    """generations: {model: {prompt: [texts]}} (two or more models, the prompts all of them have). Per prompt and
    model pair (X, Y) in the given model order, one item: a generation of each (seeded pick), shown as A and B in
    seeded random order; items shuffled. -> [{"item", "prompt", "response_a", "response_b", "prompt_index",
    "model_a", "model_b", "generation_a", "generation_b"}]."""
    models = list(generations)
    if len(models) < 2:
        raise SheetError(f"a pairwise sheet needs two or more models (got {', '.join(models) or 'none'})")
    prompts = [p for p in generations[models[0]] if all(generations[m].get(p) for m in models)]
    if not prompts:
        raise SheetError("the models share no prompt with generations: nothing to compare")
    rng = random.Random(seed)
    items = []
    for pi, p in enumerate(prompts):
        for i, x in enumerate(models):
            for y in models[i + 1:]:
                gx, gy = rng.randrange(len(generations[x][p])), rng.randrange(len(generations[y][p]))
                (ma, ga), (mb, gb) = ((x, gx), (y, gy)) if rng.random() < 0.5 else ((y, gy), (x, gx))
                items.append({"prompt": p, "response_a": generations[ma][p][ga], "response_b": generations[mb][p][gb],
                              "prompt_index": pi, "model_a": ma, "model_b": mb, "generation_a": ga, "generation_b": gb})
    rng.shuffle(items)
    width = len(str(len(items)))
    for n, it in enumerate(items, 1):
        it["item"] = f"item-{n:0{width}d}"
    return items


def csv_text(rows, columns):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Which response is more creative?</title>
<style>
body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}
.item{border:1px solid #bbb;border-radius:6px;padding:.8em;margin:1em 0}
.pair{display:flex;gap:1em}.pair div{flex:1;white-space:pre-wrap;background:#f6f6f6;padding:.6em;border-radius:4px}
.prompt{white-space:pre-wrap;font-weight:bold}label{margin-right:1.2em}textarea{width:100%}
#bar{position:sticky;top:0;background:#fff;padding:.5em 0;border-bottom:1px solid #ddd}
</style></head><body>
<div id="bar"><b>Which response is more creative?</b> Pick A, B or tie for every item (a comment is optional), then
<button id="save">Save CSV</button> <span id="progress"></span></div>
<div id="items"></div>
<script id="data" type="application/json">__ITEMS__</script>
<script>
const ITEMS = JSON.parse(document.getElementById("data").textContent);
const COLUMNS = __COLUMNS__, FILE = __FILE__, STORE = "crpo-sheet-" + __STORE__;
const saved = JSON.parse(localStorage.getItem(STORE) || "{}");
function esc(s) { const d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
const root = document.getElementById("items");
ITEMS.forEach((it, n) => {
  const box = document.createElement("div"); box.className = "item";
  box.innerHTML = `<div>${esc(it.item)} (${n + 1} of ${ITEMS.length})</div><p class="prompt">${esc(it.prompt)}</p>
    <div class="pair"><div><b>A</b>\\n${esc(it.response_a)}</div><div><b>B</b>\\n${esc(it.response_b)}</div></div>
    <p>${["A", "B", "tie"].map(c => `<label><input type="radio" name="choice-${n}" value="${c}"> ${c}</label>`).join("")}</p>
    <textarea name="comment-${n}" rows="2" placeholder="comment (optional)"></textarea>`;
  root.appendChild(box);
  const s = saved[it.item] || {};
  if (s.choice) box.querySelector(`input[value="${s.choice}"]`).checked = true;
  box.querySelector("textarea").value = s.comment || "";
});
function answers() {
  return ITEMS.map((it, n) => ({...it, choice: (document.querySelector(`input[name="choice-${n}"]:checked`) || {}).value || "",
                                comment: document.querySelector(`textarea[name="comment-${n}"]`).value}));
}
function update() {
  const a = answers(), kept = {};
  a.forEach(x => { if (x.choice || x.comment) kept[x.item] = {choice: x.choice, comment: x.comment}; });
  localStorage.setItem(STORE, JSON.stringify(kept));  // a reload keeps the answers
  document.getElementById("progress").textContent = a.filter(x => x.choice).length + " of " + a.length + " answered";
}
function cell(v) { v = String(v); return /[",\\n\\r]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; }
document.getElementById("save").addEventListener("click", () => {
  const rows = [COLUMNS.join(",")].concat(answers().map(x => COLUMNS.map(c => cell(x[c])).join(",")));
  const url = URL.createObjectURL(new Blob([rows.join("\\n") + "\\n"], {type: "text/csv"}));
  const link = document.createElement("a"); link.href = url; link.download = FILE;
  document.body.appendChild(link); link.click(); link.remove();
});
root.addEventListener("input", update); root.addEventListener("change", update); update();
</script></body></html>
"""


def sheet_html(items, filename="sheet_filled.csv"):
    """One self-contained page: every item with A / B / tie and a comment box; "Save CSV" downloads the answers
    (columns SHEET_COLUMNS) without any server; answers persist in the browser's localStorage until saved."""
    blob = json.dumps([{c: it[c] for c in ("item", "prompt", "response_a", "response_b")} for it in items],
                      ensure_ascii=False).replace("</", "<\\/")  # a response holding "</script>" cannot end the block
    store = hashlib.sha1(blob.encode()).hexdigest()[:12]  # one localStorage slot per sheet
    return (PAGE.replace("__ITEMS__", blob).replace("__COLUMNS__", json.dumps(list(SHEET_COLUMNS)))
            .replace("__FILE__", json.dumps(html.escape(filename))).replace("__STORE__", json.dumps(store)))


def write_sheet(folder, generations, *, seed=0):
    """sheet.csv + sheet.html (for raters) and key.csv (for you) in folder. -> a line saying what was written."""
    items = make_items(generations, seed=seed)
    files.write_text(os.path.join(folder, "sheet.csv"), csv_text([{**it, "choice": "", "comment": ""} for it in items],
                                                                   SHEET_COLUMNS))
    files.write_text(os.path.join(folder, "sheet.html"), sheet_html(items))
    files.write_text(os.path.join(folder, "key.csv"), csv_text(items, KEY_COLUMNS))
    return (f"wrote a blinded sheet of {len(items)} items ({len(generations)} models) to {folder}/sheet.csv and "
            f"sheet.html; the key (which model is A/B) is {folder}/key.csv: do not give it to raters")


# ----------------------------------------------------------------------------------------------------
# Reading filled sheets


def read_csv(path, columns):
    """[(row number, {column: value})] of a CSV with at least `columns`; SheetError names the file and row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in columns if c not in (reader.fieldnames or [])]
            if missing:
                raise SheetError(f"{path}: no {', '.join(missing)} column (expected the header {','.join(columns)})")
            rows = []
            for n, row in enumerate(reader, 1):
                if None in row or any(v is None for v in row.values()):
                    cells = sum(v is not None for k, v in row.items() if k is not None) + len(row.get(None) or [])
                    raise SheetError(f"{path}: row {n}: {cells} cells, the header has {len(reader.fieldnames)} "
                                     "(a comma inside a cell must be quoted)")
                rows.append((n, row))
            return rows
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise SheetError(f"{path}: cannot read as a UTF-8 CSV ({e})") from None


def read_key(path):
    """{item: key row} from key.csv."""
    key = {}
    for n, row in read_csv(path, KEY_COLUMNS):
        if row["item"] in key:
            raise SheetError(f"{path}: row {n}: item {row['item']!r} appears twice")
        key[row["item"]] = row
    if not key:
        raise SheetError(f"{path}: no items")
    return key


def read_sheet(path, key, *, allow_partial=False):
    """{item: (choice, comment)} of one rater's filled sheet. choice is A, B or tie (any case, surrounding spaces
    ignored); "" only with allow_partial (unanswered). Unknown or repeated items, other choices, an item of the
    key missing from the sheet, and (without allow_partial) an unanswered item raise SheetError naming the row."""
    out = {}
    for n, row in read_csv(path, ("item", "choice", "comment")):
        item, choice = row["item"].strip(), row["choice"].strip()
        if item not in key:
            raise SheetError(f"{path}: row {n}: item {item!r} is not in the key (a sheet of another run?)")
        if item in out:
            raise SheetError(f"{path}: row {n}: item {item!r} appears twice")
        canonical = {c.lower(): c for c in CHOICES}.get(choice.lower())
        if choice and canonical is None:
            raise SheetError(f"{path}: row {n}: choice {choice!r} is not A, B or tie")
        if not choice and not allow_partial:
            raise SheetError(f"{path}: row {n}: item {item!r} has no choice (answer it, or pass --allow-partial to "
                             "count it as unanswered)")
        out[item] = (canonical or "", row["comment"])
    missing = [i for i in key if i not in out]
    if missing:
        raise SheetError(f"{path}: {len(missing)} items of the key are not in the sheet (e.g. {missing[0]}): "
                         "send the whole sheet back")
    return out


# ----------------------------------------------------------------------------------------------------
# Win rates and agreement


def outcome(key_row, choice, first):
    """"win" / "tie" / "loss" for model `first` of an answered item."""
    if choice == "tie":
        return "tie"
    winner = key_row["model_a"] if choice == "A" else key_row["model_b"]
    return "win" if winner == first else "loss"


def cohen_kappa(x, y):
    """Cohen's kappa of two raters' labels of the same items (module docstring); None when p_e = 1 (one label)."""
    n = len(x)
    po = sum(a == b for a, b in zip(x, y)) / n
    cx, cy = Counter(x), Counter(y)
    pe = sum(cx[c] * cy[c] for c in set(x) | set(y)) / n ** 2
    return None if pe == 1 else (po - pe) / (1 - pe)


def fleiss_kappa(labels):
    """Fleiss' kappa of labels [items][raters] (module docstring); None when P_e = 1 (one label throughout)."""
    m = len(labels[0])
    counts = [Counter(row) for row in labels]
    P = np.mean([(sum(v * v for v in c.values()) - m) / (m * (m - 1)) for c in counts])
    total = Counter()
    for c in counts:
        total.update(c)
    pe = sum((v / (len(labels) * m)) ** 2 for v in total.values())
    return None if pe == 1 else float((P - pe) / (1 - pe))


def results(key, sheets, *, n_boot=1000, seed=0):
    """key: read_key(); sheets: {rater: read_sheet()}. -> {"pairs": {"X vs Y": {"win", "tie", "loss": {"mean", "lo",
    "hi"}, "answers", "prompts"}}, "agreement": {...}, "unanswered": {rater: n}, "comments": [...]}."""
    models = list(dict.fromkeys(m for r in key.values() for m in (r["model_a"], r["model_b"])))
    order = {m: i for i, m in enumerate(models)}
    per_pair = defaultdict(lambda: defaultdict(Counter))  # (X, Y) -> prompt -> Counter(win/tie/loss for X)
    comments = []
    for rater, answers in sheets.items():
        for item, (choice, comment) in answers.items():
            k = key[item]
            x, y = sorted((k["model_a"], k["model_b"]), key=order.get)
            if choice:
                per_pair[x, y][k["prompt_index"]][outcome(k, choice, x)] += 1
            if comment.strip():
                comments.append({"rater": rater, "item": item, "choice": choice, "model_a": k["model_a"],
                                 "model_b": k["model_b"], "comment": comment})
    pairs = {}
    for (x, y), by_prompt in per_pair.items():
        n = [sum(c.values()) for c in by_prompt.values()]
        block = {"answers": int(sum(n)), "prompts": len(n)}
        for o in ("win", "tie", "loss"):
            mean, lo, hi = bootstrap_interval([c[o] / t for c, t in zip(by_prompt.values(), n)], n, n_boot=n_boot, seed=seed)
            block[o] = {"mean": mean, "lo": lo, "hi": hi}
        pairs[f"{x} vs {y}"] = block
    raters = list(sheets)
    both = [i for i in key if all(sheets[r][i][0] for r in raters)]
    agreement = {"raters": len(raters), "items_all_answered": len(both)}
    if len(raters) == 2 and both:
        agreement["cohen_kappa"] = cohen_kappa(*[[sheets[r][i][0] for i in both] for r in raters])
    elif len(raters) > 2 and both:
        agreement["fleiss_kappa"] = fleiss_kappa([[sheets[r][i][0] for r in raters] for i in both])
    unanswered = {r: sum(not c for c, _ in sheets[r].values()) for r in raters}
    return {"pairs": pairs, "agreement": agreement, "unanswered": unanswered, "comments": comments}


def results_lines(res):
    lines = []
    for name, b in res["pairs"].items():
        cells = [f"{o} {b[o]['mean']:.3f} [{b[o]['lo']:.3f}, {b[o]['hi']:.3f}]" for o in ("win", "tie", "loss")]
        lines.append(f"{name}: " + "  ".join(cells) + f"  ({b['answers']} answers, {b['prompts']} prompts; "
                     f"win/tie/loss of the first model)")
    a = res["agreement"]
    kappa = a.get("cohen_kappa", a.get("fleiss_kappa"))
    name = "Cohen's kappa" if "cohen_kappa" in a else "Fleiss' kappa"
    if a["raters"] > 1:
        lines.append(f"{name} over {a['items_all_answered']} items every rater answered: "
                     + ("undefined (one answer throughout)" if kappa is None else f"{kappa:.3f}"))
    if any(res["unanswered"].values()):
        lines.append("unanswered items: " + ", ".join(f"{r} {n}" for r, n in res["unanswered"].items()))
    if res["comments"]:
        lines.append(f"{len(res['comments'])} comments (in the JSON with --out)")
    return lines


# ----------------------------------------------------------------------------------------------------
# CLI


def main(argv=None):
    ap = argparse.ArgumentParser(description="Blinded pairwise human evaluation: make the sheet, score filled sheets.")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sheet", help="a blinded sheet from eval.py's output JSON (its models' generations)")
    s.add_argument("--from", dest="source", required=True, help="eval.py --out JSON (two or more models)")
    s.add_argument("--out", required=True, help="folder for sheet.csv, sheet.html and key.csv")
    s.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("results", help="win / tie / loss per model pair and rater agreement")
    r.add_argument("sheets", nargs="+", help="filled sheets (CSV), one per rater")
    r.add_argument("--key", required=True, help="the key.csv written with the sheet")
    r.add_argument("--allow-partial", action="store_true", help="count unanswered items (reported) instead of failing")
    r.add_argument("--bootstrap", type=int, default=1000)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", help="also write everything (comments included) as JSON here")
    args = ap.parse_args(argv)
    try:
        if args.command == "sheet":
            try:
                with open(args.source, encoding="utf-8") as f:
                    out = json.load(f)
                generations = {name: m["generations"] for name, m in out["models"].items()}
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise SheetError(f"{args.source}: not an eval.py output with models' generations ({e})") from None
            print(write_sheet(args.out, generations, seed=args.seed))
            return 0
        key = read_key(args.key)
        names = [os.path.splitext(os.path.basename(p))[0] for p in args.sheets]
        if len(set(names)) < len(names):
            names = args.sheets
        sheets = {n: read_sheet(p, key, allow_partial=args.allow_partial) for n, p in zip(names, args.sheets)}
        res = results(key, sheets, n_boot=args.bootstrap, seed=args.seed)
        print("\n".join(results_lines(res)))
        if args.out:
            files.write_text(args.out, json.dumps(res, ensure_ascii=False, indent=1) + "\n")
            print(f"wrote {args.out}")
        return 0
    except SheetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
