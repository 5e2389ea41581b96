"""`make run`: the whole system on loopback until Ctrl-C."""

from __future__ import annotations

import signal
import sys
import time

from devstack.stack import ROOT, Stack


def main() -> int:
    stack = Stack(ROOT / ".run", fixed_ports=True, extra_env={"SVPL_DEVELOPMENT_LOGIN": "true"}, with_dialin=True)
    started = time.monotonic()
    try:
        stack.start()
    except Exception as exc:  # noqa: BLE001 - report and clean up
        print(f"svpl: start-up failed: {exc}", file=sys.stderr)
        stack.stop()
        return 1
    print(f"\nsvpl is running ({time.monotonic() - started:.1f}s to healthy). Logs in {stack.workdir}/")
    print(f"  {'database':10} {stack.database.uri}")
    for name, proc in stack.procs.items():
        extra = f"metrics http://127.0.0.1:{proc.metrics_port}/metrics" if proc.metrics_port else ""
        print(f"  {name:10} {proc.address:18} {extra}")
    gw = stack.procs["gateway"].address
    print(f"\n  Meeting portal: http://{gw}/auth/rjl/login  (development login is on)")
    print(f"  Phone dial-in:  {stack.sip_address}  (SIP over UDP from this machine, e.g. baresip or sipp;"
          " key the meeting's dial-in ID and #)")
    print("  Ctrl-C stops everything.\n")
    stop = False

    def on_signal(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        while not stop:
            for name, proc in stack.procs.items():
                if proc.process and proc.process.poll() is not None:
                    print(f"svpl: {name} exited ({proc.process.returncode}); see {proc.log_path}", file=sys.stderr)
                    stop = True
            time.sleep(0.5)
    finally:
        print("svpl: stopping…")
        stack.stop()
        print("svpl: stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
