"""
Read the server name and the ALPN protocols a TLS ClientHello offers,
from the first bytes of a connection, before OpenSSL sees them.
"""

from __future__ import annotations

import attrs

#: The most bytes of records read for one ClientHello.
MAX_HELLO = 16384 + 5
#: The most records read for one ClientHello: one usually, two for a large
#: one (post-quantum key shares).
MAX_RECORDS = 4

_HANDSHAKE = 22
#: The first byte of a TLS handshake record, a ClientHello's.
HANDSHAKE_RECORD = bytes([_HANDSHAKE])
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


class HelloReader:
    """
    Reads a ClientHello off the first bytes of a connection as they come.

    Each byte is looked at once: a record is read when it is whole, and the
    ClientHello when its last record is.  A ClientHello takes one record,
    or a few when it is large; more records than L{MAX_RECORDS}, an empty
    record, or more than L{MAX_HELLO} bytes of records are refused, so that
    a client sending tiny records costs little before OpenSSL gets them.
    """

    def __init__(self) -> None:
        self._unread = bytearray()
        self._handshake = bytearray()
        self._records = 0
        self._used = 0

    def feed(self, data: bytes | bytearray) -> ClientHello | None:
        """
        Read the next bytes the client sent.

        @return: The ClientHello, once whole; C{None} while it is not.
        @raise NotClientHello: when the bytes so far do not start with a
            ClientHello, or it is longer than allowed.
        """
        self._unread += data
        while len(self._unread) >= 5:
            if self._unread[0] != _HANDSHAKE:
                raise NotClientHello("the first record is not a handshake record")
            length = int.from_bytes(self._unread[3:5], "big")
            if length == 0:
                raise NotClientHello("an empty handshake record")
            if self._records == MAX_RECORDS or self._used + 5 + length > MAX_HELLO:
                raise NotClientHello("the ClientHello is too long")
            if len(self._unread) < 5 + length:
                return None
            self._handshake += self._unread[5 : 5 + length]
            del self._unread[: 5 + length]
            self._records += 1
            self._used += 5 + length
            if len(self._handshake) >= 4:
                needed = 4 + int.from_bytes(self._handshake[1:4], "big")
                if needed > MAX_HELLO:
                    raise NotClientHello("the ClientHello is too long")
                if len(self._handshake) >= needed:
                    return _parseHandshake(bytes(self._handshake[:needed]))
        return None


def _parseHandshake(handshake: bytes) -> ClientHello:
    """
    The ClientHello in the handshake message C{handshake}.
    """
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
