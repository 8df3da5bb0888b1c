# syntax=docker/dockerfile:1
# Raíces: the API and map in one image. Build: `docker build -t raices .`; run with a PostGIS through
# DATABASE_URL, or `docker compose up` (docker-compose.yml) for both.
#
# On start the container migrates the database, loads every source not loaded yet, scores and serves on
# port 8000 (`docker run … raices <command>` runs that command instead, e.g. `raices sources`).
# No data is baked in. Source files come from RAICES_DATA_MIRROR when a mirror folder is mounted
# (read-only, e.g. `-v /path/to/shared/geodata:/data/geodata:ro -e RAICES_DATA_MIRROR=/data/geodata`),
# else from their upstream URLs (checksums pinned in geodata/sources.toml), cached in /var/lib/raices.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- the map's JavaScript (MapLibre GL JS), from the npm registry as in package-lock.json ---------------
FROM node:20-bookworm-slim AS web
WORKDIR /web
COPY package.json package-lock.json ./
# runtime dependencies only: playwright-core is for the browser tests
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

# --- the Python environment: build tools here, never in the runtime image ----------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libpq-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
# dependencies first (a layer that survives code changes): install the project with a stub package,
# then remove it
COPY pyproject.toml README.md ./
RUN mkdir app && touch app/__init__.py \
    && pip install --upgrade pip \
    && pip install . \
    && pip uninstall -y raices \
    && rm -rf app build ./*.egg-info
COPY app ./app
COPY migrations ./migrations
COPY geodata ./geodata
# editable, so that the package finds migrations/, geodata/ and node_modules/ next to it under /app
RUN pip install --no-deps -e . && python -m compileall -q app /opt/venv/lib

# --- the runtime image: slim Python, the venv, the code, MapLibre; no compilers ----------------------
FROM ${PYTHON_IMAGE} AS runtime
# the wheels (psycopg[binary], rasterio, pyogrio, shapely, pyproj) bundle libpq, GDAL, GEOS and PROJ:
# the slim base is all they need at run time
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PORT=8000 \
    RAICES_HOST=0.0.0.0 \
    RAICES_WORKERS=2 \
    RAICES_LOG_FORMAT=json \
    RAICES_DATA_DIR=/var/lib/raices \
    RAICES_DATA_CACHE=/var/lib/raices/cache \
    RAICES_RASTER_DIR=/var/lib/raices/rasters
RUN groupadd --system --gid 10001 raices \
    && useradd --system --uid 10001 --gid raices --home-dir /var/lib/raices --shell /usr/sbin/nologin raices \
    && mkdir -p /var/lib/raices/cache /var/lib/raices/rasters \
    && chown -R raices:raices /var/lib/raices
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
COPY --from=web /web/node_modules /app/node_modules
COPY --chmod=755 <<'EOF' /usr/local/bin/raices-entrypoint
#!/bin/sh
# With arguments: run them (e.g. `raices sources`). Without: migrate, load what is missing, score, serve.
set -eu
if [ "$#" -gt 0 ]; then
    exec "$@"
fi
raices db upgrade
raices load all --missing
raices score --top 3
exec raices serve --host "${RAICES_HOST:-0.0.0.0}" --port "${PORT:-8000}" --workers "${RAICES_WORKERS:-2}"
EOF
WORKDIR /app
# downloaded sources, the modelled wind raster: keep them across container restarts
VOLUME ["/var/lib/raices"]
USER raices:raices
EXPOSE 8000
# the first start loads every source (downloads, the hurricane wind model): give it time
HEALTHCHECK --interval=30s --timeout=5s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["/usr/local/bin/raices-entrypoint"]
CMD []
