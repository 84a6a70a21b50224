"""
Tests for L{letsencrypt_resource.clienthello}, on ClientHellos OpenSSL
writes.
"""

from __future__ import annotations

import random

from OpenSSL import SSL
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import clienthello as clienthelloModule
from letsencrypt_resource.clienthello import (
    MAX_HELLO,
    MAX_RECORDS,
    ClientHello,
    HelloReader,
    NotClientHello,
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


def parseClientHello(data: bytes) -> ClientHello | None:
    """
    The ClientHello a new L{HelloReader} reads off C{data}, given at once.
    """
    return HelloReader().feed(data)


def inRecords(data: bytes, sizes: list[int]) -> bytes:
    """
    The handshake bytes of the records in C{data} again, in records of
    C{sizes} bytes then one of the rest.
    """
    body = data[5:]
    records = b""
    for size in [*sizes, len(body) - sum(sizes)]:
        records += data[:3] + size.to_bytes(2, "big") + body[:size]
        body = body[size:]
    return records


class ParseClientHelloTests(SynchronousTestCase):
    """
    Tests for L{HelloReader}, given the bytes at once.
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
        split = inRecords(clientHello(b"example.com", [b"acme-tls/1"]), [20])
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


class IncrementalReadTests(SynchronousTestCase):
    """
    Tests for L{HelloReader} given the bytes as they come: the work stays
    linear, however the client cuts its records.
    """

    def countParses(self) -> list[bytes]:
        """
        Record each ClientHello message parsed from now on.
        """
        parsed: list[bytes] = []
        parse = clienthelloModule._parseHandshake

        def counting(handshake: bytes) -> ClientHello:
            parsed.append(handshake)
            return parse(handshake)

        self.patch(clienthelloModule, "_parseHandshake", counting)
        return parsed

    def test_byteAtATime(self) -> None:
        """
        A ClientHello in L{MAX_RECORDS} records sent a byte at a time is
        read once it is whole, and its message is parsed only then, once.
        """
        parsed = self.countParses()
        data = inRecords(clientHello(b"example.com", [b"acme-tls/1"]), [1, 2, 3])
        reader = HelloReader()
        for at in range(len(data) - 1):
            self.assertIsNone(reader.feed(data[at : at + 1]))
        self.assertEqual(parsed, [])
        self.assertEqual(reader.feed(data[-1:]), ClientHello("example.com", (b"acme-tls/1",)))
        self.assertEqual(len(parsed), 1)

    def test_tinyRecords(self) -> None:
        """
        A handshake announcing a huge message in one-byte records, sent a
        record at a time (the attack that made the former parser
        quadratic), is refused at the record past L{MAX_RECORDS}, having
        parsed no message.
        """
        parsed = self.countParses()
        reader = HelloReader()
        reader.feed(b"\x16\x03\x01\x00\x04\x01\x00\x10\x00")
        for _ in range(MAX_RECORDS - 1):
            self.assertIsNone(reader.feed(b"\x16\x03\x01\x00\x01\x00"))
        self.assertRaises(NotClientHello, reader.feed, b"\x16\x03\x01\x00\x01\x00")
        self.assertEqual(parsed, [])

    def test_emptyRecords(self) -> None:
        """
        An empty handshake record, which TLS forbids, is refused at once.
        """
        reader = HelloReader()
        self.assertIsNone(reader.feed(b"\x16\x03\x01\x00\x04\x01\x00"))
        self.assertRaises(NotClientHello, reader.feed, b"\x00\xff\x16\x03\x01\x00\x00")

    def test_hugeMessage(self) -> None:
        """
        A handshake message announced longer than L{MAX_HELLO} is refused
        as soon as its header is read.
        """
        reader = HelloReader()
        self.assertRaises(NotClientHello, reader.feed, b"\x16\x03\x01\x00\x04\x01\xff\xff\xff")
