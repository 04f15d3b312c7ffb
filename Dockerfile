# syntax=docker/dockerfile:1
# Plan B's container image (docs/deploy.md).
#
# Two stages: wheels of Plan B and every dependency are built in a full Python image; a slim
# runtime image (no compilers) installs them from those wheels only, compiles the Numba kernel
# into /opt/planb/numba-cache (so no container pays for it at its first blast radius), and runs
# as a non-root user.  Every install step is a step of deploy/image-steps.sh, which the tests
# also run, outside any container, in a fresh virtual environment (`image-steps.sh all`).
#
# Configuration comes only from PLANB_* environment variables (docs/deploy.md lists them).
#   docker build -t planb .
#   docker run -p 8080:8080 -e PLANB_DATABASE_URL=postgresql+psycopg://... planb
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-bookworm AS wheels
WORKDIR /src
COPY pyproject.toml README.md ./
COPY inventory ./inventory
COPY collectors ./collectors
COPY templates ./templates
COPY migrations ./migrations
COPY deploy/image-steps.sh /usr/local/bin/planb-image-steps
RUN planb-image-steps wheels /src /wheels

FROM python:${PYTHON_VERSION}-slim-bookworm
LABEL org.opencontainers.image.title="Plan B" \
      org.opencontainers.image.description="Supply-chain resilience and asset inventory: vendor-outage blast radius, contingency plans, update testing, vendor risk" \
      org.opencontainers.image.licenses="Apache-2.0"
# NUMBA_CPU_NAME=generic: the kernel is compiled for any processor of the architecture, not the
# build machine's, so the cache built here is the one every host loads.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/planb/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/opt/planb/numba-cache \
    NUMBA_CPU_NAME=generic \
    PLANB_HOST=0.0.0.0 \
    PLANB_PORT=8080 \
    PLANB_INSTANCE_PATH=/var/lib/planb
RUN groupadd --system --gid 10001 planb \
 && useradd --system --uid 10001 --gid planb --home-dir /var/lib/planb --no-create-home \
            --shell /usr/sbin/nologin planb \
 && install -d -o planb -g planb -m 0750 /var/lib/planb
COPY deploy/image-steps.sh /usr/local/bin/planb-image-steps
COPY deploy/healthcheck.py /opt/planb/healthcheck.py
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    planb-image-steps install /wheels /opt/planb/venv \
 && planb-image-steps warm-up /opt/planb/venv /opt/planb/numba-cache
USER 10001:10001
# As the app's user, who cannot write the cache: it must load, not compile again.
RUN planb-image-steps check-cache /opt/planb/venv /opt/planb/numba-cache
WORKDIR /var/lib/planb
VOLUME ["/var/lib/planb"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/opt/planb/healthcheck.py"]
ENTRYPOINT ["planb"]
CMD ["serve"]
