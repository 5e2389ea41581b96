#!/usr/bin/env bash
# Debian packages only the benchmarks need (not the tests' scripts/system-deps.sh), installed when missing:
# Janus WebRTC Server, the compiled SFU `make bench-media` measures our media service against (bench/janus.py
# runs it with a generated configuration; the package's own service is never started).
set -euo pipefail
need=()
command -v janus >/dev/null 2>&1 || [ -x /usr/bin/janus ] || need+=(janus)
"$(dirname "$0")/apt-install.sh" ${need[@]+"${need[@]}"}
