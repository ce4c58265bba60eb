# syntax=docker/dockerfile:1
# The trellis server image: `trellis serve` with etcd, and `trellis graph push`
# (the publishing Job). Build from the repository root: scripts/build-images.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build stage: a virtual environment with trellis and only the extras this image
# runs (server: gRPC, health, reflection, metrics; etcd: store, locker, loader).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/trellis
COPY pyproject.toml README.md ./
COPY trellis ./trellis
RUN /opt/trellis/bin/pip install ".[server,etcd]"

# Final stage: the same Python, the environment, no build tools, no compilers.
FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 trellis \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin trellis
COPY --from=build /opt/trellis /opt/trellis
# The root file system is read-only in the pod: no bytecode written at run time.
ENV PATH=/opt/trellis/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# 50051: gRPC (Engine, Sessions, GraphLoader, health, reflection); 9090: metrics.
EXPOSE 50051 9090
ENTRYPOINT ["trellis"]
CMD ["serve", "--config", "/etc/trellis/config/config.yaml"]
