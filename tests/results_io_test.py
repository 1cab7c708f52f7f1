"""benchmarks/results_io: a result made from uncommitted code says so in
its markdown, not only in its JSON."""

import json

from benchmarks import results_io

TABLE = "| a |\n|---|\n| 1 |\n"


def test_the_markdown_of_a_result_with_uncommitted_changes_carries_the_flag(tmp_path):
    result = {"benchmark": "x", "commit": "0123456789abcdef", "uncommitted_changes": True}
    json_path, md_path = results_io.write_results(str(tmp_path), "x", result, "# X (commit 0123456)\n\n" + TABLE)
    with open(md_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "# X (commit 0123456)"
    assert lines[2].startswith("**Uncommitted changes:** made from commit 0123456 with uncommitted changes")
    assert "\n".join(lines).endswith(TABLE.strip())
    with open(json_path, encoding="utf-8") as f:
        assert json.load(f) == result
    # A table without a title gets the line on top; a second pass adds nothing.
    flagged = results_io.with_provenance_flags(TABLE, result)
    assert flagged.startswith("**Uncommitted changes:**") and flagged.endswith(TABLE)
    assert results_io.with_provenance_flags(flagged, result) == flagged


def test_a_clean_result_is_written_as_given(tmp_path):
    markdown = "# X (commit 0123456)\n\n" + TABLE
    for result in ({"commit": "0123456789", "uncommitted_changes": False}, {"commit": "0123456789"}):
        _, md_path = results_io.write_results(str(tmp_path), "x", result, markdown)
        with open(md_path, encoding="utf-8") as f:
            assert f.read() == markdown
