#!/usr/bin/env bash
# Install the Debian tools the live-stream tests use as local sources (never shipped, never run by
# the service): the ffmpeg command line (serves MPEG-TS/HLS/RTMP on 127.0.0.1) and GStreamer's RTSP
# server for the system python3 (a camera-like RTSP source). Needs root or password-less sudo;
# without either it says so and the tests that need the tools skip with the reason.
set -euo pipefail
pkgs=(ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0')" 2>/dev/null || missing+=(rtsp)
if [ ${#missing[@]} -eq 0 ]; then echo "test tools present"; exit 0; fi
if [ "$(id -u)" = 0 ]; then run=(); elif sudo -n true 2>/dev/null; then run=(sudo -n); else
  echo "install_test_tools: not root: the stream tests that need ${missing[*]} will skip" >&2; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
"${run[@]}" apt-get -qq update
"${run[@]}" apt-get -qq install -y --no-install-recommends "${pkgs[@]}" >/dev/null
echo "test tools installed: ${pkgs[*]}"
