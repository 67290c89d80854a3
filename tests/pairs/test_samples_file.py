"""The samples file a killed `orpo pairs` (or `orpo iterate`) leaves: whole batches are kept, a line cut
by the kill is dropped (its batch is sampled again), a whole file is left as it is."""

import json

from orpo.pairs.sample import _drop_partial_line, read_samples


def test_a_cut_last_line_is_dropped_and_whole_lines_are_kept(tmp_path):
    path = tmp_path / "p.samples.jsonl"
    whole = [
        json.dumps({"id": str(i), "sample": 0, "completion": "c", "model": "m", "settings": {}}) + "\n"
        for i in range(2)
    ]
    path.write_text("".join(whole) + '{"id": "2", "samp')
    _drop_partial_line(path)
    assert path.read_text() == "".join(whole)
    assert sorted(read_samples(path, "m", {})) == [("0", 0), ("1", 0)]
    _drop_partial_line(path)  # a whole file is left as it is
    assert path.read_text() == "".join(whole)


def test_a_file_cut_inside_its_first_line_becomes_empty(tmp_path):
    path = tmp_path / "p.samples.jsonl"
    path.write_text('{"id": "0"')
    _drop_partial_line(path)
    assert path.read_text() == ""
    assert read_samples(path, "m", {}) == {}
