"""
A cluster of C{twistd -n lets-encrypt} nodes on loopback behind a real
HAProxy, for integration tests and benchmarks.

Every node runs the same configuration but for what one host forces apart:
its ports, its state directory and its C{node_name}.  The balancer has one
C{http} route for the HTTP-01 challenge port (the port the test CA
validates on: give L{Cluster.challengePort} as pebble's C{httpPort}) and
one C{tcp} route per domain set for its TLS service.  With a database the
nodes share it (C{cluster_database}, C{cluster_key_file}); without, they
are the independent nodes of today, each with its own account and orders.

The test CA and the database are started by the caller (a test case or a
benchmark), which passes their addresses to L{Cluster.startNodes}; what the
CA did is read from its log (L{pebbleCounts}).  Everything here is
synchronous: tests run the waits in a thread.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Sequence

import attrs
from cryptography import x509

from .. import config
from .haproxy import HAProxy, Route, freePort, releasePorts, terminate
from .pebble import RESOURCE_SECTION

#: The package's parent folder, put first on the nodes' C{PYTHONPATH} so
#: that they run this checkout.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: What every node's services serve at C{/hello.txt}.
HELLO = b"Hello from the cluster.\n"
#: The options a node needs to share a database.
CLUSTER_OPTIONS = ("cluster_database", "cluster_key_file", "node_name")

_ORDER_ADDED = re.compile(rb"Added order \S+ to the db")
_ACCOUNTS = re.compile(rb"There are now (\d+) accounts in memory")


def clusterOptionsKnown() -> bool:
    """
    Whether the C{lets-encrypt} resource declares the options that make
    nodes share a database.
    """
    known = {option.name for option in config.RESOURCE_OPTIONS}
    return all(name in known for name in CLUSTER_OPTIONS)


@attrs.frozen
class PebbleCounts:
    """
    What a pebble created since it started, read from its log.

    @ivar orders: Orders placed (C{Added order ... to the db}).
    @ivar accounts: Accounts registered (its last C{There are now N
        accounts in memory}).
    """

    orders: int
    accounts: int


def pebbleCounts(logPath: str) -> PebbleCounts:
    """
    Count the orders and accounts pebble's log at C{logPath} records: it
    writes one line per new order and one per new account (pebble 2.4 and
    2.10 alike); an account found again by its key writes none.
    """
    with open(logPath, "rb") as stream:
        text = stream.read()
    accounts = [int(n) for n in _ACCOUNTS.findall(text)]
    return PebbleCounts(len(_ORDER_ADDED.findall(text)), max(accounts, default=0))


def writeKeyFile(path: str) -> str:
    """
    Write a cluster key file of 32 random bytes, mode 0600, at C{path}.

    @return: C{path}.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(os.urandom(32))
    return path


def twistd() -> str:
    """
    The C{twistd} of the running Python: beside it, else on C{PATH}.
    """
    beside = os.path.join(os.path.dirname(sys.executable), "twistd")
    return beside if os.path.exists(beside) else shutil.which("twistd") or "twistd"


def peerCertificate(port: int, serverName: str, rootPEM: bytes | None) -> x509.Certificate | None:
    """
    One TLS handshake with 127.0.0.1:C{port} asking for C{serverName}.

    @param rootPEM: The root the chain and name must verify to; C{None}
        to take whatever is presented.
    @return: The certificate presented, or C{None} when the connection,
        the handshake or the verification failed.
    """
    if rootPEM is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=rootPEM.decode("ascii"))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=serverName) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return None if der is None else x509.load_der_x509_certificate(der)


@attrs.define
class Node:
    """
    One C{twistd} node: its ports, its folder (configuration, state
    directory, C{twistd.log}) and its process.
    """

    index: int
    folder: str
    challengePort: int
    servicePorts: tuple[int, ...]
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    @property
    def name(self) -> str:
        """
        Its C{node_name}.
        """
        return f"node{self.index}"

    @property
    def configPath(self) -> str:
        """
        Its configuration file.
        """
        return os.path.join(self.folder, "server.ini")

    @property
    def logPath(self) -> str:
        """
        Where its standard output and error go.
        """
        return os.path.join(self.folder, "twistd.log")

    @property
    def pid(self) -> int | None:
        """
        Its process id while it runs.
        """
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """
        Start C{twistd -n lets-encrypt} on its configuration, in a session
        of its own, its output appended to L{logPath}.
        """
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])),
        }
        with open(self.logPath, "ab") as log:
            self._process = subprocess.Popen(
                [twistd(), "-n", "--pidfile=", "lets-encrypt", "--config", self.configPath],
                cwd=self.folder,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        """
        Whether its process runs (a stopped one included).
        """
        return self._process is not None and self._process.poll() is None

    def signal(self, number: int) -> None:
        """
        Send it signal C{number} (C{SIGKILL}, C{SIGSTOP}, C{SIGCONT}...).
        """
        if self.running():
            assert self._process is not None
            self._process.send_signal(number)

    def stop(self, timeout: float = 30.0) -> int | None:
        """
        Stop it with C{SIGTERM} (after C{SIGCONT}, should it be stopped),
        C{SIGKILL} if it lingers, and wait.

        @return: Its exit status, or C{None} if it was not started.
        """
        process, self._process = self._process, None
        return None if process is None else terminate(process, timeout)

    def log(self) -> str:
        """
        What it logged so far.
        """
        with open(self.logPath, "rb") as stream:
            return stream.read().decode("utf-8", "replace")


_RESOURCE = "[server]\nname = cluster.example.test\n\n" + RESOURCE_SECTION

_SERVICE = """
[services/set{index}]
type = https
name = set{index}-https
address = 127.0.0.1
port = {port}
path = {public}
ssl_domains = {domains}
"""


@attrs.frozen
class Shared:
    """
    What every node's configuration names alike.

    @ivar directoryURL: The CA's ACME directory.
    @ivar caFile: The CA bundle trusted for the ACME server.
    @ivar database: The libpq connection string of the shared database;
        C{None} for independent nodes.
    @ivar keyFile: The cluster key file (with C{database}).
    @ivar keyType: The certificates' key type.
    """

    directoryURL: str
    caFile: str
    database: str | None = None
    keyFile: str | None = None
    keyType: str = "ecdsa-p256"


@attrs.define
class Cluster:
    """
    N nodes serving the same domain sets, and the HAProxy in front of them.

    @ivar folder: Holds a folder per node and the files they serve;
        created if missing.
    @ivar domainSets: The names of each set, one TLS service per set.
    """

    folder: str
    domainSets: Sequence[tuple[str, ...]]
    count: int = 3
    nodes: list[Node] = attrs.field(init=False)
    balancer: HAProxy = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.folder = os.path.abspath(self.folder)
        os.makedirs(self.folder, exist_ok=True)
        self.nodes = [
            Node(
                index,
                os.path.join(self.folder, f"node{index}"),
                freePort(),
                tuple(freePort() for _ in self.domainSets),
            )
            for index in range(self.count)
        ]
        checks = [n.challengePort for n in self.nodes]
        routes = [Route("challenge", "http", checks, checks=checks)]
        routes += [
            Route(f"set{i}", "tcp", [n.servicePorts[i] for n in self.nodes], track="challenge")
            for i in range(len(self.domainSets))
        ]
        self.balancer = HAProxy(routes)

    @property
    def challengePort(self) -> int:
        """
        The balancer's HTTP-01 port: pebble's C{httpPort}.
        """
        return self.balancer.route("challenge").port

    def balancedPort(self, setIndex: int) -> int:
        """
        The balancer's TLS port for domain set C{setIndex}.
        """
        return self.balancer.route(f"set{setIndex}").port

    def configuration(self, node: Node, shared: Shared) -> str:
        """
        The INI text of C{node}.
        """
        text = _RESOURCE.format(
            challengePort=node.challengePort,
            directoryURL=shared.directoryURL,
            caFile=shared.caFile,
            keyType=shared.keyType,
        )
        if shared.database is not None:
            text += f"cluster_database = {shared.database}\n"
            text += f"cluster_key_file = {shared.keyFile}\n"
            text += f"node_name = {node.name}\n"
        public = os.path.join(self.folder, "public")
        for index, domains in enumerate(self.domainSets):
            text += _SERVICE.format(
                index=index,
                port=node.servicePorts[index],
                public=public,
                domains=", ".join(domains),
            )
        return text

    def startBalancer(self) -> None:
        """
        Start HAProxy, every server of every route enabled.
        """
        self.balancer.start()

    def startNodes(self, shared: Shared, which: Sequence[int] | None = None) -> None:
        """
        Write each node's configuration and start it.

        @param which: The nodes to start, by index; all by default.
        """
        public = os.path.join(self.folder, "public")
        os.makedirs(public, exist_ok=True)
        with open(os.path.join(public, "hello.txt"), "wb") as stream:
            stream.write(HELLO)
        for index in range(self.count) if which is None else which:
            node = self.nodes[index]
            os.makedirs(node.folder, exist_ok=True)
            with open(node.configPath, "w") as stream:
                stream.write(self.configuration(node, shared))
            node.start()

    def served(self, rootPEM: bytes, nodeIndex: int, setIndex: int) -> x509.Certificate | None:
        """
        The certificate node C{nodeIndex} presents on its own port for
        domain set C{setIndex}, if it verifies to C{rootPEM}.
        """
        port = self.nodes[nodeIndex].servicePorts[setIndex]
        return peerCertificate(port, self.domainSets[setIndex][0], rootPEM)

    def waitUntilServed(
        self, rootPEM: bytes, timeout: float, nodes: Sequence[int] | None = None
    ) -> dict[tuple[int, int], int]:
        """
        Wait until each of C{nodes} (all by default) presents, for every
        domain set, a certificate that verifies to C{rootPEM}.

        @return: The serial each node presents for each set, by C{(node,
            set)}.
        @raise AssertionError: when a node exits, or not all are served
            within C{timeout} seconds; with what is missing and the logs.
        """
        waiting = {
            (n, s)
            for n in (range(self.count) if nodes is None else nodes)
            for s in range(len(self.domainSets))
        }
        serials: dict[tuple[int, int], int] = {}
        deadline = time.monotonic() + timeout
        while waiting:
            for pair in sorted(waiting):
                if not self.nodes[pair[0]].running():
                    raise AssertionError(f"node{pair[0]} exited:\n{self.nodes[pair[0]].log()}")
                certificate = self.served(rootPEM, *pair)
                if certificate is not None:
                    serials[pair] = certificate.serial_number
                    waiting.discard(pair)
            if waiting and time.monotonic() > deadline:
                logs = "".join(f"\n--- {n.name}:\n{n.log()[-4000:]}" for n in self.nodes)
                raise AssertionError(f"not served after {timeout} s: {sorted(waiting)}{logs}")
            if waiting:
                time.sleep(0.05)
        return serials

    def stop(self) -> None:
        """
        Stop every node, then the balancer.
        """
        for node in self.nodes:
            node.stop()
        self.balancer.stop()
        releasePorts(p for node in self.nodes for p in (node.challengePort, *node.servicePorts))
