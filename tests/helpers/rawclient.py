"""
A blocking HTTP/1.1 client for attacks: raw requests, over TLS or not, to a
server in another process, read to the end; run it in a thread.
"""

from __future__ import annotations

import socket
import ssl

from tests.helpers import parseResponse

#: How long a listener may take to answer an attack.
PROMPT = 5.0


def connect(port: int, tls: bool) -> socket.socket:
    """
    A blocking connection to 127.0.0.1:C{port}, through TLS (any
    certificate accepted) when C{tls}.
    """
    connection = socket.create_connection(("127.0.0.1", port), timeout=PROMPT)
    if not tls:
        return connection
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context.wrap_socket(connection, server_hostname="files.example.test")


def readAll(connection: socket.socket) -> bytes:
    """
    Read until the other side closes, or the connection breaks.

    @raise TimeoutError: when nothing comes for L{PROMPT} seconds.
    """
    received = b""
    while True:
        try:
            data = connection.recv(65536)
        except TimeoutError:
            raise
        except OSError:
            # Reset, or a TLS record cut short: the server closed.
            return received
        if not data:
            return received
        received += data


def exchange(port: int, tls: bool, head: bytes) -> bytes:
    """
    Send a request, C{head} with C{Connection: close} added, and read the
    whole answer.
    """
    with connect(port, tls) as connection:
        connection.sendall(head + b"Connection: close\r\n\r\n")
        return readAll(connection)


def fetch(port: int, target: bytes, tls: bool = True, headers: bytes = b"") -> bytes:
    """
    Send one GET for C{target}, with the extra header lines C{headers}, and
    read the whole answer.
    """
    return exchange(
        port, tls, b"GET %s HTTP/1.1\r\nHost: files.example.test\r\n%s" % (target, headers)
    )


def statusOf(answer: bytes) -> int:
    """
    The status code of a raw HTTP answer.
    """
    return parseResponse(answer).code


def sendFlood(connection: socket.socket, head: bytes, chunk: bytes, limit: int) -> int:
    """
    Send C{head}, then C{chunk} again and again up to C{limit} bytes, until
    the server closes or stops reading.

    @return: How many body bytes were sent.
    """
    sent = 0
    try:
        connection.sendall(head)
        while sent < limit:
            connection.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass
    return sent
