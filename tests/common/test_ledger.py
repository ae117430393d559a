import json

from fedscene.common.ledger import append_entry, quarantine_torn_tail, read_ledger


def _ledger(tmp_path, n=4):
    path = tmp_path / "ledger.jsonl"
    for r in range(1, n + 1):
        append_entry(path, {"round": r, "steps": 10, "epsilon": 0.5 * r})
    return path


def test_intact_chain(tmp_path):
    read = read_ledger(_ledger(tmp_path))
    assert read.intact and len(read.entries) == 4
    assert [e["index"] for e in read.entries] == [0, 1, 2, 3]


def _rewrite(path, lines):
    path.write_text("".join(line + "\n" for line in lines))


def test_edited_number_detected(tmp_path):
    path = _ledger(tmp_path)
    lines = path.read_text().splitlines()
    entry = json.loads(lines[1])
    entry["epsilon"] = 0.1
    lines[1] = json.dumps(entry)
    _rewrite(path, lines)
    read = read_ledger(path)
    assert not read.intact and "line 2" in read.problems[0] and "edited" in read.problems[0]


def test_deleted_and_reordered_entries_detected(tmp_path):
    path = _ledger(tmp_path)
    lines = path.read_text().splitlines()
    _rewrite(path, lines[:1] + lines[2:])
    assert "chain broken" in read_ledger(path).problems[0]
    _rewrite(path, [lines[0], lines[2], lines[1], lines[3]])
    assert "chain broken" in read_ledger(path).problems[0]


def test_torn_tail_detected_and_quarantined(tmp_path):
    path = _ledger(tmp_path)
    raw = path.read_bytes()
    path.write_bytes(raw[:-25])  # a crash in the middle of writing the last line
    read = read_ledger(path)
    assert read.torn_tail and not read.intact and len(read.entries) == 3
    aside = quarantine_torn_tail(path)
    assert aside is not None and aside.exists()
    assert read_ledger(path).intact and len(read_ledger(path).entries) == 3
    append_entry(path, {"round": 4, "steps": 10, "epsilon": 2.0})
    assert read_ledger(path).intact
