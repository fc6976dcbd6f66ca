"""The documentation's own checks: README.md stays a ten-minute read (at most 2,500 words of prose and tables,
fenced code blocks not counted), every relative link in README.md, results/README.md and benchmarks/README.md
points at a file (and, for a #fragment, a heading) that exists, the quick start's command blocks are there with
the files they name, every `python -m MODULE` / `python FILE.py` the three documents give names a file of this
layout, every crpo.py flag README.md writes is in crpo.py's parser (read from its add_argument calls), and the
reading order's file:line rows point at what they name. Reads text only: no imports of the project, no model runs."""
import os
import re
import unicodedata

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ("README.md", "results/README.md", "benchmarks/README.md")
README_MAX_WORDS = 2500

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def strip_fenced(text):
    """The text without its fenced code blocks (``` or ~~~, closed by a fence of the same character at least as
    long, as CommonMark closes them; an unclosed fence runs to the end of the file)."""
    out, fence = [], None
    for line in text.splitlines():
        m = FENCE.match(line)
        if fence is None:
            if m:
                fence = m.group(1)
            else:
                out.append(line)
        elif m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
            if not line.strip()[len(m.group(1)):].strip():  # a closing fence carries no info string
                fence = None
    return "\n".join(out)


def word_count(text):
    """Words of prose and tables as `wc -w` counts them (runs of non-whitespace), fenced code blocks excluded;
    table pipes and separator rows count too, so this is the stricter count."""
    return len(strip_fenced(text).split())


def slug(heading):
    """GitHub's anchor for a heading: lower-cased, markup and punctuation dropped (letters, digits, '-', '_' and
    spaces kept), spaces turned into '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = unicodedata.normalize("NFC", text.replace("`", "")).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in "-_ ")
    return text.replace(" ", "-")


def anchors(text):
    """Every heading's anchor in a Markdown file, GitHub's way (a repeated slug gets -1, -2, ...)."""
    seen, out = {}, set()
    for line in strip_fenced(text).splitlines():
        m = HEADING.match(line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return out


def relative_links(text):
    """(target, fragment) of every link and image outside fenced code and inline code that is not a URL."""
    prose = re.sub(r"`[^`\n]*`", "", strip_fenced(text))
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        yield path, fragment


# ---- the helpers on hand-made cases (so the checks below can fail) -------------------------------------------

def test_word_count_excludes_fenced_blocks_only():
    text = "one two\n\n```bash\nnot counted here\n```\n\n| a | b |\n|---|---|\n\n~~~\nnor this\n~~~\nthree\n    four"
    # one two | a | b | |---|---| three four  -> 2 + 5 + 1 + 1 + 1
    assert word_count(text) == 10
    assert word_count("```\nunclosed fence\nstill code") == 0


def test_slug_and_links_on_hand_cases():
    assert slug("v2: margin-weighted (`--weight-on margin`), not the authors' setting") == \
        "v2-margin-weighted---weight-on-margin-not-the-authors-setting"
    assert slug("The method") == "the-method"
    text = "# A b\n## A b\n[x](a.md#sec) ![i](pic.png) [u](https://e.org/x) `[c](code.md)`\n```\n[y](fenced.md)\n```"
    assert anchors(text) == {"a-b", "a-b-1"}
    assert list(relative_links(text)) == [("a.md", "sec"), ("pic.png", "")]


# ---- the documents --------------------------------------------------------------------------------------------

def test_readme_is_a_ten_minute_read():
    n = word_count(read("README.md"))
    assert 500 < n <= README_MAX_WORDS, f"README.md has {n} words of prose and tables (limit {README_MAX_WORDS}): " \
                                        f"move detail to results/README.md or benchmarks/README.md"


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_point_at_existing_files(doc):
    text = read(doc)
    base = os.path.dirname(os.path.join(ROOT, doc))
    links = list(relative_links(text))
    assert links, f"{doc}: no relative links found (the other documents should be linked)"
    broken = []
    for path, fragment in links:
        target = os.path.normpath(os.path.join(base, path)) if path else os.path.join(ROOT, doc)
        if not os.path.exists(target):
            broken.append(f"{path} (no such file)")
        elif fragment and target.endswith(".md") and fragment not in anchors(open(target, encoding="utf-8").read()):
            broken.append(f"{path}#{fragment} (no such heading)")
    assert not broken, f"{doc}: broken links: {', '.join(broken)}"


def test_readme_links_the_results_and_benchmarks_documents():
    targets = {p for p, _ in relative_links(read("README.md"))}
    assert {"results/README.md", "benchmarks/README.md"} <= targets


def test_quick_start_command_blocks_exist():
    text = read("README.md")
    m = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.M | re.S)
    assert m, "README.md: no '## Quick start' section"
    blocks = re.findall(r"^```bash\n(.*?)^```", m.group(1), re.M | re.S)
    train = [b for b in blocks if "crpo.py --data examples/muce_sample.jsonl" in b]
    tests = [b for b in blocks if "pytest" in b and " tests" in b]
    assert train and tests, "the quick start must hold the main job's and the tests' command blocks"
    for block in train + tests:
        for name in re.findall(r"-r (\S+)", block):
            assert os.path.isfile(os.path.join(ROOT, name)), f"quick start names {name}, which does not exist"
    assert os.path.isfile(os.path.join(ROOT, "examples", "muce_sample.jsonl"))
    # the printed final validation line the quick start promises is shown in the section
    assert "validation: loss" in m.group(1)


# ---- the commands the documents give run on this layout (grep-level: nothing is imported or run) ---------------

# `python -m NAME` for a module that is not the project's (the quick start's venv, pip and pytest)
OTHER_MODULES = {"venv", "pip", "pytest"}
# python FILE.py / python -m MODULE / torchrun [its flags] FILE.py, up to the end of the command (&&, ;, |, a
# closing backquote, the line's end); a backslash-newline continues the command
COMMAND = re.compile(r"(?:\bpython3?|\.venv/bin/python|\btorchrun(?:\s+--\S+)*)\s+(?:-m\s+([\w.]+)|([\w./-]+\.py))"
                     r"((?:[^`\n&;|]|\|(?=\S))*)")
# a command kept as the record of how a number was measured at an older revision (`git checkout 212b3a0 && ...`,
# `... # at git 47fbc91`): it names that revision on its line and need not run on today's layout
OLD_REVISION = re.compile(r"\bgit (?:checkout )?[0-9a-f]{7,40}\b")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)(?![\w<*-])")
# crpo.py's parser is flags.parse_args; these files hold its add_argument calls
CRPO_PARSER_FILES = ("flags.py", "pairs.py", "splits.py", "presets.py")


def doc_commands(text):
    """(module or None, file or None, the command's words after it) for every python / torchrun command in a
    Markdown text, fenced or inline; commands on a line that names an older git revision are left out."""
    text = re.sub(r"\\\n\s*", " ", text)  # shell line continuations
    for line in text.splitlines():
        if OLD_REVISION.search(line):
            continue
        for m in COMMAND.finditer(line):
            yield m.group(1), m.group(2), m.group(3).split("#")[0]  # a shell comment is not the command


def flags_in(words):
    """The --flags written in a command or a text; a placeholder (--lambda-<name>) is not one."""
    return [f for f in FLAG.findall(words) if not f.endswith("-")]


def add_argument_flags(source):
    """The option strings of every add_argument call (or its alias `a(`) in a Python source, with argparse's
    --no-X for a BooleanOptionalAction; f-strings are returned with their {placeholders}."""
    out = set()
    for m in re.finditer(r"(?:add_argument|\ba)\(\s*f?\"(--[^\"]+)\"([^\n]*)", source):
        out.add(m.group(1))
        if "BooleanOptionalAction" in m.group(2):
            out.add("--no-" + m.group(1)[2:])
    return out


def crpo_flags():
    """Every flag crpo.py's parser accepts, read from the files that build it: the literal ones, --lambda-<dim>
    and --score-<dim> for each registry.dimension(...), and score.add_scorer_flags' --score-normalize / -gate."""
    dims = re.findall(r"^dimension\(\"(\w+)\"", read("registry.py"), re.M)
    score_src = read("score.py")
    scorer_flags = score_src[score_src.index("def add_scorer_flags"):]
    scorer_flags = scorer_flags[:scorer_flags.index("\ndef ")]
    found = set().union(*(add_argument_flags(read(f)) for f in CRPO_PARSER_FILES))
    found |= {f.replace("{prefix}", "score-") for f in add_argument_flags(scorer_flags)}
    out = {"--help"}
    for f in found:
        out |= {f.replace("{name}", d) for d in dims} if "{name}" in f else {f}
    return out


def test_command_helpers_on_hand_cases():
    text = ("`python -m experiments.probe_scores --out x.json` and\n```bash\npython crpo.py --data d.jsonl \\\n"
            "    --lora-rank 16 --lambda-<name> 1   # --not-this\ngit checkout 0123abc && python gone.py --old\n"
            "python3 -m venv .venv && .venv/bin/python -m pytest -q tests\n"
            "torchrun --nproc_per_node=8 crpo.py --data m.jsonl | tee log\n```\n")
    got = [(mod, path, flags_in(rest)) for mod, path, rest in doc_commands(text)]
    assert got == [("experiments.probe_scores", None, ["--out"]), (None, "crpo.py", ["--data", "--lora-rank"]),
                   ("venv", None, []), ("pytest", None, []), (None, "crpo.py", ["--data"])]
    src = 'a("--beta", type=float)\np.add_argument("--final-state", action=argparse.BooleanOptionalAction)\n' \
          'ap.add_argument(f"--{prefix}gate", nargs="?")\nprint("--not-a-flag")\n'
    assert add_argument_flags(src) == {"--beta", "--final-state", "--no-final-state", "--{prefix}gate"}
    flags = crpo_flags()
    assert {"--data", "--lora-rank", "--lambda-novelty", "--score-originality", "--score-gate", "--divpo-pool",
            "--split-column", "--preset", "--no-final-state"} <= flags
    assert not {"--dims", "--normalize", "--lambda-", "--nonexistent"} & flags  # score.py's own flags are not crpo's


@pytest.mark.parametrize("doc", DOCS)
def test_commands_name_existing_modules_and_files(doc):
    missing = []
    for mod, path, _ in doc_commands(read(doc)):
        if mod is not None:
            if mod in OTHER_MODULES:
                continue
            base = os.path.join(ROOT, *mod.split("."))
            if not (os.path.isfile(base + ".py") or os.path.isfile(os.path.join(base, "__main__.py"))):
                missing.append(f"python -m {mod}")
        elif not os.path.isfile(os.path.join(ROOT, path)):
            missing.append(f"python {path}")
    assert not missing, f"{doc}: commands name modules or files that do not exist: {', '.join(missing)} " \
                        f"(a command kept from an older layout names its revision on the line: git checkout REV)"


def test_readme_crpo_flags_exist():
    """Every --flag of a `python crpo.py` / `torchrun ... crpo.py` command in README.md, and every flag the
    'Train: crpo.py' section names in its prose, is one crpo.py's parser has."""
    text = read("README.md")
    used = [f for mod, path, rest in doc_commands(text) if path == "crpo.py" for f in flags_in(rest)]
    m = re.search(r"^### Train: crpo\.py\n(.*?)(?=^##)", text, re.M | re.S)
    assert m, "README.md: no '### Train: crpo.py' section"
    used += flags_in(re.sub(r"\btorchrun\s+--\S+", "", m.group(1)))
    assert len(used) > 20
    unknown = sorted(set(used) - crpo_flags())
    assert not unknown, f"README.md names crpo.py flags that flags.parse_args does not have: {', '.join(unknown)}"


def test_readme_reading_order_lines():
    """The reading order's `module.name  file.py:N` rows: line N of that file defines name (def or class); a row
    whose first column is not a name quotes line N in its third column."""
    text = read("README.md")
    m = re.search(r"\*\*Reading order\*\*.*?\n```\n(.*?)^```", text, re.M | re.S)
    assert m, "README.md: no reading-order block under **Reading order**"
    rows = re.findall(r"^\s*(.+?)\s{2,}([\w/]+\.py):(\d+)\s+(.*)$", m.group(1), re.M)
    assert len(rows) >= 8
    wrong = []
    for ref, path, n, rest in rows:
        lines = read(path).splitlines()
        line = lines[int(n) - 1] if int(n) <= len(lines) else ""
        if re.fullmatch(r"\w+\.\w+", ref):
            name = ref.split(".")[1]
            if not re.match(rf"\s*(?:def|class) {name}\b", line):
                now = [i + 1 for i, s in enumerate(lines) if re.match(rf"(?:def|class) {name}\b", s)]
                wrong.append(f"{ref} is not at {path}:{n} (now: {path}:{now[0] if now else 'gone'})")
        elif rest.strip() not in line:
            wrong.append(f"{path}:{n} does not read {rest.strip()!r}")
    assert not wrong, "README.md's reading order is out of date: " + "; ".join(wrong)
