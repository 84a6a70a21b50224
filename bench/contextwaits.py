"""
How many turns of the reactor a cold-start burst of TLS connections takes
to go on, when several connections reach each service before its context
is built (a browser opens about 6 at once): C{--services} services, each
a L{ReloadableServerTLS} on its own provisional certificate not signed
yet, all under one L{FirstHandshakes}, get C{--connections} connections
each in one turn.  The turns are run one at a time, as a real reactor
runs them; it prints the turn in which the last connection was let go
on, the process's CPU time, and the longest turn's CPU time.  The
connections are fakes (a transport that records its pause and resume):
the figure is the budget's, not the network's.  Run it from the root of
the tree to measure (a tree exported before a change with C{git
archive}, then this one, in turn):

    cd /tmp/before && /path/to/.venv/bin/python /path/to/bench/contextwaits.py --services 80
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

sys.path.insert(0, os.getcwd())

from letsencrypt_resource import provisional  # noqa: E402, I001
from letsencrypt_resource.firsthandshakes import FirstHandshakes  # noqa: E402
from letsencrypt_resource.tls import ReloadableServerTLS  # noqa: E402
from twisted.internet.task import Clock  # noqa: E402


class Transport:
    """
    Records whether the connection was let go on.
    """

    resumed = False

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        self.resumed = True


class TLSProtocol:
    """
    What L{ReloadableServerTLS} reads of a TLS protocol: its transport.
    """

    def __init__(self) -> None:
        self.transport = Transport()


def oneTurn(clock: Clock) -> None:
    """
    Run the calls due now, as one turn of a reactor: a call they schedule
    for now runs in the next turn.
    """
    due = [call for call in clock.getDelayedCalls() if call.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=80, help="services (80)")
    parser.add_argument("--connections", type=int, default=6, help="connections each (6)")
    options = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    signer = provisional.makeSigner("bench", ("test",), now)
    key = provisional.generateKey("ecdsa-p256")
    clock = Clock()
    budget = FirstHandshakes(clock)
    services = []
    for index in range(options.services):
        tls = ReloadableServerTLS(firstHandshakes=budget)
        tls.setCertificate(provisional.makeProvisional(signer, (f"s{index}.test",), now, key))
        services.append(tls)
    start = time.process_time()
    protocols = []
    for _ in range(options.connections):
        for tls in services:
            protocol = TLSProtocol()
            tls.serverConnectionForTLS(protocol)
            protocols.append(protocol)
    longest = time.process_time() - start
    turns = last = waited = 0
    while clock.getDelayedCalls():
        began = time.process_time()
        oneTurn(clock)
        longest = max(longest, time.process_time() - began)
        turns += 1
        resumed = sum(protocol.transport.resumed for protocol in protocols)
        if resumed > waited:
            waited, last = resumed, turns
    cpu = time.process_time() - start
    print(
        f"{os.getcwd()}: {options.services} services x {options.connections} connections: "
        f"{waited} waited, the last went on in turn {last}; {cpu * 1000:.0f} ms CPU, "
        f"longest turn {longest * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
