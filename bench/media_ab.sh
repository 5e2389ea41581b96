#!/bin/sh
# A/B of the media forwarding between two checkouts, alternating, one fresh run per arm per round (not a
# test; docs/MEDIA-RECEIVE.md). Each arm runs bench/media.py with its own tree first on PYTHONPATH: the
# venv's svpl-src.pth puts the main checkout on sys.path, and without this both arms import its code (what
# made session 10's A/B void). Each run says which compiled module its media process loaded.
#
#   bench/media_ab.sh BEFORE_TREE AFTER_TREE [CASE [ROUNDS]]     e.g. /tmp/before . sfu:1x16 3
#
# A tree needs its generated code (gen/, `make gen`) and its compiled path built
# (`python scripts/build_fastpath.py` in it). Prints one line per run: tree, then bench/media.py's row.
set -eu
before=$(cd "$1" && pwd); after=$(cd "$2" && pwd); case=${3:-sfu:1x16}; rounds=${4:-3}
python=${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}
run() {
    tree=$1
    out=$(mktemp)
    (cd "$tree" && PYTHONPATH="$tree:$tree/gen" BENCH_MEDIA_RUNS=1 "$python" bench/media.py "$case" >"$out" 2>&1) &
    job=$!
    loaded=""
    while kill -0 "$job" 2>/dev/null && [ -z "$loaded" ]; do  # the media process's _fastpath, once it is up
        for pid in $(pgrep -f "media_servers.py sfu" || true); do
            loaded=$(grep -m1 -o "/[^ ]*_fastpath[^ ]*\.so" "/proc/$pid/maps" 2>/dev/null || true)
        done
        sleep 1
    done
    wait "$job"
    case "$loaded" in
        "$tree"/*) ;;
        *) echo "$tree: the media process loaded ${loaded:-no _fastpath}, not this tree's" >&2; exit 1 ;;
    esac
    grep -E "^(sfu|janus) " "$out" | sed "s|^|$tree |"
    rm -f "$out"
}
i=1
while [ "$i" -le "$rounds" ]; do
    if [ $((i % 2)) = 1 ]; then run "$before"; run "$after"; else run "$after"; run "$before"; fi
    i=$((i + 1))
done
