# svpl: `make run` starts everything on loopback; `make test` runs the whole suite.
# Both set up what they need (virtual environment, generated code, system packages for tests).

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto' | sort)
# Generated code is produced at install time from protos/ and never committed (see README).
GEN_STAMP := gen/.generated
GRPC_TOOLS := $(PYTHON) -m grpc_tools.protoc
# The media service's compiled send path (services/media/fastpath.c), built in place for this Python.
FASTPATH := services/media/_fastpath$(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

.PHONY: install gen run lint test test-fast system-deps bench-deps chart-test images lock pin-base-image bench bench-identity bench-booking bench-media bench-roster bench-dialin bench-load bench-network openapi clean

install: $(STAMP) $(GEN_STAMP) $(FASTPATH)

# Everything from the lock file: exact versions, each file checked against its hash (make lock writes it).
LOCK := requirements/dev.txt

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check --require-hashes -r $(LOCK)
	# The code runs from this tree: put it and gen/ on the venv's path.
	printf '%s\n%s\n' "$(CURDIR)" "$(CURDIR)/gen" > "$$($(PYTHON) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/svpl-src.pth"
	touch $@

gen: $(GEN_STAMP)

$(GEN_STAMP): $(PROTOS) $(STAMP)
	rm -rf gen && mkdir -p gen
	$(GRPC_TOOLS) -Iprotos --python_out=gen --pyi_out=gen --grpc_python_out=gen $(PROTOS)
	touch $@

# gcc and Python's headers (system-deps.sh build installs them when missing), then setuptools compiles it.
$(FASTPATH): services/media/fastpath.c scripts/build_fastpath.py $(STAMP)
	./scripts/system-deps.sh build
	$(PYTHON) scripts/build_fastpath.py

run: install
	$(PYTHON) -m devstack.run

# System packages the tests use (OpenLDAP slapd, Chromium + ChromeDriver); installed when missing.
system-deps:
	./scripts/system-deps.sh

# Lint and types (rules and strictness in pyproject.toml); part of `make test`.
lint: install
	$(BIN)/ruff check services tests bench devstack
	$(BIN)/mypy

test: install system-deps lint
	$(PYTHON) -m pytest -q -p no:cacheprovider

test-fast: install
	$(PYTHON) -m pytest -q -p no:cacheprovider -m "not slow"

# The Helm chart, the Dockerfiles and the pod-deletion-cost updater, without a cluster (also part of `make test`).
chart-test: install
	$(PYTHON) -m pytest -q -p no:cacheprovider tests/charts

# One image per service, each from the one Dockerfile (needs a Docker engine; not run in CI).
# IMAGE_REGISTRY/IMAGE_TAG as in the chart's values; service:port, the port as the chart's.
IMAGE_REGISTRY ?= registry.example.org/svpl
IMAGE_TAG ?= 0.1.0
IMAGE_SERVICES := identity:50051 booking:50052 roster:50053 media:50054 support:50055 gateway:8080 dialin:50056
images:
	for sp in $(IMAGE_SERVICES); do s=$${sp%%:*}; \
		docker build --build-arg SERVICE=$$s --build-arg PORT=$${sp#*:} -t $(IMAGE_REGISTRY)/svpl-$$s:$(IMAGE_TAG) . || exit 1; \
	done

# The lock files (requirements/*.txt, with hashes) from pyproject.toml's ranges: after changing a dependency.
lock: $(STAMP)
	UV=$(BIN)/uv ./scripts/lock.sh

# The Dockerfile's base image: the tag's current multi-architecture digest, written into the Dockerfile.
PYTHON_TAG := $(shell sed -n 's/^ARG PYTHON_IMAGE=\([^@]*\).*/\1/p' Dockerfile)
pin-base-image:
	digest=$$(docker buildx imagetools inspect $(PYTHON_TAG) --format '{{json .Manifest.Digest}}' | tr -d '"') \
		&& test -n "$$digest" \
		&& sed -i "s|^ARG PYTHON_IMAGE=.*|ARG PYTHON_IMAGE=$(PYTHON_TAG)@$$digest|" Dockerfile \
		&& grep '^ARG PYTHON_IMAGE=' Dockerfile

# CreateBooking through gRPC vs the raw pymongo operations it needs, same server, same run (not a test).
BENCH_BOOKING_N ?= 200
bench-booking: install
	$(PYTHON) bench/booking.py $(BENCH_BOOKING_N)

# Debian packages only the benchmarks need (Janus for bench-media); never part of `make test`.
bench-deps:
	./scripts/bench-deps.sh

# Media forwarding vs Janus (compiled SFU) and aiortc MediaRelay: 1x4, 1x6, 1x10, 1x16, 8x5, each
# BENCH_MEDIA_RUNS times per server on a fresh process; about 15 minutes, heavy on CPU.
BENCH_MEDIA_RUNS ?= 2
bench-media: install bench-deps
	BENCH_MEDIA_RUNS=$(BENCH_MEDIA_RUNS) $(PYTHON) bench/media.py

# Identity: personnummer / HSA-id validations/s and LDAP lookups/s (a real slapd), each next to the raw library call.
BENCH_IDENTITY_N ?= 20000
bench-identity: install system-deps
	$(PYTHON) bench/identity.py $(BENCH_IDENTITY_N)

# Roster: ReportConnection / Admit through gRPC vs raw pymongo writes / GetMeeting, same server, same run.
BENCH_ROSTER_N ?= 400
bench-roster: install
	$(PYTHON) bench/roster.py $(BENCH_ROSTER_N)

# Dial-in: N concurrent phone calls (SIPp) bridged into rooms with WebRTC participants: CPU per call,
# and the added one-way delay of the bridge next to the same audio through a room without it.
BENCH_DIALIN_CALLS ?= 4
bench-dialin: install system-deps
	$(PYTHON) bench/dialin.py $(BENCH_DIALIN_CALLS)

# Join -> first video frame per network (NAT, TCP 443 only through TURN/TLS, node address only, weak
# link), p50/p95 next to a loopback baseline in the same run (not a test; root: network namespaces).
BENCH_NETWORK_JOINS ?= 10
bench-network: install system-deps
	BENCH_NETWORK_JOINS=$(BENCH_NETWORK_JOINS) $(PYTHON) -m bench.network

# Every benchmark, one after the other, into one report: bench/REPORT.md and bench/report.json.
bench: install system-deps
	$(PYTHON) -m bench.report

# Load through the gateway over HTTP: bookings, registrations, admissions, watches (not a test).
BENCH_LOAD_SECONDS ?= 30
BENCH_LOAD_CONCURRENCY ?= 8
bench-load: install
	$(PYTHON) -m bench.load $(BENCH_LOAD_SECONDS) $(BENCH_LOAD_CONCURRENCY)

clean:
	rm -rf gen .run .pytest_cache

# The gateway's committed OpenAPI document (tests/gateway/test_openapi.py fails when it drifts from the code).
openapi: install
	$(PYTHON) -m services.gateway.openapi
