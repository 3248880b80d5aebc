"""A camera-like RTSP server on 127.0.0.1 for stream tests (run by the system's python3 with
GStreamer's RTSP server: Debian's gir1.2-gst-rtsp-server-1.0, python3-gi,
gstreamer1.0-plugins-base and -good): serves a Matroska file's MPEG-4 part 2 video at its own
frame rate to each client at rtsp://127.0.0.1:PORT/cam, over TCP or UDP.

    /usr/bin/python3 tests/support/rtsp_camera.py VIDEO.mkv PORT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> None:
    video, port = sys.argv[1], sys.argv[2]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f'( filesrc location="{video}" ! matroskademux ! rtpmp4vpay name=pay0 pt=96 '
        "config-interval=1 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    print("listening", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
