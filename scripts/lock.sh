#!/bin/sh
# The lock files: every package pinned with its hashes, resolved from pyproject.toml's ranges.
#   requirements/dev.txt        everything (make install: tests, make run, benchmarks, tools)
#   requirements/<service>.txt  the common core + that service's extra (its image installs this only)
#   requirements/tools.txt      grpcio-tools alone (the image's build stage generates the gRPC code)
# Installs use them with `pip install --require-hashes`: a package whose file differs from the one
# locked (or any package not in the lock) fails the install. Run after changing a dependency in
# pyproject.toml (`make lock`); tests/charts/test_dockerfiles.py fails while a lock is behind it.
# Python 3.11 (the images' and CI's), for every platform the ranges allow (--universal).
set -eu
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
compile() {
    out=$1; shift
    "$UV" pip compile --generate-hashes --universal --python-version 3.11 \
        --custom-compile-command "make lock" "$@" -o "$out" >/dev/null
}
mkdir -p requirements
compile requirements/dev.txt pyproject.toml --extra dev
# Constrained by dev's lock: an image runs exactly the versions the tests ran with.
for service in identity booking roster media support gateway dialin; do
    compile "requirements/$service.txt" -c requirements/dev.txt pyproject.toml --extra "$service"
done
# The exact grpcio-tools pin of the dev extra.
python3 -c "import tomllib; print(next(d for d in tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['dev'] if d.startswith('grpcio-tools')))" \
    | compile requirements/tools.txt -c requirements/dev.txt -
