# kafka-autopilot's image: the agent in a virtualenv on a slim Python, running as a non-root user.
#
# Two stages: `build` makes the wheel and installs it with the locked dependencies into
# /opt/kafka-autopilot; the final stage copies that virtualenv only (no compiler, no pip cache, no
# build tools). Every dependency is pinned with its hash (requirements.lock, requirements-build.lock,
# written by scripts/lock-requirements.sh); pip refuses anything else.
#
# tests/integration/test_dockerfile.py runs this file's RUN steps without a container engine (a fresh
# virtualenv from the same lock files), then `kafka-autopilot --help` and `kafka-autopilot lint rules/`.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements.lock requirements-build.lock ./
RUN python -m venv /opt/build \
 && /opt/build/bin/pip install --require-hashes --only-binary=:all: -r requirements-build.lock
RUN python -m venv /opt/kafka-autopilot \
 && /opt/kafka-autopilot/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /src/dist . \
 && /opt/kafka-autopilot/bin/pip install --no-deps --no-index /src/dist/kafka_autopilot-*.whl \
 && /opt/kafka-autopilot/bin/pip check

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="kafka-autopilot" \
      org.opencontainers.image.description="Autopilot and remediation agent for Apache Kafka on Kubernetes" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 autopilot \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin autopilot
COPY --from=build /opt/kafka-autopilot /opt/kafka-autopilot
# MALLOC_ARENA_MAX=2: glibc gives each thread that allocates its own malloc arena; the Prometheus
# queries decode their answers on worker threads, and at 10,000 volumes the extra arenas cost ~20 MiB.
ENV PATH=/opt/kafka-autopilot/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 MALLOC_ARENA_MAX=2
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kafka-autopilot"]
CMD ["--help"]
