"""The documentation's own checks: README.md stays a ten-minute read (at most 2,500 words of prose and tables,
fenced code blocks not counted), every relative link in README.md, results/README.md and benchmarks/README.md
points at a file (and, for a #fragment, a heading) that exists, and the quick start's command blocks are there
with the files they name. Reads text only: no model runs."""
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
