# syntax=docker/dockerfile:1
# Every svpl service's image, from this one file: SERVICE names the service, PORT the port it
# serves (the chart's). Build from the repository root (see `make images`):
#   docker build --build-arg SERVICE=media --build-arg PORT=50054 -t svpl-media .
# The base image by tag and by the digest of its multi-architecture index: a rebuild gets the same
# bytes. Refresh both together (a new patch release or Debian fixes): `make pin-base-image` (needs
# Docker) looks the tag's current digest up and writes it here.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d

# Build stage: the virtual environment with this service's dependencies only, from its lock file
# (requirements/<SERVICE>.txt: the common core plus the service's extra, every package pinned with
# its hashes, binary wheels only; `make lock` writes them) and the gRPC code generated from protos/
# with the locked grpcio-tools. A SERVICE without a lock file of its own stops the build here.
FROM ${PYTHON_IMAGE} AS build
ARG SERVICE
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements/ requirements/
RUN case "${SERVICE}" in ""|dev|tools|*/*) false ;; esac && test -f "requirements/${SERVICE}.txt" \
        || { echo "SERVICE=${SERVICE}: not one of identity booking roster media support gateway dialin" >&2; exit 1; } \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r "requirements/${SERVICE}.txt" \
 && python -m venv /opt/tools \
 && /opt/tools/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: -r requirements/tools.txt
# media's compiled send path (services/media/fastpath.c) for this image's Python, with gcc (this stage
# only: the runtime stage gets the built module from ext/, which stays empty for the other services).
# The SRTP library it calls is pylibsrtp's own (in the venv), so no libsrtp package is needed.
COPY services/media/fastpath.c services/media/
COPY scripts/build_fastpath.py scripts/
# hadolint ignore=DL3008
RUN mkdir ext \
 && if [ "${SERVICE}" = media ]; then \
        apt-get update \
     && apt-get install -y --no-install-recommends gcc libc6-dev \
     && rm -rf /var/lib/apt/lists/* \
     && /opt/tools/bin/python scripts/build_fastpath.py --check \
     && cp services/media/_fastpath.*.so ext/; \
    fi
COPY protos/ protos/
RUN mkdir gen \
 && find protos -name '*.proto' -exec /opt/tools/bin/python -m grpc_tools.protoc -Iprotos \
        --python_out=gen --grpc_python_out=gen {} +

# The runtime's system packages, per service, and nothing to build with: identity gets Debian's
# xmlsec1 (pysaml2 runs it to verify, decrypt and sign the 1177 login's SAML); the others get none.
FROM ${PYTHON_IMAGE} AS system
ARG SERVICE
# hadolint ignore=DL3008
RUN if [ "${SERVICE}" = identity ]; then \
        apt-get update \
     && apt-get install -y --no-install-recommends xmlsec1 \
     && rm -rf /var/lib/apt/lists/*; \
    fi

# Runtime stage: the venv, the generated code, services/runtime and this one service's sources;
# no compilers, no pip tools venv, no protos; a non-root user; a read-only root filesystem works.
FROM system
ARG SERVICE
ARG PORT
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app:/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVICE=${SERVICE}
RUN groupadd --system --gid 10001 svpl \
 && useradd --system --uid 10001 --gid svpl --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin svpl
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/gen gen/
COPY services/__init__.py services/
COPY services/runtime/ services/runtime/
COPY services/${SERVICE}/ services/${SERVICE}/
COPY --from=build /src/ext/ services/${SERVICE}/
RUN python -m compileall -q services gen
USER 10001:10001
# The service's own port and Prometheus /metrics (SVPL_METRICS_PORT, as the chart sets it).
EXPOSE ${PORT} 9464
# `python -m services.<SERVICE>` as PID 1 (exec), with any arguments given to the container.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"services.${SERVICE}\" \"$@\"", "--"]
