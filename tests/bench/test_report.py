"""make bench's report: a rerun of one benchmark replaces its section and keeps the others'."""

from __future__ import annotations

import json
import subprocess

from bench import report


def test_rerunning_bench_media_alone_replaces_its_section_and_keeps_the_others_with_their_date(tmp_path, monkeypatch):
    earlier = {"when": "2026-11-26T03:29:10+00:00", "machine": report.machine(), "results": [
        {"bench": name, "exit_code": 0, "seconds": 1.0, "output": f"old {name}", "stderr_tail": ""}
        for name in report.BENCHES]}
    (tmp_path / "report.json").write_text(json.dumps(earlier))
    monkeypatch.setattr(report, "HERE", tmp_path)
    ran = []

    def make(args, **kwargs):
        ran.append(args[-1])
        return subprocess.CompletedProcess(args, 0, stdout="svpl next to Janus 1.1.2\n", stderr="")

    monkeypatch.setattr(report.subprocess, "run", make)

    assert report.main(["bench-media"]) == 0

    assert ran == ["bench-media"]
    written = json.loads((tmp_path / "report.json").read_text())
    assert [r["bench"] for r in written["results"]] == report.BENCHES
    sections = {r["bench"]: r for r in written["results"]}
    assert sections["bench-media"]["output"] == "svpl next to Janus 1.1.2"
    assert sections["bench-identity"]["output"] == "old bench-identity"
    markdown = (tmp_path / "REPORT.md").read_text()
    assert "## bench-identity (exit 0, 1.0 s, run 2026-11-26T03:29:10+00:00)" in markdown
    assert "svpl next to Janus 1.1.2" in markdown
