"""experiments/experiment.py end to end on a tiny configuration, every child process stubbed: the planned commands,
skipping finished runs, resuming a killed one, retraining a deleted SFT parent, refusing a changed configuration,
and the paired statistics of the summary on fake per-run results with known differences."""
import json
import os
import struct
import sys

import pytest

from experiments import experiment

TASK_ITEMS = {"Alternate Uses": ["ball", "shoe", "sock"], "Instances": ["round", "soft", "huge"],
              "Consequences": ["no sleep", "time travel", "tiny people"],
              "Sentence Completion": ["At lunch I", "The kids found", "My friend said"]}
# fake eval values: novelty = 0.1 + NOVELTY_DELTA[arm] + 0.01 seed + 0.001 prompt index, so each arm's paired
# difference to dpo is exactly its delta on every prompt
NOVELTY_DELTA = {"base": -0.02, "sft": -0.01, "dpo": 0.0, "crpo_nds": 0.05, "crpo_orig": 0.0, "divpo": 0.0}


def write_ratings(path):
    with open(path, "w") as f:
        for task, items in TASK_ITEMS.items():
            for item in items:
                for j in range(6):
                    f.write(json.dumps({"task": task, "item": item, "prompt": f"{task}: {item}?",
                                        "response": f"answer {j} to {item}", "score": 1 + j % 5, "source": "x"}) + "\n")


class FakeChildren:
    """Stands in for run_command: records each command and writes what the real child would (metrics.jsonl, a
    saved state, done model files, eval JSON with known per-prompt values)."""

    def __init__(self):
        self.commands = []

    def __call__(self, cmd, log_path, env):
        self.commands.append(cmd)
        arg = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
        if cmd[1] == "score.py":
            os.makedirs(arg("--out"), exist_ok=True)
        elif cmd[1] == "crpo.py":
            out = arg("--out")
            assert ("--resume" in cmd) == os.path.isfile(os.path.join(out, "train_state.pt"))
            if "--model" in cmd:  # DPO / CrPO start from a trained SFT model
                assert os.path.isfile(os.path.join(arg("--model"), "done.json"))
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "metrics.jsonl"), "w") as f:
                for step in range(1, int(arg("--max-steps")) + 1):
                    f.write(json.dumps({"step": step, "split": "train", "loss": 1.0 / step}) + "\n")
            open(os.path.join(out, "train_state.pt"), "w").close()
        elif cmd[1] == "eval.py":
            name, path = arg("--models").split("=")
            assert path == "default" or os.path.isfile(os.path.join(path, "metrics.jsonl"))
            seed = int(arg("--seed"))
            prompts = sorted({json.loads(line)["prompt"] for line in open(arg("--data"))})
            per_prompt = [{"prompt": p, "novelty": 0.1 + NOVELTY_DELTA[name] + 0.01 * seed + 0.001 * i,
                           "on_topic": 1.0 - 0.1 * (name == "divpo"),
                           "length": 10.0 + i + seed, "classes": 2, "per_generation": {"novelty": [0.1, 0.2]},
                           "pref_correct": 1.0, "pref_pairs": 2} for i, p in enumerate(prompts)]
            out = {"models": {name: {"novelty": {"mean": 0.1, "lo": 0.0, "hi": 0.2}, "per_prompt": per_prompt,
                                     "generations": {p: ["a", "b"] for p in prompts}}}, "config": {}}
            os.makedirs(os.path.dirname(arg("--out")), exist_ok=True)
            with open(arg("--out"), "w") as f:
                json.dump(out, f)
        return 1.0


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    write_ratings(tmp_path / "ratings.jsonl")
    children = FakeChildren()
    monkeypatch.setattr(experiment, "run_command", children)
    argv = ["--data", str(tmp_path / "ratings.jsonl"), "--work-dir", str(tmp_path / "work"), "--results",
            str(tmp_path / "results"), "--seeds", "0,1", "--heldout-per-task", "1", "--sft-steps", "2",
            "--max-steps", "3", "--k", "2", "--bootstrap", "200"]
    lines = []
    run = lambda *extra: experiment.main(argv + list(extra), log=lines.append)  # noqa: E731
    return run, children, tmp_path, lines


def script(cmd):
    """'crpo.py sft_s0' style label of a command."""
    if cmd[1] == "eval.py":
        return "eval " + os.path.basename(cmd[cmd.index("--out") + 1])[:-5]
    return cmd[1] + " " + os.path.basename(cmd[cmd.index("--out") + 1])


def test_planned_commands_data_and_order(tiny):
    run, children, tmp, _ = tiny
    assert run() == 0
    per_seed = lambda s: [f"eval base_s{s}", f"crpo.py sft_s{s}", f"eval sft_s{s}", f"crpo.py dpo_s{s}",  # noqa
                          f"eval dpo_s{s}", f"crpo.py crpo_nds_s{s}", f"eval crpo_nds_s{s}",
                          f"crpo.py crpo_orig_s{s}", f"eval crpo_orig_s{s}", f"crpo.py divpo_s{s}", f"eval divpo_s{s}"]
    assert [script(c) for c in children.commands] == ["score.py originality_scorer", "score.py originality_evaluator"
                                                      ] + per_seed(0) + per_seed(1)
    cmds = {script(c): c for c in children.commands}
    work = str(tmp / "work")
    # data: held-out prompts from every task, disjoint from training and from the scorer's data
    rows = lambda name: [json.loads(line) for line in open(os.path.join(work, "data", f"{name}.jsonl"))]  # noqa
    held = {r["prompt"] for r in rows("heldout")}
    assert {r["task"] for r in rows("heldout")} == set(TASK_ITEMS) and len(held) == 4
    assert not held & {r["prompt"] for r in rows("train")} and not held & {r["prompt"] for r in rows("scorer_train")}
    # the evaluator's scorer is fitted on the held-out prompts' ratings only; the arms' on the training prompts
    assert {r["prompt"] for r in rows("evaluator_train")} == held
    for which, data in (("scorer", "scorer_train"), ("evaluator", "evaluator_train")):
        assert cmds[f"score.py originality_{which}"][2:] == [
            "fit", "--data", os.path.join(work, "data", f"{data}.jsonl"), "--out",
            os.path.join(work, f"originality_{which}"), "--folds", "0"]
    sft = cmds["crpo.py sft_s1"]
    assert sft[sft.index("--objective") + 1] == "sft" and sft[sft.index("--sft-min-score") + 1] == "3.0"
    assert sft[sft.index("--max-steps") + 1] == "2" and sft[sft.index("--seed") + 1] == "1" and "--model" not in sft

    def lambdas(cmd):
        return {k: float(cmd[cmd.index(f"--lambda-{k}") + 1]) for k in experiment.LAMBDA_NAMES}
    dpo, nds, orig, div = (cmds[f"crpo.py {a}_s1"] for a in ("dpo", "crpo_nds", "crpo_orig", "divpo"))
    assert dpo[dpo.index("--model") + 1] == os.path.join(work, "runs", "sft_s1")
    assert set(lambdas(dpo).values()) == {0.0} and "--score-originality" not in dpo
    assert lambdas(nds) == {"novelty": 1.0, "diversity": 1.0, "surprise": 1.0, "quality": 0.0, "originality": 0.0}
    assert lambdas(orig)["originality"] == 1.0 and sum(lambdas(orig).values()) == 1.0
    assert orig[orig.index("--score-originality") + 1:][:2] == ["model", os.path.join(work, "originality_scorer")]
    flag = lambda c, f: c[c.index(f) + 1]  # noqa: E731
    for c in (dpo, nds, orig, div):  # the authors' weight and population; the same budget and pair count
        assert flag(c, "--weight-on") == "chosen" and flag(c, "--score-population") == "chosen"
        assert flag(c, "--max-steps") == "3" and flag(c, "--max-train-pairs") == str(3 * 8)
    for c in (dpo, nds, orig):  # their pair rules / 10 on the 1-5 scale
        assert [flag(c, f) for f in ("--min-score", "--min-margin", "--max-pairs-per-response", "--cap-order")] == [
            "2", "0.5", "10", "file"] and "--pairs" not in c
    assert flag(nds, "--score-surprise") == "chat" and "--score-surprise" not in dpo + orig + div
    assert [flag(div, f) for f in ("--pairs", "--divpo-pool", "--divpo-high", "--divpo-low")] == ["divpo", "8", "3", "2"]
    assert set(lambdas(div).values()) == {0.0} and "--min-score" not in div
    ev = cmds["eval crpo_orig_s1"]
    assert ev[ev.index("--models") + 1] == "crpo_orig=" + os.path.join(work, "runs", "crpo_orig_s1")
    assert [ev[ev.index(f) + 1] for f in ("--k", "--seed", "--data")] == [
        "2", "1", os.path.join(work, "data", "heldout.jsonl")]
    assert ev[ev.index("--score-originality") + 1:][:2] == ["model", os.path.join(work, "originality_evaluator")]
    assert cmds["eval base_s0"][cmds["eval base_s0"].index("--models") + 1] == "base=default"
    # each run left a small result: commands, seed, no per-generation lists
    res = json.load(open(tmp / "results" / "runs" / "crpo_nds_s1.json"))
    assert res["seed"] == 1 and res["arm"] == "crpo_nds" and res["train"]["summary"]["steps"] == 3
    assert res["fingerprint"]["train"].startswith("python crpo.py --data '$WORK/data/train.jsonl'")
    assert "per_generation" not in res["per_prompt"][0] and res["training_signal"] == ["novelty", "diversity",
                                                                                      "surprise"]


def test_finished_runs_are_skipped_and_a_killed_run_resumes(tiny):
    run, children, tmp, lines = tiny
    assert run() == 0
    results = tmp / "results" / "runs"
    before = {p: p.read_text() for p in results.iterdir()}
    children.commands.clear()
    assert run() == 0
    assert children.commands == []  # everything finished: nothing runs, nothing rewritten
    assert {p: p.read_text() for p in results.iterdir()} == before
    # crpo_nds_s1 killed mid-training: no result, no done.json, a saved state -> crpo.py --resume, then its eval
    (results / "crpo_nds_s1.json").unlink()
    (tmp / "work" / "runs" / "crpo_nds_s1" / "done.json").unlink()
    assert run() == 0
    assert [script(c) for c in children.commands] == ["crpo.py crpo_nds_s1", "eval crpo_nds_s1"]
    assert children.commands[0][-1] == "--resume"
    assert json.load(open(results / "crpo_nds_s1.json"))["train"]["resumed"] is True
    # a saved state started under another configuration is never continued: the run starts over
    (results / "dpo_s0.json").unlink()
    run_dir = tmp / "work" / "runs" / "dpo_s0"
    (run_dir / "done.json").unlink()
    (run_dir / "started.json").write_text(json.dumps({"key": {"train": "another command"}}))
    children.commands.clear()
    assert run() == 0
    assert [script(c) for c in children.commands] == ["crpo.py dpo_s0", "eval dpo_s0"]
    assert "--resume" not in children.commands[0]


def test_delete_models_and_retrain_a_deleted_sft_parent(tiny):
    run, children, tmp, _ = tiny
    assert run("--delete-models") == 0
    assert os.listdir(tmp / "work" / "runs") == []  # every model deleted once nothing needs it
    (tmp / "results" / "runs" / "dpo_s0.json").unlink()
    children.commands.clear()
    assert run("--delete-models") == 0
    assert [script(c) for c in children.commands] == ["crpo.py sft_s0", "crpo.py dpo_s0", "eval dpo_s0"]
    assert os.listdir(tmp / "work" / "runs") == []


def test_changed_configuration_is_refused_in_one_line(tiny, capsys):
    run, children, tmp, _ = tiny
    assert run() == 0
    children.commands.clear()
    assert run("--max-steps", "4") == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "sft_s0.json" not in err and "dpo_s0.json was made with a different configuration" \
        in err and "train" in err
    assert children.commands == []
    # the summary never mixes configurations: with --max-steps 4 the DPO / CrPO results are stale
    assert run("--max-steps", "4", "--summary-only") == 0
    summary = json.load(open(tmp / "results" / "summary.json"))
    assert sorted(summary["runs_stale"]) == sorted(f"{a}_s{s}" for a in ("dpo", "crpo_nds", "crpo_orig", "divpo")
                                                   for s in (0, 1))
    assert set(summary["arm_means"]) == {"base", "sft"} and "paired_variants" not in summary


def test_summary_statistics_and_figure(tiny):
    run, _, tmp, _ = tiny
    assert run() == 0
    summary = json.load(open(tmp / "results" / "summary.json"))
    assert summary["seeds"] == [0, 1] and summary["metrics"] == ["novelty", "on_topic", "length", "pref_accuracy"]
    assert summary["runs_missing"] == [] and len(summary["heldout_prompts"]) == 4 and summary["version"] == 3
    held = {p["prompt"] for p in summary["heldout_prompts"]}
    assert set(summary["originality_evaluator_prompts"]) == held and summary["originality_prompts_disjoint"]
    assert len(summary["originality_scorer_prompts"]) == 8 and not held & set(summary["originality_scorer_prompts"])
    assert summary["settings"]["weight_on"] == "chosen" and "--min-score 2" in summary["settings"]["pair_rules"]
    variants, context = summary["paired_variants"], summary["paired_context"]
    assert set(variants) == {"crpo_nds", "crpo_orig", "divpo"} and set(context) == {"base", "sft"}
    nds = variants["crpo_nds"]["novelty"]
    assert nds["mean"] == pytest.approx(0.05) and nds["lo"] == pytest.approx(0.05) and nds["hi"] == pytest.approx(0.05)
    assert nds["n_prompts"] == 4 and nds["seeds"] == [0, 1]
    assert nds["p"] == pytest.approx(2 / 2 ** 4)  # four positive paired differences
    # Holm over the variants family: 3 arms x 4 metrics; sorted p: 2/16 (crpo_nds novelty, divpo on_topic), then
    # 1, ... -> min(1, 12 x 2/16) = 1
    assert nds["p_holm"] == pytest.approx(1.0) and nds["p"] * 12 > 1
    assert variants["divpo"]["on_topic"]["mean"] == pytest.approx(-0.1)  # the on-topic share is compared too
    assert summary["arm_means"]["divpo"]["on_topic"]["mean"] == pytest.approx(0.9)
    assert variants["crpo_orig"]["length"]["mean"] == pytest.approx(0.0)
    assert variants["crpo_orig"]["length"]["p"] == pytest.approx(1.0)
    assert context["base"]["novelty"]["mean"] == pytest.approx(-0.02)
    assert summary["arm_means"]["dpo"]["novelty"]["mean"] == pytest.approx(0.1 + 0.005 + 0.0015)
    assert summary["training_signal"]["crpo_orig"] == ["originality"]
    assert summary["commands"]["dpo_s0"]["train"].startswith("python crpo.py")
    pytest.importorskip("matplotlib")  # the figure is optional; the summary above is not
    with open(tmp / "results" / "figure.png", "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and min(struct.unpack(">II", head[16:24])) > 100


def test_plan_uses_measured_costs_and_reports_what_is_left(tiny):
    run, _, tmp, lines = tiny
    assert run("--plan") == 0
    assert any("v2's" in line for line in lines if line.startswith("costs"))
    assert not (tmp / "results").exists()  # --plan runs nothing
    assert run() == 0
    lines.clear()
    assert run("--plan") == 0
    assert any("measured" in line and "v2's" not in line for line in lines if line.startswith("costs"))
    assert any("0 min left to run" in line for line in lines)
    assert sum(" done " in line for line in lines) == 2 * 6 + 2
