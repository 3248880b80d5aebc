"""Which URLs a stream may open: a server that opens URLs for its clients must not open its own
files or reach hosts the operator did not name.

FFmpeg picks a protocol by the URL's prefix: ``file:``, ``concat:``, ``subfile,,...:``,
``data:``, ``pipe:``, nested ``a+b:`` and a bare path (``file``) all read local data. A URL is
accepted only with a scheme of ``FBIL_STREAM_ALLOWED_SCHEMES`` (none of the local protocols,
ever) and a host that is named in, or resolves only into the networks of,
``FBIL_STREAM_ALLOWED_HOSTS`` (empty: nothing is allowed). The source is then opened with
FFmpeg's ``protocol_whitelist`` of :data:`NETWORK_PROTOCOLS`, so that nothing a playlist or a
server names (an HLS segment ``file:...``) reaches a local protocol either.

:func:`redact` is the only form in which a URL is echoed or logged: no credentials, no query
values.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from fbil.service.errors import (
    StreamURLHostError,
    StreamURLInvalidError,
    StreamURLLocalProtocolError,
    StreamURLSchemeError,
)

MAX_URL_CHARS = 2048

# FFmpeg protocols that read or wrap local data, or re-open a URL given inside the URL
LOCAL_PROTOCOLS = frozenset(
    {
        "file",
        "concat",
        "concatf",
        "subfile",
        "data",
        "pipe",
        "fd",
        "cache",
        "async",
        "crypto",
        "md5",
        "unix",
        "android_content",
        "ipfs",
        "ipns",
        "hls",
        "bluray",
        "ffrtmpcrypt",
        "ffrtmphttp",
    }
)

# what FFmpeg may open for a stream, nested connections included
NETWORK_PROTOCOLS = (
    "tcp,udp,rtp,srtp,rtsp,rtsps,rtmp,rtmps,rtmpt,rtmpts,rtmpe,rtmpte,http,https,httpproxy,tls"
)

_SCHEME = re.compile(r"^([A-Za-z0-9+\-.,_]*):")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class StreamURL:
    """An accepted URL: the text FFmpeg opens, its scheme and host, and :func:`redact` ed."""

    url: str
    scheme: str
    host: str
    shown: str


def _protocols(url: str) -> list[str]:
    """The protocols FFmpeg would open ``url`` with (a bare path: ``file``)."""
    match = _SCHEME.match(url)
    if match is None or re.match(r"^[A-Za-z]:[\\/]", url):  # no prefix, or a DOS path
        return ["file"]
    return [p for p in re.split(r"[+,]", match.group(1).lower()) if p]


def check_url(
    url: str,
    schemes: Sequence[str],
    hosts: Sequence[str],
    *,
    resolve: bool = True,
) -> StreamURL:
    """``url`` if a stream may open it, else the error saying why (each its own code)."""
    if not url or len(url) > MAX_URL_CHARS or _UNSAFE.search(url):
        raise StreamURLInvalidError(
            f"a stream url has 1 to {MAX_URL_CHARS} characters, no spaces or control characters"
        )
    protocols = _protocols(url)
    local = [p for p in protocols if p in LOCAL_PROTOCOLS] or (["file"] if not protocols else [])
    if local:
        raise StreamURLLocalProtocolError(
            f"the {local[0]!r} protocol reads local data or opens URLs of its own: a stream "
            "url names a network source",
            {"protocol": local[0]},
        )
    allowed = {s.lower() for s in schemes} - LOCAL_PROTOCOLS
    if len(protocols) != 1 or protocols[0] not in allowed:
        raise StreamURLSchemeError(
            f"the scheme {'+'.join(protocols)!r} is not allowed (FBIL_STREAM_ALLOWED_SCHEMES: "
            f"{', '.join(sorted(allowed)) or 'none'})",
            {"scheme": "+".join(protocols), "allowed": sorted(allowed)},
        )
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as e:
        raise StreamURLInvalidError(f"not a URL: {e}") from None
    if not host or not parts.netloc:
        raise StreamURLInvalidError("a stream url names a host (scheme://host[:port]/path)")
    shown = redact(url)
    check_host(host, hosts, resolve=resolve)
    return StreamURL(url, protocols[0], host, shown)


def check_host(host: str, allowed: Sequence[str], *, resolve: bool = True) -> None:
    """Whether ``host`` is allowed: named in ``allowed``, or an address (its own, or all
    those its name resolves to) inside a network of ``allowed``."""
    names, networks = set(), []
    for entry in allowed:
        entry = entry.strip().lower()
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.rstrip("."))
    if not names and not networks:
        raise StreamURLHostError(
            "no host is allowed: the operator sets FBIL_STREAM_ALLOWED_HOSTS", {"host": host}
        )
    if host.rstrip(".") in names:
        return
    addresses = _addresses(host, resolve)
    if addresses and all(any(a in n for n in networks) for a in addresses):
        return
    raise StreamURLHostError(
        f"the host {host!r} is not in FBIL_STREAM_ALLOWED_HOSTS", {"host": host}
    )


def _addresses(host: str, resolve: bool) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def redact(url: str) -> str:
    """``url`` without its credentials (``user:password@`` is ``***@``) and query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = "&".join(p.split("=", 1)[0] + "=***" for p in parts.query.split("&") if p)
    return SplitResult(parts.scheme, netloc, parts.path, query, "").geturl()
