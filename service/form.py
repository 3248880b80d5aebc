"""The ``POST /detect`` form, read strictly: a ``video`` part and a ``request`` JSON part.

Parts are told apart by their name alone, so every way curl users write them works: a file
(``-F video=@clip.mp4``, ``-F request=@req.json``), a field (``-F 'request={...}'``) or a
field holding a file's bytes (``-F 'video=<clip.mp4'``). Anything else is refused with its own
error code: another part name or a part given twice, a body that is no multipart or ends
before its final boundary, a ``request`` that is not UTF-8 JSON (a leading UTF-8 BOM is
accepted), or JSON that does not fit :class:`~fbil.service.schemas.DetectRequest` (each error
with a JSON pointer to its field).

Memory: the video goes to a spooled temporary file (on disk beyond 1 MiB); the ``request`` part
is held in memory up to ``max_json_bytes``. The whole body is bounded by
:class:`~fbil.service.middleware.BodyLimitMiddleware`.
"""

from __future__ import annotations

import asyncio
from tempfile import SpooledTemporaryFile
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from fbil.service.errors import (
    BadJSONError,
    BadMultipartError,
    InvalidRequestError,
    MissingPartError,
    NotMultipartError,
    RequestJSONTooLargeError,
    UnexpectedPartError,
)
from fbil.service.schemas import DetectRequest

M = TypeVar("M", bound=BaseModel)

VIDEO, REQUEST = "video", "request"
UTF8_BOM = b"\xef\xbb\xbf"
SPOOL_BYTES = 1024 * 1024  # video bytes kept in memory before the temporary file goes to disk


async def read_detect_form(request: Request, *, max_json_bytes: int) -> tuple[bytes, DetectRequest]:
    """The video's bytes and the parsed request document of a ``/detect`` call."""
    with SpooledTemporaryFile(max_size=SPOOL_BYTES) as video:
        raw = await read_form(request, video, max_json_bytes=max_json_bytes)
        video.seek(0)
        data = await asyncio.to_thread(video.read)
    return data, parse_request_json(raw)


async def read_form(request: Request, video: IO[bytes], *, max_json_bytes: int) -> bytes:
    """Write the ``video`` part into ``video`` as it streams in; the ``request`` part's bytes."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "no Content-Type"
        raise NotMultipartError(
            f"the body is {shown}; send multipart/form-data with parts 'video' and 'request'"
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise BadMultipartError("the multipart Content-Type has no boundary")
    reader = _PartReader(video, max_json_bytes)
    try:
        parser = MultipartParser(boundary, reader.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except FormParserError as e:
        raise BadMultipartError(f"the multipart body is malformed: {e}") from None
    if not reader.complete:
        raise BadMultipartError(
            "the body ends before the multipart's final boundary (a truncated upload?)"
        )
    if VIDEO not in reader.seen:
        raise MissingPartError("the form needs a part named 'video' holding the video")
    if REQUEST not in reader.seen:
        raise MissingPartError("the form needs a part named 'request' holding JSON")
    return bytes(reader.request)


def parse_request_json(raw: bytes, model: type[M] = DetectRequest) -> M:  # type: ignore[assignment]
    """Strict JSON: UTF-8 (an initial BOM is skipped), JSON types as declared, finite numbers."""
    raw = raw.removeprefix(UTF8_BOM)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJSONError(
            f"the request part is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start}",
            {"offset": e.start},
        ) from None
    try:
        return model.model_validate_json(text)
    except ValidationError as e:
        errors = e.errors(include_url=False, include_input=False, include_context=False)
        if any(err["type"] == "json_invalid" for err in errors):
            raise BadJSONError(
                f"the request part is not JSON: {errors[0]['msg']}", {"errors": _listed(errors)}
            ) from None
        raise InvalidRequestError(
            f"the request JSON does not fit {model.__name__}", {"errors": _listed(errors)}
        ) from None


def json_pointer(loc: tuple[int | str, ...]) -> str:
    """RFC 6901 pointer of a pydantic error location (``""``: the whole document)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in loc)


def _listed(errors: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "loc": list(e["loc"]),
            "pointer": json_pointer(e["loc"]),
            "type": e["type"],
            "msg": e["msg"],
        }
        for e in errors
    ]


class _PartReader:
    """python-multipart callbacks collecting the ``video`` and ``request`` parts."""

    def __init__(self, video: IO[bytes], max_json_bytes: int) -> None:
        self.video = video
        self.max_json_bytes = max_json_bytes
        self.request = bytearray()
        self.seen: set[str] = set()
        self.complete = False
        self._part: str | None = None
        self._header = bytearray()
        self._value = bytearray()
        self._disposition = b""

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda data, start, end: self._header.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._part, self._disposition = None, b""

    def _header_end(self) -> None:
        if bytes(self._header).strip().lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise BadMultipartError("a multipart part has no Content-Disposition name")
        name = raw_name.decode("utf-8", errors="replace")
        if name not in (VIDEO, REQUEST):
            raise UnexpectedPartError(
                f"unexpected form part {name[:64]!r}: the form has parts 'video' and 'request'"
            )
        if name in self.seen:
            raise UnexpectedPartError(f"the form part {name!r} is given twice")
        self.seen.add(name)
        self._part = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == VIDEO:
            self.video.write(data[start:end])
        elif self._part == REQUEST:
            self.request.extend(data[start:end])
            if len(self.request) > self.max_json_bytes:
                raise RequestJSONTooLargeError(
                    f"the request part exceeds {self.max_json_bytes} bytes",
                    {"max_request_json_bytes": self.max_json_bytes},
                )

    def _end(self) -> None:
        self.complete = True
