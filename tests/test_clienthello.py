"""
Tests for L{letsencrypt_resource.clienthello}, on ClientHellos OpenSSL
writes.
"""

from __future__ import annotations

import random

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.clienthello import (
    MAX_HELLO,
    ClientHello,
    NotClientHello,
    parseClientHello,
)


def clientHello(name: bytes | None = None, protocols: list[bytes] | None = None) -> bytes:
    """
    The first bytes an OpenSSL client sends, with SNI C{name} and ALPN
    C{protocols} when given.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    if protocols:
        context.set_alpn_protos(protocols)
    connection = SSL.Connection(context, None)
    if name is not None:
        connection.set_tlsext_host_name(name)
    connection.set_connect_state()
    try:
        connection.do_handshake()
    except SSL.WantReadError:
        pass
    return connection.bio_read(65536)


class ParseClientHelloTests(SynchronousTestCase):
    """
    Tests for L{parseClientHello}.
    """

    def test_nameAndProtocols(self) -> None:
        """
        The SNI name, in lower case without a final dot, and the ALPN
        protocols offered are read.
        """
        data = clientHello(b"Files.Example.COM.", [b"acme-tls/1", b"h2"])
        self.assertEqual(
            parseClientHello(data), ClientHello("files.example.com", (b"acme-tls/1", b"h2"))
        )

    def test_neither(self) -> None:
        """
        A ClientHello without SNI or ALPN has neither.
        """
        self.assertEqual(parseClientHello(clientHello()), ClientHello(None, ()))

    def test_incomplete(self) -> None:
        """
        Every strict prefix of a ClientHello is incomplete: C{None}.
        """
        data = clientHello(b"example.com", [b"acme-tls/1"])
        for end in range(len(data)):
            self.assertIsNone(parseClientHello(data[:end]))

    def test_splitRecords(self) -> None:
        """
        A ClientHello split over two records is read whole.
        """
        data = clientHello(b"example.com", [b"acme-tls/1"])
        body = data[5:]
        header = data[:3]
        split = (
            header
            + (20).to_bytes(2, "big")
            + body[:20]
            + header
            + (len(body) - 20).to_bytes(2, "big")
            + body[20:]
        )
        self.assertEqual(parseClientHello(split), ClientHello("example.com", (b"acme-tls/1",)))

    def test_notTLS(self) -> None:
        """
        Bytes that are no TLS handshake, or a handshake that is no
        ClientHello, or a ClientHello whose fields overrun, are refused.
        """
        data = clientHello(b"example.com")
        for bad in (
            b"GET / HTTP/1.1\r\n\r\n",
            data[:5] + b"\x02" + data[6:],
            data[:5] + data[5:9] + b"\xff" * (len(data) - 9),
        ):
            self.assertRaises(NotClientHello, parseClientHello, bad)

    def test_tooLong(self) -> None:
        """
        Records that do not complete a ClientHello within L{MAX_HELLO}
        bytes are refused.
        """
        header = b"\x16\x03\x01" + (16384).to_bytes(2, "big")
        message = b"\x01" + (10**6).to_bytes(3, "big")
        data = header + message + b"\x00" * 16380 + header + b"\x00" * 100
        self.assertGreater(len(data), MAX_HELLO)
        self.assertRaises(NotClientHello, parseClientHello, data)

    def test_mutations(self) -> None:
        """
        A ClientHello with any byte changed is read, found incomplete, or
        refused with L{NotClientHello}: nothing else is raised.
        """
        data = clientHello(b"example.com", [b"acme-tls/1"])
        randomness = random.Random(8737)
        for _ in range(2000):
            mutated = bytearray(data)
            mutated[randomness.randrange(len(data))] = randomness.randrange(256)
            try:
                parseClientHello(bytes(mutated))
            except NotClientHello:
                pass
