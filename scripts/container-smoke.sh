#!/usr/bin/env bash
# Container smoke test (minutes; NOT part of the default test run):
#   build the image, start it with a recording mounted read-only, read the recording through the
#   Python client, compare with mef3io, check health, the non-root user, the read-only mount,
#   DATA_ROOTS, and a graceful stop (SIGTERM -> exit 0).
#
#   scripts/container-smoke.sh            # uses ../shared/tools/container.sh (podman)
#   CONTAINER_SH=/path/to/container.sh PYTHON=.venv/bin/python scripts/container-smoke.sh
#
# Where podman cannot run, it prints "SKIP: ..." and exits 0.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOL=${CONTAINER_SH:-$ROOT/../shared/tools/container.sh}
PY=${PYTHON:-$ROOT/.venv/bin/python}
TAG=${IMAGE_TAG:-mef3io-server:smoke}
NAME=mef3io-smoke-$$

skip() { echo "SKIP: container smoke test: $*"; exit 0; }
[[ -f $TOOL ]] || skip "no container tool at $TOOL (set CONTAINER_SH)"
command -v podman >/dev/null 2>&1 || skip "podman is not installed (run: $TOOL setup)"
podman info >/dev/null 2>&1 || skip "podman cannot run here: $(podman info 2>&1 | tail -1)"
podman image exists docker.io/library/debian:bookworm-slim \
  || skip "no debian:bookworm-slim image (run: $TOOL setup)"
[[ -x $PY ]] || skip "no Python with mef3io-server at $PY (set PYTHON)"

WORK=$(mktemp -d)
cleanup() {
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== build $TAG"
# Docker image format, so that the HEALTHCHECK is kept (OCI images drop it).
BUILDAH_FORMAT=docker bash "$TOOL" build "$TAG" "$ROOT" >"$WORK/build.log" 2>&1 \
  || { tail -30 "$WORK/build.log"; echo "FAIL: image build"; exit 1; }

echo "== write a recording"
mkdir -p "$WORK/srv/recordings"
"$PY" "$ROOT/scripts/container_smoke_client.py" write "$WORK/srv/recordings/smoke.mefd"
chmod -R a+rX "$WORK"       # the container's user (uid 10001) reads it

PORT=$("$PY" - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
)

echo "== run (recordings mounted read-only at /host_root/srv/recordings, port $PORT)"
RUN_ARGS=(-d --init --name "$NAME" --network host
  -e PORT="$PORT" -e DATA_ROOTS=/host_root/srv/recordings
  -v "$WORK/srv/recordings:/host_root/srv/recordings:ro" "$TAG")
if ! bash "$TOOL" run "${RUN_ARGS[@]}" >"$WORK/run.log" 2>&1; then
  if grep -q "setting rlimit" "$WORK/run.log"; then
    # `--ulimit host` needs CAP_SYS_RESOURCE, which some sandboxes lack: lower limits work.
    echo "note: '$TOOL run' cannot set rlimits here; running podman with explicit lower ulimits"
    podman rm -f "$NAME" >/dev/null 2>&1 || true
    podman run --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 \
      "${RUN_ARGS[@]}" >"$WORK/run.log" 2>&1 \
      || { grep -v "level=error" "$WORK/run.log" | tail -5; skip "podman cannot start containers here"; }
  else
    grep -v "level=error" "$WORK/run.log" | tail -5
    skip "podman cannot start containers here"
  fi
fi

healthy=""
for _ in $(seq 1 120); do
  if podman exec "$NAME" python -m mef3io_server.healthcheck >/dev/null 2>&1; then
    healthy=yes; break
  fi
  if [[ $(podman inspect -f '{{.State.Running}}' "$NAME") != true ]]; then break; fi
  sleep 0.5
done
if [[ -z $healthy ]]; then
  podman logs "$NAME" 2>&1 | tail -30
  echo "FAIL: the container never reported SERVING"; exit 1
fi
echo "health probe (python -m mef3io_server.healthcheck): SERVING"
hc=$(podman healthcheck run "$NAME" 2>&1 && echo healthy || echo "unhealthy")
echo "podman healthcheck run (the image's HEALTHCHECK): $hc"
[[ $hc == *healthy* && $hc != *unhealthy* ]] || { echo "FAIL: image HEALTHCHECK"; exit 1; }

uid=$(podman exec "$NAME" id -u)
[[ $uid != 0 ]] || { echo "FAIL: the server runs as root"; exit 1; }
echo "runs as uid $uid"
if podman exec "$NAME" touch /host_root/srv/recordings/write-test 2>/dev/null; then
  echo "FAIL: the recordings mount is writable"; exit 1
fi
echo "recordings mount is read-only"

echo "== read through the client (the host path /srv/recordings/smoke.mefd)"
"$PY" "$ROOT/scripts/container_smoke_client.py" check "localhost:$PORT" \
  /srv/recordings/smoke.mefd "$WORK/srv/recordings/smoke.mefd"

echo "== graceful stop"
podman stop -t 30 "$NAME" 2>&1 >/dev/null | grep -v "level=error" || true
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
podman logs "$NAME" 2>&1 | grep -E "draining|stopped|listening" | sed 's/^/  log: /'
[[ $code == 0 ]] || { echo "FAIL: exit code $code after SIGTERM"; exit 1; }
echo "stopped with exit code 0"
echo "PASS: container smoke test"
