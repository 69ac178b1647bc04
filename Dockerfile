# mef3io-server: a gRPC server for MEF 3.0 recordings (see docs/deployment.md).
#
#   docker build -t mef3io-server .
#   docker run -d --init --name mef3io -p 50051:50051 \
#     -v /srv/recordings:/host_root/srv/recordings:ro \
#     -e DATA_ROOTS=/host_root/srv/recordings mef3io-server
#
# Clients then open host paths (/srv/recordings/patient1.mefd): HOST_ROOT=/host_root is joined in
# front of every client path, and DATA_ROOTS (paths inside the container, ':'-separated) confines
# what is served. Mount recordings read-only (:ro): the server never writes to them.
FROM debian:bookworm-slim

# Debian's own python3 (3.11) in a virtual environment; install it only where the base lacks it.
RUN if ! python3 -c "import venv, ensurepip" >/dev/null 2>&1; then \
        apt-get update \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
           python3 python3-venv ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3 -m venv /opt/mef3io-server

# The project (pyproject.toml, README, package); .dockerignore leaves out tests, docs, venvs.
COPY . /src
RUN /opt/mef3io-server/bin/pip install --no-cache-dir --disable-pip-version-check /src \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mef3io

ENV PATH=/opt/mef3io-server/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PORT=50051 \
    HOST_ROOT=/host_root \
    LOG_FORMAT=text
# DATA_ROOTS is deliberately not set here: set it to the mounted folders (inside the container,
# e.g. /host_root/srv/recordings). Unset, every readable path is served (with a warning).

USER 10001:10001
WORKDIR /tmp
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "mef3io_server.healthcheck"]
ENTRYPOINT ["mef3io-server", "serve"]
