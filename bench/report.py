"""make bench: every benchmark of the project in one go, one report.

Runs bench-identity, bench-booking, bench-roster, bench-media and bench-load one after the
other (never in parallel: they measure CPU), keeps what each printed (each prints its figures
next to the baseline it measured in the same run, as ratios), and writes bench/report.json
and bench/REPORT.md with the machine they ran on.

`python -m bench.report bench-media` reruns only the benchmarks named and keeps the others'
sections from the last report.json, each section saying when it was run."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import TypedDict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# make's echo of a recipe line (a command, perhaps after VAR=value settings), not a benchmark's output
RECIPE = re.compile(r"(make|\.venv/bin|\./scripts|([A-Z_]+=\S* )+\S*/bin/python)")
BENCHES = ["bench-identity", "bench-booking", "bench-roster", "bench-media", "bench-load"]


class Machine(TypedDict):
    cpus: int | None
    python: str
    platform: str
    load_average_at_start: list[float]


class Result(TypedDict, total=False):
    bench: str
    exit_code: int
    seconds: float
    output: str
    stderr_tail: str
    when: str  # when this benchmark ran (a section kept from an earlier report keeps its own)


def machine() -> Machine:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def kept(names: list[str]) -> dict[str, Result]:
    """The last report's sections of the benchmarks not rerun now (none when all are)."""
    if not names or not (HERE / "report.json").exists():
        return {}
    last = json.loads((HERE / "report.json").read_text())
    return {r["bench"]: {**r, "when": r.get("when", last["when"])} for r in last["results"] if r["bench"] not in names}


def main(names: list[str]) -> int:
    results: dict[str, Result] = kept(names)
    failed = 0
    when, host = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), machine()
    for name in names or BENCHES:
        started = time.monotonic()
        proc = subprocess.run(["make", "--no-print-directory", name], cwd=ROOT, capture_output=True, text=True)
        output = "\n".join(line for line in proc.stdout.splitlines() if not RECIPE.match(line))
        results[name] = {"bench": name, "exit_code": proc.returncode, "seconds": round(time.monotonic() - started, 1),
                         "output": output.strip(), "stderr_tail": proc.stderr[-2000:] if proc.returncode else "",
                         "when": when}
        failed += proc.returncode != 0
        print(f"{name}: exit {proc.returncode} in {results[name]['seconds']} s", flush=True)
    ordered = [results[n] for n in BENCHES if n in results] + [r for n, r in results.items() if n not in BENCHES]
    report = {"when": when, "machine": host, "results": ordered}
    (HERE / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    lines = ["# svpl benchmark report", "",
             f"Run {when} on {host['cpus']} cores, Python {host['python']}, "
             f"{host['platform']} (load average at start "
             f"{host['load_average_at_start']}). Every figure is printed next to the baseline "
             "measured in the same run, as a ratio; absolute numbers on these shared machines are noisy.", ""]
    for r in ordered:
        earlier = f", run {r['when']}" if r.get("when", when) != when else ""
        lines += [f"## {r['bench']} (exit {r['exit_code']}, {r['seconds']} s{earlier})", "", "```",
                  r["output"] or "(no output)", "```", ""]
        if r["stderr_tail"]:
            lines += ["stderr (tail):", "", "```", r["stderr_tail"], "```", ""]
    (HERE / "REPORT.md").write_text("\n".join(lines))
    print(f"wrote {HERE / 'REPORT.md'} and {HERE / 'report.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
