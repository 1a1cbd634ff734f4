"""Requests, responses and the exceptions that answer with a response."""

from __future__ import annotations

import dataclasses
import json as _json
import json.encoder
import math
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Optional, Union, overload
from urllib.parse import unquote_to_bytes

#: Header or query pairs, in order. ``Mapping`` arguments are accepted and turned into pairs.
Pairs = list[tuple[str, str]]
PairsLike = Union[Mapping[str, str], Iterable[tuple[str, str]], None]

JSON_CONTENT_TYPE = "application/json"
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"


def _pairs(value: PairsLike) -> Pairs:
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [(str(k), str(v)) for k, v in value.items()]
    return [(str(k), str(v)) for k, v in value]


def _to_bytes(body: Union[bytes, bytearray, memoryview, str, None]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytearray, memoryview)):
        return bytes(body)
    if isinstance(body, bytes):
        return body
    raise TypeError(f"a body is bytes or str, not {type(body).__name__}")


def _float(x: float) -> str:
    """A finite float written as serde_json 1.0.154 writes it: ``1.0``, ``0.00001``,
    ``1e+16``, ``1.5e-7`` (Python writes ``1e-05``, ``1e+16``, ``1.5e-07``). Both give the
    shortest digits that read back as ``x``; only the layout differs."""
    if x != x or x in (math.inf, -math.inf):
        raise ValueError(f"Out of range float values are not JSON compliant: {x!r}")
    r = repr(x)
    sign = ""
    if r[0] == "-":
        sign, r = "-", r[1:]
    mantissa, _, exp = r.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    # x = 0.<digits> * 10**kk
    kk = len(whole) + (int(exp) if exp else 0) - (len(whole + fraction) - len(digits))
    digits = digits.rstrip("0")
    if not digits:
        return sign + "0.0"
    n = len(digits)
    if n <= kk <= 16:
        out = digits + "0" * (kk - n) + ".0"
    elif 0 < kk <= 16:
        out = digits[:kk] + "." + digits[kk:]
    elif -5 < kk <= 0:
        out = "0." + "0" * -kk + digits
    elif n == 1:
        out = f"{digits}e{kk - 1:+d}"
    else:
        out = f"{digits[0]}.{digits[1:]}e{kk - 1:+d}"
    return sign + out


_encode_str: Callable[[str], str] = getattr(
    _json.encoder, "encode_basestring", lambda s: _json.dumps(s, ensure_ascii=False)
)


def _encode(value: Any, out: list[str], depth: int) -> None:
    t = type(value)
    if t is str:
        out.append(_encode_str(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif t is int:
        out.append(int.__repr__(value))
    elif t is float:
        out.append(_float(value))
    elif depth > 500:
        raise ValueError("the value is nested too deeply (or contains itself)")
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for k, v in value.items():
            if isinstance(k, str):
                key = k
            elif isinstance(k, bool) or k is None:
                key = "null" if k is None else ("true" if k else "false")
            elif isinstance(k, int):
                key = int.__repr__(k)
            elif isinstance(k, float):
                key = _float(k)
            else:
                raise TypeError(
                    f"keys must be str, int, float, bool or None, not {type(k).__name__}"
                )
            if not first:
                out.append(",")
            first = False
            out.append(_encode_str(key))
            out.append(":")
            tv = type(v)  # the common scalars inline: a call costs more than they do
            if tv is str:
                out.append(_encode_str(v))
            elif tv is int:
                out.append(int.__repr__(v))
            else:
                _encode(v, out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, v in enumerate(value):
            if i:
                out.append(",")
            tv = type(v)
            if tv is str:
                out.append(_encode_str(v))
            elif tv is int:
                out.append(int.__repr__(v))
            else:
                _encode(v, out, depth + 1)
        out.append("]")
    elif isinstance(value, str):
        out.append(_encode_str(str(value)))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(float(value)))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _encode(dataclasses.asdict(value), out, depth + 1)
    else:
        raise TypeError(f"Object of type {t.__name__} is not JSON serializable")


def dumps(value: Any) -> str:
    """``value`` as compact JSON, byte for byte as the Rust SDK (serde_json) writes it.

    No spaces; non-ASCII characters written as UTF-8 rather than ``\\u`` escapes; floats
    in serde_json's layout (``0.00001``, ``1.5e-7``); no ``NaN``/``Infinity`` (not JSON: a
    ``ValueError``). Dicts keep their order, lists and tuples are arrays, dataclasses are
    objects. Raises ``TypeError`` for values JSON cannot represent.
    """
    out: list[str] = []
    _encode(value, out, 0)
    return "".join(out)


def _decode_segment(raw: str) -> bytes:
    # unquote_to_bytes keeps malformed escapes (`%zz`, a trailing `%4`) as written, like
    # the Rust SDK, and never turns `+` into a space (that is query syntax, not path).
    return unquote_to_bytes(raw)


def _parse_query(q: str) -> Pairs:
    def decode(s: str) -> str:
        return unquote_to_bytes(s.replace("+", " ")).decode("utf-8", "replace")

    out: Pairs = []
    for part in q.split("&"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        out.append((decode(k), decode(v) if sep else ""))
    return out


class Request:
    """One HTTP request addressed to an object.

    The station passes the path after ``/objects/{id}`` as sent (percent-encoding kept,
    always starting with ``/``), the decoded query parameters (without the keys the station
    reserves, such as ``logs``), the headers (names lower-case) and the raw body.

    Build one yourself for :func:`object_primitive.runtime.call` or to call handlers in
    tests::

        >>> req = Request("get", "items/a%20b?limit=2")
        >>> req.method, req.path, req.segments(), req.query("limit")
        ('GET', '/items/a%20b', ['items', 'a b'], '2')
        >>> Request("POST", "/", json={"x": 1}).body
        b'{"x":1}'
    """

    __slots__ = ("method", "path", "query_pairs", "headers", "body")

    #: Upper-case HTTP method: ``GET``, ``POST``, ``PUT``, ``DELETE`` or ``PATCH``.
    method: str
    #: The path after ``/objects/{id}``, percent-encoding kept; ``/`` when empty.
    path: str
    #: Decoded query parameters, in the order they arrived (see :meth:`query`).
    query_pairs: Pairs
    #: Request headers, in the order they arrived; names are lower-case (see :meth:`header`).
    headers: Pairs
    #: The raw request body.
    body: bytes

    def __init__(
        self,
        method: str = "GET",
        path: str = "/",
        *,
        query: PairsLike = None,
        headers: PairsLike = None,
        body: Union[bytes, str, None] = None,
        json: Any = dataclasses.MISSING,
    ) -> None:
        """A request with ``method`` (upper-cased) and ``path``.

        A path without a leading ``/`` gets one; a ``?query`` part of ``path`` is split off
        and decoded into :attr:`query_pairs` (before any pairs given as ``query``). Header
        names are lower-cased. ``body`` may be ``bytes`` or ``str`` (UTF-8); ``json=value``
        sets the body to ``value`` as JSON and adds ``content-type: application/json``.
        """
        path, sep, q = path.partition("?")
        self.method = method.upper()
        self.path = path if path.startswith("/") else "/" + path
        self.query_pairs = (_parse_query(q) if sep else []) + _pairs(query)
        self.headers = [(k.lower(), v) for k, v in _pairs(headers)]
        if json is not dataclasses.MISSING:
            if body is not None:
                raise TypeError("give either body= or json=, not both")
            self.body = dumps(json).encode("utf-8")
            if self.header("content-type") is None:
                self.headers.append(("content-type", JSON_CONTENT_TYPE))
        else:
            self.body = _to_bytes(body)

    @classmethod
    def _raw(
        cls, method: str, path: str, query: Pairs, headers: Pairs, body: bytes
    ) -> "Request":
        """Wraps what the station sent, as is (no parsing, no copies)."""
        req = cls.__new__(cls)
        req.method = method
        req.path = path
        req.query_pairs = query
        req.headers = headers
        req.body = body
        return req

    def __repr__(self) -> str:
        return (
            f"Request({self.method!r}, {self.path!r}, query={self.query_pairs!r}, "
            f"headers={self.headers!r}, body={self.body!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return all(getattr(self, a) == getattr(other, a) for a in Request.__slots__)

    # -- path -------------------------------------------------------------------------

    def _raw_segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s]

    def segments(self) -> list[str]:
        """The path's segments, percent-decoded, empty segments skipped.

        ``/a//b%2Fc/`` gives ``["a", "b/c"]``: the path is split on ``/`` first, so an
        encoded ``%2F`` stays inside its segment. Bytes that are not valid UTF-8 after
        decoding become U+FFFD (use :meth:`try_segments` to refuse them instead). Malformed
        escapes (``%zz``) are kept as written.
        """
        return [_decode_segment(s).decode("utf-8", "replace") for s in self._raw_segments()]

    def try_segments(self) -> list[str]:
        """Like :meth:`segments`, but raises :class:`BadRequest` (a 400 answer) for a
        segment that is not valid UTF-8 once decoded."""
        out = []
        for s in self._raw_segments():
            try:
                out.append(_decode_segment(s).decode("utf-8"))
            except UnicodeDecodeError:
                raise BadRequest(
                    f"path segment {dumps(s)} is not valid UTF-8 once decoded"
                ) from None
        return out

    def segment(self, index: int) -> Optional[str]:
        """The ``index``-th path segment (from :meth:`segments`), or ``None``."""
        raw = self._raw_segments()
        if 0 <= index < len(raw):
            return _decode_segment(raw[index]).decode("utf-8", "replace")
        return None

    # -- query and headers --------------------------------------------------------------

    @overload
    def query(self, name: str) -> Optional[str]: ...
    @overload
    def query(self, name: str, default: str) -> str: ...
    @overload
    def query(self, name: str, default: Optional[str]) -> Optional[str]: ...

    def query(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of query parameter ``name``, or ``default`` if it is absent.

        ``?flag`` (no ``=``) has the value ``""``.
        """
        for k, v in self.query_pairs:
            if k == name:
                return v
        return default

    def query_all(self, name: str) -> list[str]:
        """Every value of query parameter ``name``, in order."""
        return [v for k, v in self.query_pairs if k == name]

    @overload
    def header(self, name: str) -> Optional[str]: ...
    @overload
    def header(self, name: str, default: str) -> str: ...
    @overload
    def header(self, name: str, default: Optional[str]) -> Optional[str]: ...

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header ``name`` (compared case-insensitively), or ``default``."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def bearer_token(self) -> Optional[str]:
        """The token of an ``Authorization: Bearer <token>`` header, if there is one with a
        non-empty token. The scheme is compared case-insensitively and the token is trimmed
        of surrounding spaces::

            >>> Request("GET", "/", headers={"Authorization": "Bearer abc"}).bearer_token()
            'abc'
        """
        value = self.header("authorization")
        if value is None:
            return None
        scheme, sep, token = value.strip(" ").partition(" ")
        token = token.strip(" ")
        if sep and scheme.lower() == "bearer" and token:
            return token
        return None

    # -- body -------------------------------------------------------------------------

    def text(self) -> str:
        """The body as UTF-8 text; raises :class:`BadRequest` (a 400 answer) if it is not
        valid UTF-8."""
        try:
            return self.body.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"request body is not valid UTF-8: {e}") from None

    def json(self) -> Any:
        """The body parsed as JSON; raises :class:`BadRequest` (a 400 answer) saying what is
        wrong with it. An uncaught ``BadRequest`` answers the call::

            def post(self, req: Request) -> Response:
                item = req.json()          # {"error":"bad_request",...} on bad JSON
                ...
        """
        try:
            return _json.loads(self.text())
        except ValueError as e:
            raise BadRequest(f"request body is not the expected JSON: {e}") from None


def _response(status: int, headers: Pairs, body: bytes) -> "Response":
    """A Response from values already in shape (the constructors' fast path)."""
    r = object.__new__(Response)
    r.status = status
    r.headers = headers
    r.body = body
    return r


class Response:
    """An object's answer: status, headers and body reach the client unchanged.

    Build one with a constructor::

        >>> Response.json({"id": 7}, status=201).body
        b'{"id":7}'
        >>> Response.error(404, "not_found", "no such item").body
        b'{"error":"not_found","message":"no such item"}'
        >>> Response.text("hi").header("content-type")
        'text/plain; charset=utf-8'

    ``Response()`` is ``204 No Content``.
    """

    __slots__ = ("status", "headers", "body")

    #: HTTP status code. Below 500 the call's state writes commit; 500 or more discards them.
    status: int
    #: Response headers, in order.
    headers: Pairs
    #: The raw response body.
    body: bytes

    def __init__(
        self,
        status: int = 204,
        headers: PairsLike = None,
        body: Union[bytes, str, None] = None,
    ) -> None:
        """A response with ``status``, ``headers`` (pairs or a mapping) and ``body``
        (``bytes``, or ``str`` sent as UTF-8)."""
        self.status = status
        self.headers = _pairs(headers)
        self.body = _to_bytes(body)

    def __repr__(self) -> str:
        return f"Response({self.status!r}, {self.headers!r}, {self.body!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return NotImplemented
        return (self.status, self.headers, self.body) == (
            other.status,
            other.headers,
            other.body,
        )

    # -- constructors -----------------------------------------------------------------

    @staticmethod
    def json(value: Any, status: int = 200, headers: PairsLike = None) -> "Response":
        """``status`` (200) with ``value`` as compact JSON (``content-type:
        application/json``), written as the Rust SDK writes it (see :func:`dumps`).

        If ``value`` cannot be written as JSON (a ``set``, ``NaN``, ...), the answer is a
        ``500 serialization_failed`` error saying why instead.
        """
        try:
            body = dumps(value).encode("utf-8")
        except (TypeError, ValueError, RecursionError) as e:
            return Response.error(
                500,
                "serialization_failed",
                f"the response value does not serialize to JSON: {e}",
            )
        fields = [("content-type", JSON_CONTENT_TYPE)]
        if headers is not None:
            fields += _pairs(headers)
        return _response(status, fields, body)

    @staticmethod
    def text(text: str, status: int = 200, headers: PairsLike = None) -> "Response":
        """``status`` (200) with ``text`` as the body (``content-type: text/plain;
        charset=utf-8``)."""
        fields = [("content-type", TEXT_CONTENT_TYPE)]
        if headers is not None:
            fields += _pairs(headers)
        return _response(status, fields, _to_bytes(text))

    @staticmethod
    def binary(
        body: bytes,
        content_type: str = "application/octet-stream",
        status: int = 200,
        headers: PairsLike = None,
    ) -> "Response":
        """``status`` (200) with raw ``body`` bytes and the given ``content-type``."""
        return Response(status, [("content-type", content_type)] + _pairs(headers), body)

    @staticmethod
    def error(status: int, code: str, message: str) -> "Response":
        """An error with ``status`` and the JSON body ``{"error": code, "message": message}``.

        Use a stable, snake_case ``code`` that clients can match on.
        """
        body = dumps({"error": code, "message": message}).encode("utf-8")
        return _response(status, [("content-type", JSON_CONTENT_TYPE)], body)

    @staticmethod
    def not_found(message: str) -> "Response":
        """``404`` with error code ``not_found``."""
        return Response.error(404, "not_found", message)

    @staticmethod
    def bad_request(message: str) -> "Response":
        """``400`` with error code ``bad_request``."""
        return Response.error(400, "bad_request", message)

    @staticmethod
    def method_not_allowed(
        message: str = "this method is not supported by this object",
    ) -> "Response":
        """``405`` with error code ``method_not_allowed``."""
        return Response.error(405, "method_not_allowed", message)

    # -- changing a response ----------------------------------------------------------

    def with_status(self, status: int) -> "Response":
        """A copy of this response with another status code."""
        return Response(status, list(self.headers), self.body)

    def with_header(self, name: str, value: str) -> "Response":
        """A copy of this response with header ``name: value``, replacing any earlier header
        of that name (compared case-insensitively). The name is lower-cased."""
        name = name.lower()
        headers = [(k, v) for k, v in self.headers if k.lower() != name]
        headers.append((name, value))
        return Response(self.status, headers, self.body)

    # -- reading a response (tests, runtime.call answers) --------------------------------

    @overload
    def header(self, name: str) -> Optional[str]: ...
    @overload
    def header(self, name: str, default: str) -> str: ...
    @overload
    def header(self, name: str, default: Optional[str]) -> Optional[str]: ...

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of header ``name`` (compared case-insensitively), or ``default``."""
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return default

    def text_body(self) -> str:
        """The body as text (invalid UTF-8 replaced with U+FFFD)."""
        return self.body.decode("utf-8", "replace")

    def json_body(self) -> Any:
        """The body parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return _json.loads(self.body)


class HTTPError(Exception):
    """Raise it in a handler to answer with an error response.

    ``raise HTTPError(409, "conflict", "the item changed")`` answers like
    ``return Response.error(409, "conflict", "the item changed")``, so the same commit rule
    applies: below 500, the call's state writes so far commit; 500 or more discards them.
    """

    def __init__(
        self, status: int, code: str, message: str, headers: PairsLike = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = _pairs(headers)

    @property
    def response(self) -> Response:
        """The answer: ``Response.error(status, code, message)`` plus any extra headers."""
        r = Response.error(self.status, self.code, self.message)
        r.headers.extend(self.headers)
        return r


class BadRequest(HTTPError):
    """``400 bad_request``: raised by :meth:`Request.json`, :meth:`Request.text` and
    :meth:`Request.try_segments`; raise it yourself for bad input."""

    def __init__(self, message: str) -> None:
        super().__init__(400, "bad_request", message)


class NotFound(HTTPError):
    """``404 not_found``."""

    def __init__(self, message: str) -> None:
        super().__init__(404, "not_found", message)
