"""Hashing, password hashing, constant-time comparison, secure random bytes and the
encodings that go with them: what an object needs to store credentials safely. The same
functions, with the same results, as the Rust SDK's ``object_primitive::crypto``.

Everything comes from the standard library (``hashlib``, ``hmac``, ``secrets``,
``base64``), which componentize-py bundles. Inside a component, ``secrets`` reads the
host's ``wasi:random`` (a CSPRNG). CPython built without OpenSSL (as for WASI) has no
``hashlib.pbkdf2_hmac``; :func:`pbkdf2_sha256` then computes PBKDF2 itself with
``hashlib``'s SHA-256, with the same result::

    >>> from object_primitive import crypto
    >>> salt = crypto.random_bytes(16)
    >>> stored = crypto.pbkdf2_sha256(b"correct horse", salt, 1000)
    >>> crypto.constant_time_eq(stored, crypto.pbkdf2_sha256(b"correct horse", salt, 1000))
    True
    >>> token = crypto.base64url_encode(crypto.random_bytes(32))
    >>> len(token), len(crypto.sha256_hex(token.encode()))
    (43, 64)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Callable, Optional

__all__ = [
    "sha256",
    "sha256_hex",
    "hmac_sha256",
    "pbkdf2_sha256",
    "constant_time_eq",
    "random_bytes",
    "base64_encode",
    "base64_decode",
    "base64url_encode",
    "hex",
]


def sha256(data: bytes) -> bytes:
    """The SHA-256 digest of ``data`` (32 bytes)."""
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    """The SHA-256 digest of ``data`` as 64 lower-case hex digits."""
    return hashlib.sha256(data).hexdigest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    """HMAC-SHA256 of ``data`` under ``key`` (RFC 2104)."""
    return hmac.new(key, data, hashlib.sha256).digest()


def _pbkdf2_fallback(password: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 for one 32-byte block, from ``hashlib.sha256`` alone.

    The HMAC key pads are hashed once and their states copied for every round (as
    OpenSSL does), and the XOR of the rounds is kept as one integer.
    """
    block = 64
    if len(password) > block:
        password = hashlib.sha256(password).digest()
    key = password.ljust(block, b"\0")
    inner = hashlib.sha256(key.translate(_TRANS_36))
    outer = hashlib.sha256(key.translate(_TRANS_5C))
    icopy, ocopy = inner.copy, outer.copy

    def prf(message: bytes) -> bytes:
        i = icopy()
        i.update(message)
        o = ocopy()
        o.update(i.digest())
        return o.digest()

    u = prf(salt + b"\x00\x00\x00\x01")
    acc = int.from_bytes(u, "big")
    from_bytes = int.from_bytes
    for _ in range(iterations - 1):
        u = prf(u)
        acc ^= from_bytes(u, "big")
    return acc.to_bytes(32, "big")


_TRANS_36 = bytes(x ^ 0x36 for x in range(256))
_TRANS_5C = bytes(x ^ 0x5C for x in range(256))

_native_pbkdf2: Optional[Callable[..., bytes]] = getattr(hashlib, "pbkdf2_hmac", None)


def pbkdf2_sha256(password: bytes, salt: bytes, iterations: int) -> bytes:
    """PBKDF2-HMAC-SHA256 (RFC 8018) of ``password`` with ``salt`` and ``iterations``
    rounds: a 32-byte key, the same as ``hashlib.pbkdf2_hmac("sha256", password, salt,
    iterations)`` and as the Rust SDK's ``crypto::pbkdf2_sha256``.

    For passwords, use a random salt of at least 16 bytes per user
    (:func:`random_bytes`) and at least 100,000 iterations; store the salt, the count
    and the result, and compare with :func:`constant_time_eq`. Raises ``ValueError`` if
    ``iterations`` is below 1.
    """
    if iterations < 1:
        raise ValueError("PBKDF2 needs at least one iteration")
    if _native_pbkdf2 is not None:
        return _native_pbkdf2("sha256", password, salt, iterations)
    return _pbkdf2_fallback(password, salt, iterations)


def constant_time_eq(a: bytes, b: bytes) -> bool:
    """Whether ``a`` and ``b`` are equal, in time that depends only on their lengths
    (``hmac.compare_digest``). Use it to compare secrets."""
    return hmac.compare_digest(a, b)


def random_bytes(n: int) -> bytes:
    """``n`` bytes from a cryptographically secure generator (``secrets``: the host's
    ``wasi:random`` inside a component, the operating system's natively)."""
    return secrets.token_bytes(n)


def base64_encode(data: bytes) -> str:
    """``data`` in standard base64 with ``=`` padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def base64_decode(text: str) -> Optional[bytes]:
    """Decodes standard base64 with padding, as :func:`base64_encode` writes it; ``None``
    for anything else (wrong length, other characters, bits left over)."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return data if base64_encode(data) == text else None


def base64url_encode(data: bytes) -> str:
    """``data`` in URL-safe base64 without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def hex(data: bytes) -> str:
    """``data`` as lower-case hex digits."""
    return data.hex()
