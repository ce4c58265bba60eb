# syntax=docker/dockerfile:1
# The trellis sidecar image: `trellis dispatcher` (the process tools of a
# tools.yaml, served over a Unix socket) and `trellis loader` (a flow directory).
# Tools the dispatcher runs are this image's business: derive an image that adds
# them (`FROM trellis/sidecar` + your tools). Build from the repository root:
# scripts/build-images.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: trellis with the server extra only (the sidecar kit is a gRPC
# server); no etcd client: sidecars never talk to etcd.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/trellis
COPY pyproject.toml README.md ./
COPY trellis ./trellis
RUN /opt/trellis/bin/pip install ".[server]"

# Final stage: the same Python, the environment, no build tools, no compilers.
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 trellis \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trellis
COPY --from=build /opt/trellis /opt/trellis
ENV PATH=/opt/trellis/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["trellis"]
CMD ["dispatcher", "--tools", "/etc/trellis/tools/tools.yaml", "--listen", "unix:///run/trellis/tools.sock"]
