"""humaneval.py: the blinded sheet (seeded, complete, key maps back), win rates and kappas against hand
computations, one-line errors for malformed sheets, and the HTML page driven in headless Chromium."""
import csv
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

import humaneval as he

GENERATIONS = {
    "base": {"p1": ["b1a", "b1b"], "p2": ["b2a", "b2b"], "p3": ["b3a"]},
    "crpo": {"p1": ["c1a", "c1b"], "p2": ["c2a", "c2b"], "p3": ["c3a"]},
    "dpo": {"p1": ["d1a"], "p2": ["d2a"], "p3": ["d3a", "d3b"]},
}


def write_csv(path, header, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_sheet_is_blinded_complete_and_seeded(tmp_path):
    items = he.make_items(GENERATIONS, seed=3)
    assert len(items) == 3 * 3  # 3 prompts x 3 model pairs
    pairs = {(it["prompt"], frozenset((it["model_a"], it["model_b"]))) for it in items}
    assert len(pairs) == 9
    for it in items:  # the key maps back to the shown texts
        assert GENERATIONS[it["model_a"]][it["prompt"]][it["generation_a"]] == it["response_a"]
        assert GENERATIONS[it["model_b"]][it["prompt"]][it["generation_b"]] == it["response_b"]
    assert {it["model_a"] for it in items} == {"base", "crpo", "dpo"}  # each model appears as A somewhere
    assert he.make_items(GENERATIONS, seed=3) == items
    assert he.make_items(GENERATIONS, seed=4) != items
    print(he.write_sheet(str(tmp_path), GENERATIONS, seed=3))
    sheet = list(csv.DictReader(open(tmp_path / "sheet.csv", encoding="utf-8")))
    assert list(sheet[0]) == list(he.SHEET_COLUMNS) and "model_a" not in sheet[0]
    assert all(r["choice"] == "" for r in sheet) and len(sheet) == 9
    page = (tmp_path / "sheet.html").read_text()
    assert all(name not in page.replace("crpo-sheet-", "") for name in GENERATIONS)  # blinded
    assert all(it["response_a"] in page and it["response_b"] in page for it in items)
    with pytest.raises(he.SheetError):
        he.make_items({"base": GENERATIONS["base"]})


def hand_key(tmp_path):
    # items i1..i4 of models X and Y; prompts 0, 0, 1, 2; A/B orders X-Y, Y-X, X-Y, Y-X
    return write_csv(tmp_path / "key.csv", he.KEY_COLUMNS, [
        ["i1", 0, "X", "Y", 0, 0], ["i2", 0, "Y", "X", 0, 1], ["i3", 1, "X", "Y", 0, 0], ["i4", 2, "Y", "X", 0, 0]])


def sheet(tmp_path, name, choices, comments=("",) * 4):
    rows = [[f"i{n}", "p", "a", "b", c, m] for n, (c, m) in enumerate(zip(choices, comments), 1)]
    return write_csv(tmp_path / f"{name}.csv", he.SHEET_COLUMNS, rows)


def test_win_rates_and_cohen_kappa_by_hand(tmp_path):
    key = he.read_key(hand_key(tmp_path))
    r1 = he.read_sheet(sheet(tmp_path, "r1", ["A", "A", "tie", "B"], ["", "close call", "", ""]), key)
    r2 = he.read_sheet(sheet(tmp_path, "r2", ["a", " B ", "B", "Tie"]), key)
    res = he.results(key, {"r1": r1, "r2": r2}, n_boot=500)
    # X's outcomes: r1: win, loss, tie, win; r2: win, win, loss, tie -> 4 wins, 2 ties, 2 losses of 8
    b = res["pairs"]["X vs Y"]
    assert (b["win"]["mean"], b["tie"]["mean"], b["loss"]["mean"]) == (0.5, 0.25, 0.25)
    assert b["answers"] == 8 and b["prompts"] == 3
    assert b["win"]["lo"] <= 0.5 <= b["win"]["hi"] and b["win"]["lo"] < b["win"]["hi"]
    # r1 [A, A, tie, B], r2 [A, B, B, tie]: p_o = 1/4, p_e = (2*1 + 1*2 + 1*1)/16 = 5/16 -> kappa = -1/11
    assert res["agreement"]["cohen_kappa"] == pytest.approx(-1 / 11, abs=1e-12)
    assert res["comments"] == [{"rater": "r1", "item": "i2", "choice": "A", "model_a": "Y", "model_b": "X",
                                "comment": "close call"}]


def test_kappas_by_hand():
    # p_o = 3/4, p_e = 5/16 -> (3/4 - 5/16) / (11/16) = 7/11
    assert he.cohen_kappa(["A", "A", "B", "tie"], ["A", "B", "B", "tie"]) == pytest.approx(7 / 11, abs=1e-12)
    # P_i = 1, 1/3, 1/3, 1 -> P = 2/3; p = (A 4, B 6, tie 2)/12 -> P_e = 7/18; kappa = (2/3 - 7/18) / (11/18) = 5/11
    labels = [["A", "A", "A"], ["A", "B", "B"], ["tie", "tie", "B"], ["B", "B", "B"]]
    assert he.fleiss_kappa(labels) == pytest.approx(5 / 11, abs=1e-12)
    assert he.cohen_kappa(["A", "A"], ["A", "A"]) is None


def test_three_raters_report_fleiss_and_partial_sheets_are_counted(tmp_path, capsys):
    key_path = hand_key(tmp_path)
    paths = [sheet(tmp_path, "r1", ["A", "A", "tie", "B"]), sheet(tmp_path, "r2", ["A", "B", "B", "tie"]),
             sheet(tmp_path, "r3", ["A", "", "B", "B"], ["", "unsure", "", ""])]
    assert he.main(["results", "--key", key_path, *paths]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {paths[2]}: row 2: item 'i2' has no choice") and "\n" not in err
    assert he.main(["results", "--key", key_path, *paths, "--allow-partial", "--out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "unanswered items: r1 0, r2 0, r3 1" in out and "Fleiss' kappa over 3 items" in out
    res = json.loads((tmp_path / "r.json").read_text())
    # items 1, 3, 4 answered by all: [A, A, A], [tie, B, B], [B, tie, B] -> P = (1 + 1/3 + 1/3)/3 = 5/9;
    # p = (A 3, B 4, tie 2)/9 -> P_e = 29/81; kappa = (5/9 - 29/81) / (52/81) = 16/52
    assert res["agreement"]["fleiss_kappa"] == pytest.approx(16 / 52, abs=1e-12)
    assert res["comments"][0]["comment"] == "unsure" and res["comments"][0]["choice"] == ""


@pytest.mark.parametrize("rows, message", [
    ([["i1", "p", "a", "b", "C", ""]], "row 1: choice 'C' is not A, B or tie"),
    ([["i9", "p", "a", "b", "A", ""]], "row 1: item 'i9' is not in the key"),
    ([["i1", "p", "a", "b", "A", ""], ["i1", "p", "a", "b", "B", ""]], "row 2: item 'i1' appears twice"),
    ([["i1", "p", "a", "b", "A", ""]], "3 items of the key are not in the sheet (e.g. i2)"),
    ([["i1", "p", "a", "b", "A", "", "extra"]], "row 1: 7 cells, the header has 6"),
    ([["i1", "p", "a", "b", "A", ""], ["i2", "p"]], "row 2: 2 cells, the header has 6"),
])
def test_malformed_sheets_name_file_and_row(tmp_path, rows, message):
    key = he.read_key(hand_key(tmp_path))
    path = write_csv(tmp_path / "bad.csv", he.SHEET_COLUMNS, rows)
    with pytest.raises(he.SheetError) as e:
        he.read_sheet(path, key)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    no_choice = write_csv(tmp_path / "nocol.csv", ["item", "comment"], [["i1", ""]])
    with pytest.raises(he.SheetError, match="no choice column"):
        he.read_sheet(no_choice, key)


# ----------------------------------------------------------------------------- the HTML page in Chromium


def browser():
    return next((b for b in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if b), None)


class DevTools:
    """Chrome DevTools Protocol over --remote-debugging-pipe (fd 3: commands in, fd 4: replies out, NUL-separated
    JSON): standard library only."""

    def __init__(self, binary, profile):
        cmd_r, self.cmd_w = os.pipe()
        self.out_r, out_w = os.pipe()

        def wire():
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)
        self.proc = subprocess.Popen([binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        self.buffer, self.next_id, self.events = b"", 0, []

    def send(self, method, session=None, **params):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self.read()
            if reply.get("id") == self.next_id:
                assert "error" not in reply, reply
                return reply.get("result", {})
            self.events.append(reply)

    def read(self):
        while b"\0" not in self.buffer:
            chunk = os.read(self.out_r, 1 << 16)
            assert chunk, "chromium closed the DevTools pipe"
            self.buffer += chunk
        msg, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(msg)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.close(self.cmd_w)
        os.close(self.out_r)


def click(dt, session, selector):
    """A real mouse click (pressed + released) at the centre of the element."""
    box = dt.send("Runtime.evaluate", session, returnByValue=True, expression=(
        f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block: 'center'}});"
        "const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; })()"))["result"]["value"]
    for kind in ("mousePressed", "mouseReleased"):
        dt.send("Input.dispatchMouseEvent", session, type=kind, x=box[0], y=box[1], button="left", clickCount=1)


def test_html_sheet_in_headless_chromium(tmp_path, capsys):
    binary = browser()
    if binary is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium); the HTML sheet is not checked here")
    generations = {"base": {"p1": ["plain, \"quoted\" answer"], "p2": ["b2"]}, "crpo": {"p1": ["new\nlines"], "p2": ["c2"]}}
    folder = tmp_path / "sheet"
    he.write_sheet(str(folder), generations, seed=0)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    dt = DevTools(binary, tempfile.mkdtemp(dir=tmp_path))
    try:
        target = dt.send("Target.createTarget", url="about:blank")["targetId"]
        session = dt.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        dt.send("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads))
        dt.send("Page.navigate", session, url=(folder / "sheet.html").as_uri())
        for _ in range(100):
            state = dt.send("Runtime.evaluate", session, expression="document.readyState", returnByValue=True)
            if state["result"]["value"] == "complete":
                break
            time.sleep(0.05)
        click(dt, session, 'input[name="choice-0"][value="A"]')
        click(dt, session, 'input[name="choice-1"][value="tie"]')
        dt.send("Runtime.evaluate", session, expression=(
            "document.querySelector('textarea[name=\"comment-1\"]').value = 'same idea, \"both\" fine';"
            "document.getElementById('items').dispatchEvent(new Event('input'));"))
        progress = dt.send("Runtime.evaluate", session, returnByValue=True,
                           expression="document.getElementById('progress').textContent")["result"]["value"]
        assert progress == "2 of 2 answered"
        click(dt, session, "#save")
        saved = downloads / "sheet_filled.csv"
        for _ in range(200):
            if saved.exists() and saved.stat().st_size > 0:
                break
            time.sleep(0.05)
        assert saved.exists(), f"no download in {downloads}: {os.listdir(downloads)}"
    finally:
        dt.close()
    key = he.read_key(str(folder / "key.csv"))
    answers = he.read_sheet(str(saved), key)
    assert [a for a, _ in answers.values()] == ["A", "tie"] and answers["item-2"][1] == 'same idea, "both" fine'
    assert he.main(["results", "--key", str(folder / "key.csv"), str(saved)]) == 0
    out = capsys.readouterr().out
    first = key["item-1"]  # item 1 answered A: a win for its model A
    expected_win = 0.5 if first["model_a"] == "base" else 0.0
    assert f"base vs crpo: win {expected_win:.3f}" in out


def test_sheet_command_reads_an_eval_output(tmp_path, capsys):
    src = tmp_path / "eval.json"
    src.write_text(json.dumps({"models": {m: {"generations": g} for m, g in GENERATIONS.items()}}))
    assert he.main(["sheet", "--from", str(src), "--out", str(tmp_path / "s"), "--seed", "3"]) == 0
    key = he.read_key(str(tmp_path / "s" / "key.csv"))
    assert [k["item"] for k in key.values()] == [it["item"] for it in he.make_items(GENERATIONS, seed=3)]
    src.write_text("{}")
    assert he.main(["sheet", "--from", str(src), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {src}: not an eval.py output") and "\n" not in err
