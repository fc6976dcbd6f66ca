"""files.py: line reading (plain and gzipped, BOM, final newline) and whole-or-nothing writes."""
import gzip
import json
import os

import pytest

import data
import files


def test_read_lines_plain_and_gzip_give_the_same_lines(tmp_path):
    raw = b"\xef\xbb\xbf" + '{"a": 1}\r\n\n  \n{"b": "x\u2028y"}\n'.encode()
    plain, packed = tmp_path / "rows.jsonl", tmp_path / "rows.jsonl.gz"
    plain.write_bytes(raw)
    packed.write_bytes(gzip.compress(raw))
    want = [b'{"a": 1}\r', b"", b"  ", '{"b": "x\u2028y"}'.encode()]  # BOM gone, no piece after the last newline
    assert files.read_lines(plain) == files.read_lines(packed) == want
    (tmp_path / "no_newline.jsonl").write_bytes(b"x\ny")
    assert files.read_lines(tmp_path / "no_newline.jsonl") == [b"x", b"y"]
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert files.read_lines(tmp_path / "empty.jsonl") == []


def test_gzipped_rows_read_like_plain_rows_with_the_same_line_numbers(tmp_path):
    lines = [json.dumps({"prompt": "p", "response": "a", "score": 1.0}), "", "{oops",
             json.dumps({"prompt": "p", "response": "b", "score": 2.0})]
    text = "\n".join(lines) + "\n"
    (tmp_path / "r.jsonl").write_text(text)
    (tmp_path / "r.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    with pytest.raises(data.DataError, match=r"r\.jsonl\.gz:3: not valid JSON"):
        data.read_rows(tmp_path / "r.jsonl.gz")
    a, report_a = data.read_rows(tmp_path / "r.jsonl", skip_bad_rows=True)
    b, report_b = data.read_rows(tmp_path / "r.jsonl.gz", skip_bad_rows=True)
    assert a == b and [r["line"] for r in b] == [1, 4]
    assert (report_b.read, report_b.blank, report_b.skipped) == (report_a.read, report_a.blank, report_a.skipped)


def test_damaged_gzip_is_a_one_line_data_error(tmp_path):
    packed = gzip.compress(b'{"prompt": "p", "response": "a", "score": 1}\n' * 50)
    (tmp_path / "cut.jsonl.gz").write_bytes(packed[:len(packed) // 2])
    with pytest.raises(data.DataError, match=r"cut\.jsonl\.gz: cannot read"):
        data.read_rows(tmp_path / "cut.jsonl.gz")


def test_write_atomic_replaces_whole_or_leaves_the_old_file(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    files.write_jsonl(path, [{"t": "a\u2028b"}, {"n": 1}])  # creates sub/
    text = path.read_text(encoding="utf-8")
    assert text == '{"t": "a\\u2028b"}\n{"n": 1}\n'
    assert [json.loads(line) for line in text.splitlines()] == [{"t": "a\u2028b"}, {"n": 1}]

    def crash(f):
        f.write("half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        files.write_atomic(path, crash, mode="w")
    assert path.read_text(encoding="utf-8") == text  # the old whole file, untouched
    assert not os.path.exists(str(path) + ".tmp")
    files.write_atomic(path, lambda f: f.write(b"\x00\x01"))  # default mode: bytes
    assert path.read_bytes() == b"\x00\x01" and not os.path.exists(str(path) + ".tmp")
    files.write_text(path, "done\n")
    assert path.read_text(encoding="utf-8") == "done\n"


def test_read_json_objects_numbers_lines_and_names_the_bad_one(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2}\n')
    assert files.read_json_objects(str(path), ValueError) == [(1, {"a": 1}), (3, {"a": 2})]  # blank line 2 skipped
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: expected a JSON object per line"):
        files.read_json_objects(str(path), ValueError)
    path.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"rows.jsonl:2: not JSON \(.*\); see the docs$"):
        files.read_json_objects(str(path), ValueError, "; see the docs")
    with pytest.raises(ValueError, match=r"missing.jsonl: cannot read"):
        files.read_json_objects(str(tmp_path / "missing.jsonl"), ValueError)
