"""axe-core (Deque's WCAG rules engine) run inside the browser tests' pages: every page state a
scenario reaches is checked against WCAG 2.0/2.1 A and AA, and any violation fails the scenario.

axe-core is fetched pinned and checksummed by scripts/system-deps.sh (`make system-deps`) into
build/axe-core/<version>/ (not committed: a 0.5 MB minified third-party file; the browser tests run
without a network, so it must be on disk before they start)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VERSION = "4.14.1"  # the version scripts/system-deps.sh fetches
SOURCE = ROOT / "build" / "axe-core" / VERSION / "axe.min.js"
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


class AccessibilityViolation(AssertionError):
    pass


def source() -> str:
    if not SOURCE.exists():
        raise AccessibilityViolation(f"{SOURCE} is missing: run scripts/system-deps.sh (make system-deps)")
    return SOURCE.read_text()


def violations(driver) -> list[dict]:
    """axe's violations on the page as it is now (axe injected once per document)."""
    if not driver.execute_script("return Boolean(window.axe)"):
        driver.execute_script(source())
    driver.set_script_timeout(30)
    result = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, { runOnly: { type: 'tag', values: arguments[0] }, resultTypes: ['violations'] })"
        "  .then(r => done(JSON.stringify(r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help,"
        "    nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary.slice(0, 200)) })))))"
        "  .catch(e => done(JSON.stringify([{ id: 'axe-error', help: String(e), nodes: [] }])));", TAGS)
    return json.loads(result)


def assert_no_violations(driver, state: str) -> None:
    found = violations(driver)
    if found:
        raise AccessibilityViolation(f"{state}: axe-core found WCAG 2.1 AA violations: "
                                     + json.dumps(found, ensure_ascii=False, indent=1)[:4000])
