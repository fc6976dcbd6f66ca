"""plot.py: the series it draws against hand-computed values, and the PNGs it writes (valid, expected size, not blank)."""
import json
import struct
import sys

import pytest

import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from the PNG header (signature, then the IHDR chunk)."""
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == PNG_SIGNATURE, "not a PNG file"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def assert_drawn_png(path, size):
    """A PNG of exactly `size` pixels whose pixels are not all one colour."""
    mpimg = pytest.importorskip("matplotlib.image")
    assert png_size(path) == tuple(int(round(s)) for s in size)
    pixels = mpimg.imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    assert pixels[..., :3].std() > 0.05  # lines and text on a white background


def write_metrics(path):
    rows = [
        {"step": 1, "split": "train", "loss": 0.70, "reward_accuracy": 0.25, "reward_margin": -0.1, "mean_c": 0.5},
        {"step": 2, "split": "train", "loss": 0.60, "reward_accuracy": 0.50, "reward_margin": 0.2, "mean_c": 0.4},
        {"step": 2, "split": "val", "loss": 0.65, "reward_accuracy": 0.55, "reward_margin": 0.1, "mean_c": 0.45,
         "pairs": 20},
        {"step": 3, "split": "train", "loss": 0.40, "reward_accuracy": 0.75, "reward_margin": 0.6, "mean_c": 0.3},
        {"step": 4, "split": "train", "loss": 0.30, "reward_accuracy": 1.00, "reward_margin": 0.9, "mean_c": 0.6},
        {"step": 4, "split": "val", "loss": 0.55, "reward_accuracy": 0.70, "reward_margin": 0.4, "mean_c": 0.44,
         "pairs": 20},
    ]
    with open(path, "w") as f:
        for r in rows[:3]:
            f.write(json.dumps(r) + "\n")
        f.write("\n")  # blank lines are skipped
        for r in rows[3:]:
            f.write(json.dumps(r) + "\n")


EVAL = {"models": {
    "base": {"novelty": {"mean": 0.05, "lo": 0.04, "hi": 0.06}, "length": {"mean": 26.0, "lo": 22.5, "hi": 29.0},
             "pref_accuracy": {"mean": 0.6, "lo": 0.5, "hi": 0.7, "pairs": 96},
             "per_prompt": [{"prompt": "p", "novelty": 0.05}], "generations": {"p": ["a"]}},
    "dpo": {"novelty": {"mean": 0.045, "lo": 0.03, "hi": 0.058}, "length": {"mean": 16.8, "lo": 13.1, "hi": 20.5},
            "per_prompt": [], "generations": {}},
}, "config": {"k": 8}}


def test_trailing_mean_by_hand():
    assert plot.trailing_mean([1.0, 2.0, 6.0, 3.0], 2) == [1.0, 1.5, 4.0, 4.5]
    assert plot.trailing_mean([1.0, 2.0, 6.0, 3.0], 3) == pytest.approx([1.0, 1.5, 3.0, 11 / 3])
    assert plot.trailing_mean([1.0, 2.0], 1) == [1.0, 2.0]


def test_curve_series_splits_steps_and_values(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path)
    series = plot.curve_series(plot.read_metrics(path), smooth=2)
    assert list(series) == ["loss", "reward_accuracy", "reward_margin", "mean_c"]
    assert series["loss"]["train"] == {"step": [1, 2, 3, 4], "value": [0.70, 0.60, 0.40, 0.30],
                                       "smoothed": pytest.approx([0.70, 0.65, 0.50, 0.35])}
    assert series["loss"]["val"] == {"step": [2, 4], "value": [0.65, 0.55]}
    assert series["reward_accuracy"]["train"]["value"] == [0.25, 0.50, 0.75, 1.00]
    assert series["mean_c"]["val"]["value"] == [0.45, 0.44]


def test_curve_series_keeps_last_row_of_a_repeated_step_and_drops_unlogged_metrics():
    rows = [{"step": 2, "split": "train", "loss": 1.0}, {"step": 1, "split": "train", "loss": 2.0},
            {"step": 2, "split": "train", "loss": 0.5}, {"step": 3, "split": "train", "loss": float("nan")},
            {"step": 3, "split": "test", "loss": 9.0}, {"note": "no step"}]
    series = plot.curve_series(rows)  # an SFT-like run: loss only
    assert series == {"loss": {"train": {"step": [1, 2], "value": [2.0, 0.5]}}}


def test_read_metrics_names_the_bad_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 1}\nnot json\n')
    with pytest.raises(plot.PlotError, match=r"metrics.jsonl:2: not JSON"):
        plot.read_metrics(path)


def test_eval_series_reads_summarize_layout():
    panels = plot.eval_series(EVAL)
    assert panels == {"novelty": [("base", 0.05, 0.04, 0.06), ("dpo", 0.045, 0.03, 0.058)],
                      "length": [("base", 26.0, 22.5, 29.0), ("dpo", 16.8, 13.1, 20.5)],
                      "pref_accuracy": [("base", 0.6, 0.5, 0.7)]}
    with pytest.raises(plot.PlotError, match="no \"models\""):
        plot.eval_series({"config": {}})


def test_curves_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "metrics.jsonl"
    write_metrics(path)
    out = tmp_path / "curves.png"
    assert plot.main([str(path), "--out", str(out), "--smooth", "2"]) == 0
    # 4 panels in 2 x 2, each 5.0 x 3.2 inches at 100 dpi
    assert_drawn_png(out, (1000, 640))


def test_eval_png(tmp_path):
    pytest.importorskip("matplotlib")
    src = tmp_path / "eval.json"
    src.write_text(json.dumps(EVAL))
    out = tmp_path / "eval.png"
    assert plot.main(["--eval", str(src), "--out", str(out)]) == 0
    # 3 panels in one row of 4.0 inches; height (0.32 x 2 labels + 1.1) inches, at 100 dpi
    assert_drawn_png(out, (1200, round((0.32 * 2 + 1.1) * 100)))


def test_draw_intervals_marks_and_zero_line(tmp_path):
    pytest.importorskip("matplotlib")
    panels = {"novelty": [("crpo", 0.01, -0.02, 0.03)], "diversity": [("crpo", -0.1, -0.2, 0.05)]}
    size = plot.draw_intervals(panels, tmp_path / "d.png", zero_line=True, marked={("novelty", "crpo")},
                               muted={"crpo"})
    assert tuple(size) == (800, pytest.approx((0.32 + 1.1) * 100))
    assert_drawn_png(tmp_path / "d.png", (800, 142))


def test_missing_matplotlib_is_one_clear_line(tmp_path, monkeypatch, capsys):
    path = tmp_path / "metrics.jsonl"
    write_metrics(path)
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert plot.main([str(path), "--out", str(tmp_path / "c.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "pip install matplotlib" in err
    assert not (tmp_path / "c.png").exists()


def test_cli_needs_exactly_one_input():
    with pytest.raises(SystemExit):
        plot.parse_args([])
    with pytest.raises(SystemExit):
        plot.parse_args(["m.jsonl", "--eval", "e.json"])


def test_png_size_reads_header(tmp_path):
    head = PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 321, 123)
    (tmp_path / "x.png").write_bytes(head + bytes(17))
    assert png_size(tmp_path / "x.png") == (321, 123)
