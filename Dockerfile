# eventcast gateway image (docs/kubernetes.md).
#
#   docker build -t eventcast .
#   docker run -p 8000:8000 eventcast                       # memory broker, one worker
#   docker run -e EVENTCAST_BROKER_URL=redis://redis:6379/0 -e EVENTCAST_WORKERS=4 eventcast
#
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module. Any Debian-like image works: the tests build
# from a local debootstrap base, since no container registry is reachable where they run.
ARG BASE_IMAGE=python:3.12-slim

# --- builder: a self-contained virtualenv in /opt/eventcast --------------------------------------------------
FROM ${BASE_IMAGE} AS builder
# Optional CA bundle for pip behind an intercepting proxy (mount it with --volume and pass its path here).
ARG PIP_CERT
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/eventcast && /opt/eventcast/bin/pip install --upgrade pip
WORKDIR /src
# Dependencies first, from pyproject.toml alone (an empty package stands in for app/), so a code change reuses
# this layer instead of downloading every wheel again.
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
 && /opt/eventcast/bin/pip install . \
 && /opt/eventcast/bin/pip uninstall --yes eventcast \
 && rm -rf app build
COPY app ./app
RUN /opt/eventcast/bin/pip install --no-deps . \
 && /opt/eventcast/bin/python -c "import uvloop, httptools, websockets, app.main" \
 && find /opt/eventcast -name '__pycache__' -prune -exec rm -rf {} +

# --- runtime: the base image, the venv, a non-root user ------------------------------------------------------
FROM ${BASE_IMAGE}
ARG EVENTCAST_UID=10001
RUN groupadd --system --gid ${EVENTCAST_UID} eventcast \
 && useradd --system --uid ${EVENTCAST_UID} --gid ${EVENTCAST_UID} --home-dir /nonexistent \
      --no-create-home --shell /usr/sbin/nologin eventcast
COPY --from=builder /opt/eventcast /opt/eventcast
ENV PATH=/opt/eventcast/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVENTCAST_HOST=0.0.0.0 \
    EVENTCAST_PORT=8000
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER ${EVENTCAST_UID}:${EVENTCAST_UID}
EXPOSE 8000
# No curl in the image: the venv's python asks /healthz on the port the gateway listens on.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('EVENTCAST_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["eventcast"]
CMD ["serve"]
