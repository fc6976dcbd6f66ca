"""Reading and writing the project's files: JSON Lines lines (plain or gzipped) in, whole-or-nothing writes out.

    lines = read_lines("data/dt_ratings.jsonl.gz")          # [bytes], line i + 1 of the file at index i
    rows = read_json_objects("metrics.jsonl", MyError)      # [(line number, dict)], errors name FILE:LINE
    write_jsonl("scored.jsonl", rows)                        # PATH.tmp, fsync, rename: never half a file
    write_atomic("train_state.pt", lambda f: torch.save(state, f))
"""
import gzip
import hashlib
import json
import math
import os
import subprocess

import numpy as np

GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


def read_lines(path):
    """The lines of a text file as bytes, undecoded (a caller reports a bad line by its number).

    A gzip file (recognised by its magic bytes, whatever its name, e.g. data.jsonl.gz) is decompressed.
    Lines split on b"\\n" only (not on U+2028 or a lone \\r, which JSON strings may hold); a UTF-8
    byte-order mark at the start is dropped, and so is the empty piece after a final newline, so index
    i holds line i + 1. Raises OSError (FileNotFoundError, IsADirectoryError, gzip.BadGzipFile) or
    EOFError (a truncated gzip file)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(GZIP_MAGIC):
        raw = gzip.decompress(raw)
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if lines and lines[0].startswith(UTF8_BOM):
        lines[0] = lines[0][len(UTF8_BOM):]
    return lines



def read_json_objects(path, error, hint=""):
    """[(line number, dict)] of a JSON Lines file (plain or gzip), blank lines skipped. Problems raise error(message):
    "FILE: cannot read (...)", "FILE:LINE: not JSON (...)<hint>", "FILE:LINE: expected a JSON object per line"."""
    try:
        lines = read_lines(path)
    except (OSError, EOFError) as e:
        raise error(f"{path}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise error(f"{path}:{n}: not JSON ({getattr(e, 'msg', e)}){hint}") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{n}: expected a JSON object per line")
        rows.append((n, row))
    return rows


def write_atomic(path, write, mode="wb"):
    """Write PATH whole or not at all: write(f) into PATH.tmp, flush, fsync, then os.replace(PATH.tmp, PATH).

    A crash at any point leaves PATH as it was (the old whole file, or none). The parent folder is created.
    write: a function of the open file, e.g. lambda f: torch.save(obj, f); mode "wb" (bytes) or "w" (UTF-8 text)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # an error inside write(): no half-written PATH.tmp left behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def write_text(path, text):
    """PATH holds exactly `text` (UTF-8), written atomically."""
    write_atomic(path, lambda f: f.write(text), mode="w")


def jsonl_line(obj):
    """One JSON Lines line (no newline). U+2028 / U+2029 are escaped: some readers split lines on them."""
    line = json.dumps(obj, ensure_ascii=False)
    return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def write_jsonl(path, objects):
    """One JSON object per line, written atomically."""
    write_atomic(path, lambda f: f.writelines(jsonl_line(obj) + "\n" for obj in objects), mode="w")


def file_sha256(path):
    """The SHA-256 hex digest of a file (a fitted scorer's card names its data file by it)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def json_safe(x):
    """Non-finite floats (NaN: an undefined correlation, e.g. a constant prediction; inf) -> null, numpy scalars ->
    Python numbers, so the result is strict JSON."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def git_revision(root=os.path.dirname(os.path.abspath(__file__))):
    """(HEAD + "-dirty" when tracked files differ from it, [the differing files]) of the repository at root: the
    tree a run used. (None, []) outside a git checkout or without git."""
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None, []
    if rev.returncode != 0:
        return None, []
    dirty = [line[3:] for line in status.stdout.split("\n") if line.strip()]
    return rev.stdout.strip() + ("-dirty" if dirty else ""), dirty
