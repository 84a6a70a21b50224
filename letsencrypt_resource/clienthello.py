"""
Read the server name and the ALPN protocols a TLS ClientHello offers,
from the first bytes of a connection, before OpenSSL sees them.
"""

from __future__ import annotations

import attrs

#: The most bytes of records read for one ClientHello.
MAX_HELLO = 16384 + 5

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_SERVER_NAME = 0
_ALPN = 16


class NotClientHello(ValueError):
    """
    The bytes are not a well-formed TLS ClientHello.
    """


@attrs.frozen
class ClientHello:
    """
    What a ClientHello asks for.

    @ivar serverName: Its SNI host name, lower case, if any.
    @ivar protocols: The ALPN protocols it offers.
    """

    serverName: str | None
    protocols: tuple[bytes, ...]


class _Reader:
    """
    Reads big-endian fields off bytes, raising L{NotClientHello} past their
    end.
    """

    def __init__(self, data: bytes):
        self._data = data
        self._at = 0

    def integer(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def take(self, size: int) -> bytes:
        if self._at + size > len(self._data):
            raise NotClientHello("a field runs past its end")
        taken = self._data[self._at : self._at + size]
        self._at += size
        return taken

    def vector(self, lengthSize: int) -> _Reader:
        return _Reader(self.take(self.integer(lengthSize)))

    def done(self) -> bool:
        return self._at == len(self._data)


def _handshakeBytes(data: bytes | bytearray) -> bytes | None:
    """
    The handshake bytes of the records at the start of C{data}, once they
    hold the whole first handshake message; C{None} while more are needed.
    """
    handshake = b""
    at = 0
    while True:
        if len(handshake) >= 4:
            needed = 4 + int.from_bytes(handshake[1:4], "big")
            if len(handshake) >= needed:
                return handshake[:needed]
        if len(data) < at + 5:
            return None
        if data[at] != _HANDSHAKE:
            raise NotClientHello("the first record is not a handshake record")
        length = int.from_bytes(data[at + 3 : at + 5], "big")
        if len(data) < at + 5 + length:
            return None
        handshake += bytes(data[at + 5 : at + 5 + length])
        at += 5 + length


def parseClientHello(data: bytes | bytearray) -> ClientHello | None:
    """
    The ClientHello at the start of C{data}, the first bytes a client
    sent; C{None} while it is incomplete.

    @raise NotClientHello: when C{data} does not start with one, or it is
        longer than L{MAX_HELLO} bytes.
    """
    handshake = _handshakeBytes(data if len(data) <= MAX_HELLO else data[:MAX_HELLO])
    if handshake is None:
        if len(data) >= MAX_HELLO:
            raise NotClientHello("the ClientHello is too long")
        return None
    message = _Reader(handshake)
    if message.integer(1) != _CLIENT_HELLO:
        raise NotClientHello("the first handshake message is not a ClientHello")
    hello = message.vector(3)
    hello.take(2 + 32)
    hello.vector(1)
    hello.vector(2)
    hello.vector(1)
    serverName: str | None = None
    protocols: tuple[bytes, ...] = ()
    extensions = hello.vector(2) if not hello.done() else _Reader(b"")
    while not extensions.done():
        kind = extensions.integer(2)
        body = extensions.vector(2)
        if kind == _SERVER_NAME:
            serverName = _serverName(body.vector(2))
        elif kind == _ALPN:
            offered = body.vector(2)
            names = []
            while not offered.done():
                names.append(offered.take(offered.integer(1)))
            protocols = tuple(names)
    return ClientHello(serverName, protocols)


def _serverName(names: _Reader) -> str | None:
    """
    The first host name of an SNI list, lower case without a final dot.
    """
    while not names.done():
        kind = names.integer(1)
        name = names.take(names.integer(2))
        if kind == 0:
            try:
                return name.decode("ascii").lower().rstrip(".")
            except UnicodeDecodeError:
                raise NotClientHello("the server name is not ASCII") from None
    return None
