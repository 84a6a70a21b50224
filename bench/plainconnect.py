"""
What plain TCP connections that send no ClientHello cost the services
they reach, in CPU time: C{--services} listeners on loopback, each built
as an C{https} service builds its own (L{HelloPeekFactory} over a
L{ReloadableServerTLS} on its own provisional certificate, not signed
yet), and one connection to each that sends 8 bytes that are no TLS (or
what C{--send} gives).  It
prints the process's CPU time from the first connection until
C{--settle} seconds later (the client's part is the same in every tree)
and how many provisional certificates were signed.  Run it from the root
of the tree to measure (a tree exported before a change with C{git
archive}, then this one, in turn):

    cd /tmp/before && /path/to/.venv/bin/python /path/to/bench/plainconnect.py --services 300
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sys
import time
from typing import Any

sys.path.insert(0, os.getcwd())

from letsencrypt_resource import provisional  # noqa: E402, I001
from letsencrypt_resource.alpnpeek import HelloPeekFactory  # noqa: E402
from letsencrypt_resource.firsthandshakes import firstHandshakesOf  # noqa: E402
from letsencrypt_resource.tls import ReloadableServerTLS  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.internet.protocol import Factory, Protocol  # noqa: E402
from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: E402


def listen(count: int, firstPort: int) -> list[int]:
    """
    Listen as C{count} services on provisional certificates, on loopback
    ports from C{firstPort} on.

    @return: A list that grows by one at each provisional signature.
    """
    signed: list[int] = []
    sign = provisional.signProvisional

    def counted(*arguments: Any) -> Any:
        signed.append(1)
        return sign(*arguments)

    provisional.signProvisional = counted  # type: ignore[assignment]
    now = datetime.datetime.now(datetime.timezone.utc)
    signer = provisional.makeSigner("bench", ("test",), now)
    key = provisional.generateKey("ecdsa-p256")
    for index in range(count):
        tls = ReloadableServerTLS(firstHandshakes=firstHandshakesOf(reactor))
        tls.setCertificate(provisional.makeProvisional(signer, (f"s{index}.test",), now, key))
        inner = TLSMemoryBIOFactory(tls, False, Factory.forProtocol(Protocol), clock=reactor)
        try:
            peek = HelloPeekFactory(inner, lambda: None, reactor)  # type: ignore[call-arg]
        except TypeError:
            # A tree from before the peek took a clock.
            peek = HelloPeekFactory(inner, lambda: None)  # type: ignore[call-arg]
        reactor.listenTCP(firstPort + index, peek, interface="127.0.0.1")  # type: ignore[attr-defined]
    return signed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=300, help="listeners (300)")
    parser.add_argument("--first-port", type=int, default=29000, help="first port (29000)")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds measured (2)")
    parser.add_argument(
        "--send",
        default="00" * 8,
        help="what each connection sends, in hex (8 zero bytes; 16: a TLS record's first byte)",
    )
    options = parser.parse_args()
    signed = listen(options.services, options.first_port)
    clients: list[socket.socket] = []

    def connect() -> None:
        start = time.process_time()
        for index in range(options.services):
            client = socket.create_connection(("127.0.0.1", options.first_port + index))
            client.sendall(bytes.fromhex(options.send))
            clients.append(client)

        def done() -> None:
            cpu = time.process_time() - start
            print(
                f"{os.getcwd()}: {options.services} plain connections sending {options.send}: "
                f"{cpu * 1000:.0f} ms CPU, {len(signed)} provisional certificates signed"
            )
            for client in clients:
                client.close()
            reactor.stop()  # type: ignore[attr-defined]

        reactor.callLater(options.settle, done)  # type: ignore[attr-defined]

    reactor.callWhenRunning(connect)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
