#!/usr/bin/env bash
# Build and run the image on this machine with Debian stand-in bases (no registry reachable):
# proves the Dockerfile's own steps (locks, flavours, non-root user, data volume, drain on stop),
# not the real Ubuntu/CUDA bases nor a GPU. Not part of CI. Needs root, docker.io, debootstrap.
#   scripts/docker_smoke.sh [cpu|gpu] [PORT]
set -euo pipefail
export PATH=/usr/bin:$PATH  # Debian docker.io 20.10 CLI: BuildKit built in (a newer one needs buildx)
flavor=${1:-cpu}; port=${2:-18000}
cd "$(dirname "$0")/.."
root=/var/tmp/fbil-standin-root
log=/tmp/fbil-dockerd.log

if ! docker info >/dev/null 2>&1; then  # host networking only: no bridge, no NAT
  dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false >"$log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
if ! docker image inspect ubuntu:24.04 >/dev/null 2>&1; then
  [ -d "$root/usr" ] || debootstrap --variant=minbase --include=ca-certificates bookworm "$root"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$root" update-ca-certificates >/dev/null
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
  tar -C "$root" -c . | docker import - ubuntu:24.04
fi
gpu_base=$(sed -n 's/^ARG GPU_BASE=//p' docker/Dockerfile)
docker tag ubuntu:24.04 "$gpu_base"

start=$(date +%s)
DOCKER_BUILDKIT=1 docker build --network host -f docker/Dockerfile --build-arg FLAVOR="$flavor" \
  -t "fbil:$flavor" .
echo "built fbil:$flavor in $(( $(date +%s) - start )) s; size:"
docker image inspect "fbil:$flavor" --format '{{.Size}}' | awk '{printf "%.0f MB\n", $1/1e6}'

name=fbil-smoke
run() {
  docker run -d --name "$name" --network host --stop-timeout 40 -v fbil-smoke-data:/data \
    -e FBIL_PORT="$port" -e FBIL_DEVICE=cpu "fbil:$flavor" >/dev/null
  for _ in $(seq 120); do curl -fs "127.0.0.1:$port/readyz" >/dev/null && return; sleep 1; done
  docker logs "$name" | tail -20; exit 1
}
docker rm -f "$name" >/dev/null 2>&1 || true
docker volume rm fbil-smoke-data >/dev/null 2>&1 || true
run
echo "uid in the container: $(docker exec "$name" id -u)"
video=tests/data/videos/vtest.avi
short=$(mktemp --suffix=.avi)
"${PYTHON:-.venv/bin/python}" - "$video" "$short" <<'PY'
import sys, av
with av.open(sys.argv[1]) as src, av.open(sys.argv[2], "w") as out:
    s = src.streams.video[0]; o = out.add_stream_from_template(s)
    for p in src.demux(s):
        if p.pts is not None and p.pts * s.time_base > 4: break
        if p.dts is not None: p.stream = o; out.mux(p)
PY
curl -fsS "127.0.0.1:$port/detect" -F "video=@$short" \
  -F 'request={"keyframes":[{"time":2.0,"boxes":[{"id":"a","box":[300,200,400,500]}]}]}' \
  | python3 -c "import json,sys; a=json.load(sys.stdin); print('detect:', len(a['keyframes'][0]['actors']), 'actor(s)')"
job=$(curl -fsS "127.0.0.1:$port/v1/jobs" -F "video=@$short" -F 'request={"keyframe_interval":1.0}' \
  | python3 -c "import json,sys; print(json.load(sys.stdin)['id'])" || true)
echo "job: $job"
sleep 5
docker rm -f "$name" >/dev/null && run  # re-created: the job must still be there
curl -fsS "127.0.0.1:$port/v1/jobs/$job" | python3 -c "import json,sys; j=json.load(sys.stdin); print('job after re-creation:', j['state'])"
# drain: a request in flight when the stop comes is still answered
code=$(mktemp)
curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$port/detect" -F "video=@$short" \
  -F 'request={"keyframe_interval":0.5}' >"$code" &
in_flight=$!
sleep 1
start=$(date +%s); docker stop "$name" >/dev/null; wait "$in_flight"  # not the dockerd started above
echo "stopped in $(( $(date +%s) - start )) s; the request in flight then: HTTP $(cat "$code")"
rm -f "$code"
docker rm "$name" >/dev/null; rm -f "$short"
