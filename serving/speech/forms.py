"""``multipart/form-data`` bodies to named parts, with python-multipart's streaming parser.

The body is already bounded by the front end (``max_body_bytes``); here the number of parts and
the size of every text field are bounded too, so a form of a million tiny parts or a megabyte
``language`` is a 400 naming the part rather than work. Errors are ``ClientError`` 400s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from serving.errors import ClientError, show

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_PARTS = 32
MAX_FIELD_BYTES = 64 * 1024  # a text field (prompt, language, ...); files are bounded by the body cap


@dataclass(frozen=True)
class Part:
    name: str
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self) -> str:
        try:
            return self.data.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise ClientError(400, f"{self.name}: is not UTF-8 text") from None


def parse(content_type: str, body: bytes, files: frozenset[str]) -> dict[str, Part]:
    """The form's parts by name (the first of a repeated name); ``files`` may exceed MAX_FIELD_BYTES."""
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ClientError(
            400,
            f"body: Content-Type is {show(content_type or '(none)')}; send multipart/form-data "
            "with a boundary (a file part named 'file' and the other fields)",
        )
    collector = _Collector(files)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise ClientError(400, f"body: malformed multipart/form-data ({exc})") from None
    return collector.parts


class _Collector:
    """Gathers the parser's callbacks into Parts (headers are short: kept per part)."""

    def __init__(self, files: frozenset[str]) -> None:
        self.files = files
        self.parts: dict[str, Part] = {}
        self.count = 0
        self._headers: dict[str, str] = {}
        self._field = bytearray()
        self._value = bytearray()
        self._data: list[bytes] = []
        self._size = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_part_data": self._part_data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.count += 1
        if self.count > MAX_PARTS:
            raise ClientError(400, f"body: more than {MAX_PARTS} form parts")
        self._headers, self._data, self._size = {}, [], 0

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = bytearray(), bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        self._size += end - start
        self._data.append(data[start:end])
        if self._size > MAX_FIELD_BYTES and self._name() not in self.files:
            raise ClientError(400, f"{self._name() or 'body'}: form field is over {MAX_FIELD_BYTES} bytes")

    def _name(self) -> str:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        return options.get(b"name", b"").decode("utf-8", "replace")

    def _end(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if disposition != b"form-data" or not name:
            raise ClientError(400, "body: a form part has no Content-Disposition: form-data; name=...")
        filename = options.get(b"filename")
        if name not in self.parts:  # the first of a repeated name wins (as with query strings)
            self.parts[name] = Part(
                name,
                b"".join(self._data),
                filename.decode("utf-8", "replace") if filename is not None else None,
                self._headers.get("content-type"),
            )
