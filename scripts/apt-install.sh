#!/usr/bin/env bash
# Install the Debian packages named (quietly; through sudo when not root). Used by system-deps.sh
# (the tests' packages) and bench-deps.sh (the benchmarks').
set -euo pipefail
[ $# -gt 0 ] || exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "$(basename "$0"): installing $*"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
