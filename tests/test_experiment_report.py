"""experiments/experiment_report.py: per-arm means over seed-averaged prompts, two Holm families, tables, loading."""
import json
import os
import sys

import pytest

from experiments import experiment_report as report


def run(arm, seed, novelty):
    return {"arm": arm, "seed": seed, "per_prompt": [{"prompt": f"p{i}", "novelty": v} for i, v in enumerate(novelty)]}


RUNS = {"dpo": [run("dpo", 0, [0.0, 0.0, 0.0, 0.0, 0.0]), run("dpo", 1, [0.2, 0.2, 0.2, 0.2, 0.2])],
        "crpo_a": [run("crpo_a", 0, [0.1, 0.2, 0.3, 0.4, 0.5]), run("crpo_a", 1, [0.3, 0.4, 0.5, 0.6, 0.7])],
        "crpo_b": [run("crpo_b", 0, [0.1, -0.1, 0.1, -0.1, 0.1]), run("crpo_b", 1, [0.3, 0.1, 0.3, 0.1, 0.3])],
        "base": [run("base", 0, [0.0] * 5), run("base", 1, [0.0] * 5)]}


def test_arm_means_average_seeds_within_prompts():
    means = report.arm_means(RUNS, ["novelty"], n_boot=100)
    # crpo_a per prompt: (0.1+0.3)/2, (0.2+0.4)/2, ... = 0.2, 0.3, 0.4, 0.5, 0.6 -> mean 0.4
    assert means["crpo_a"]["novelty"]["mean"] == pytest.approx(0.4)
    assert means["crpo_a"]["novelty"]["n_prompts"] == 5 and means["crpo_a"]["novelty"]["seeds"] == [0, 1]


def test_summarize_two_holm_families_and_signal_marks():
    signal = {"crpo_a": ("novelty",)}
    out, paired = report.summarize(RUNS, ["base", "sft", "dpo", "crpo_a", "crpo_b"], signal, n_boot=200)
    assert set(out["paired_variants"]) == {"crpo_a", "crpo_b"} and set(out["paired_context"]) == {"base"}
    a, b = out["paired_variants"]["crpo_a"]["novelty"], out["paired_variants"]["crpo_b"]["novelty"]
    # d_a = 0.1, 0.2, 0.3, 0.4, 0.5 (all positive): p = 2/32; d_b = 0.1, -0.1, 0.1, -0.1, 0.1
    assert a["mean"] == pytest.approx(0.3) and a["p"] == pytest.approx(2 / 32)
    assert b["mean"] == pytest.approx(0.02)
    # d_b: sums of +-0.1 x 5 with |sum| >= 0.1: every odd count of signs gives |sum| >= 0.1 -> p = 1
    assert b["p"] == pytest.approx(1.0)
    assert a["p_holm"] == pytest.approx(2 * 2 / 32) and b["p_holm"] == pytest.approx(1.0)
    base = out["paired_context"]["base"]["novelty"]
    assert base["mean"] == pytest.approx(-0.1) and base["p_holm"] == pytest.approx(base["p"])  # family of one
    assert "| crpo_a | novelty * | 0.3 [" in out["table_paired_markdown"]
    assert "| crpo_b | novelty | 0.02 [" in out["table_paired_markdown"]
    assert out["table_means_markdown"].splitlines()[2].startswith("| base | 0,1 | 0 [0, 0] |")
    assert list(paired) == ["crpo_a", "crpo_b", "base"]


def test_load_results_groups_by_arm_in_seed_order(tmp_path):
    paths = []
    for arm, seed in (("dpo", 1), ("dpo", 0), ("crpo", 0)):
        paths.append(tmp_path / f"{arm}_s{seed}.json")
        paths[-1].write_text(json.dumps(run(arm, seed, [0.1])))
    got = report.load_results(paths + [tmp_path / "missing.json"])
    assert [r["seed"] for r in got["dpo"]] == [0, 1] and list(got) == ["dpo", "crpo"]
