"""
A real HAProxy on loopback, for tests and benchmarks of a cluster: Debian's
C{haproxy} run from its program in the foreground, from a configuration
generated here, as an unprivileged user (C{nobody} when the caller is
root, as CI runs), never the system's service.

Each L{Route} is a frontend on a free loopback port spread round-robin over
servers on loopback: C{http} mode for the HTTP-01 challenge port (each
request balanced), C{tcp} mode for a TLS port (each connection balanced,
the handshake passing through untouched).  Health checks are fast (every
100 ms, down after two failures or a second without an answer, up after
one success; an HTTP request to the node's challenge site when the route
names it, else a TCP connect), and a
connection refused by a server is tried again on another (C{retries},
C{option redispatch}), so that a node stopped or restarting is left out
within a fraction of a second; a node that stops refuses new connections
at once and lets those open end (see L{letsencrypt_resource.drain}), so a
rolling restart fails no handshake.  The
runtime API (an admin socket in the private folder) disables and enables
servers, for tests that need to choose where requests go.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

#: The user HAProxy runs as when the caller is root.
NOBODY = 65534
#: Seconds HAProxy may take to listen on every frontend.
START_TIMEOUT = 10.0
#: What HAProxy's HTTP health check asks of a node's challenge site: its
#: readiness text, answered without the storage.
HEALTH_PATH = "/.well-known/acme-challenge/test.txt"
#: How a route's name is spelt: it names a frontend and a backend.
_ROUTE_NAME = re.compile(r"[a-z][a-z0-9-]{0,30}\Z")


class HAProxyNotFound(Exception):
    """
    Debian's C{haproxy} is not installed.
    """


class HAProxyError(Exception):
    """
    HAProxy refused its configuration, did not start, or its runtime API
    answered an error.
    """


def findHAProxy() -> str:
    """
    The path of the C{haproxy} program: on C{PATH}, else in C{/usr/sbin}.

    @raise HAProxyNotFound: when there is none.
    """
    for candidate in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise HAProxyNotFound(
        "haproxy is not installed: ./dev installs Debian's (apt-get install haproxy)"
    )


#: The sockets that hold the ports given by L{freePort}, by port.
_reserved: dict[int, socket.socket] = {}


def freePort() -> int:
    """
    A TCP port on 127.0.0.1, reserved for the caller until
    L{releasePorts}.

    A port found free and bound later by another process could be taken
    meanwhile: the kernel gives ports of the same range to outgoing
    connections (a load of handshakes makes thousands) and to other
    programs' C{bind} to port 0.  So the port stays bound here, by a
    socket that does not listen and sets C{SO_REUSEADDR}: the kernel gives
    it to nobody else, while a server that also sets C{SO_REUSEADDR}
    (Twisted's and HAProxy's listeners do) binds and listens on it, and
    binds it again after a restart.
    """
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    port: int = holder.getsockname()[1]
    _reserved[port] = holder
    return port


def releasePorts(ports: Iterable[int]) -> None:
    """
    Let the kernel give C{ports}, reserved by L{freePort}, to others again.
    """
    for port in ports:
        holder = _reserved.pop(port, None)
        if holder is not None:
            holder.close()


def _checkName(route: Route, attribute: Any, value: str) -> None:
    if not _ROUTE_NAME.match(value):
        raise ValueError(f"route name {value!r}: lower-case letters, digits and '-' only")


def _checkMode(route: Route, attribute: Any, value: str) -> None:
    if value not in ("http", "tcp"):
        raise ValueError(f"route mode {value!r}: 'http' or 'tcp'")


def _ports(ports: Iterable[int]) -> tuple[int, ...]:
    return tuple(int(port) for port in ports)


@attrs.frozen
class Route:
    """
    One balanced port.

    @ivar name: The frontend's and backend's name; servers are C{node0},
        C{node1}...
    @ivar mode: C{"http"} (each request balanced) or C{"tcp"}.
    @ivar servers: The loopback ports of the servers, in order.
    @ivar port: Where HAProxy listens on 127.0.0.1; a free port by default.
    @ivar checks: For each server, the port of its node's challenge site,
        which HAProxy's health check asks for L{HEALTH_PATH} (a node
        stopped with C{SIGSTOP} still accepts connections, and would stay
        in service with a bare connect check); none for connect checks.
    @ivar track: The name of a route whose servers' states this route's
        servers take, one for one, instead of checking on their own: one
        check per node, however many routes.
    """

    name: str = attrs.field(validator=_checkName)
    mode: str = attrs.field(validator=_checkMode)
    servers: tuple[int, ...] = attrs.field(converter=_ports)
    port: int = attrs.field(factory=freePort)
    checks: tuple[int, ...] = attrs.field(default=(), converter=_ports)
    track: str = ""


def configuration(routes: Sequence[Route], adminSocket: str) -> str:
    """
    The text of HAProxy's configuration for C{routes}, with its runtime
    API on the Unix socket C{adminSocket} (mode 0600).
    """
    lines = [
        "global",
        f"    stats socket {adminSocket} mode 600 level admin",
        "    maxconn 4096",
        "",
        "defaults",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout check 1s",
        "    retries 3",
        "    option redispatch 1",
        "    default-server check inter 100ms fall 2 rise 1",
    ]
    # A challenge request is idempotent: tried again on another server when
    # its server closes or resets before answering, or does not answer
    # within 5 s (a paused node; the CA's validation waits about 10 s),
    # and no idle connection is kept to a server, which would hold a
    # stopping node's drain (letsencrypt_resource.drain) for its whole grace.
    http = [
        "    option http-server-close",
        "    timeout server 5s",
        "    retry-on conn-failure empty-response response-timeout",
    ]
    for route in routes:
        lines += [
            "",
            f"frontend {route.name}",
            f"    mode {route.mode}",
            f"    bind 127.0.0.1:{route.port}",
            f"    default_backend {route.name}",
            "",
            f"backend {route.name}",
            f"    mode {route.mode}",
            "    balance roundrobin",
            *(http if route.mode == "http" else []),
        ]
        if route.checks:
            lines.append(f"    option httpchk GET {HEALTH_PATH}")
        lines += [
            f"    server node{i} 127.0.0.1:{port}{_health(route, i)}"
            for i, port in enumerate(route.servers)
        ]
    return "\n".join(lines) + "\n"


def _health(route: Route, index: int) -> str:
    """
    How server C{index} of C{route} is checked, beyond the defaults.
    """
    if route.track:
        return f" no-check track {route.track}/node{index}"
    if route.checks:
        return f" check port {route.checks[index]}"
    return ""


def terminate(process: subprocess.Popen[bytes], timeout: float) -> int:
    """
    End C{process} if it runs: C{SIGCONT} (should it be stopped), then
    C{SIGTERM}, then C{SIGKILL} after C{timeout} seconds.

    @return: Its exit status.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@attrs.define
class HAProxy:
    """
    One HAProxy process over L{Route}s, in a private temporary folder of
    its own, made when it starts (given to C{nobody} when the caller is
    root) and removed when it stops.

    @ivar folder: Holds the configuration, the admin socket and the log
        of HAProxy's own output.
    """

    routes: Sequence[Route]
    folder: str = attrs.field(default="", init=False)
    _process: subprocess.Popen[bytes] | None = attrs.field(default=None, init=False)

    @property
    def adminSocket(self) -> str:
        """
        The runtime API's Unix socket.
        """
        return os.path.join(self.folder, "admin.sock")

    def route(self, name: str) -> Route:
        """
        The route called C{name}.
        """
        for route in self.routes:
            if route.name == name:
                return route
        raise KeyError(name)

    def _asUser(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}

    def start(self) -> None:
        """
        Check the configuration, start HAProxy and wait until every
        frontend accepts connections.

        @raise HAProxyNotFound: when HAProxy is not installed.
        @raise HAProxyError: when it refuses the configuration or exits.
        """
        program = findHAProxy()
        self.folder = tempfile.mkdtemp(prefix="le-haproxy-")
        path = os.path.join(self.folder, "haproxy.cfg")
        with open(path, "w") as stream:
            stream.write(configuration(self.routes, self.adminSocket))
        if os.geteuid() == 0:
            os.chown(self.folder, NOBODY, NOBODY)
        checked = subprocess.run(
            [program, "-c", "-q", "-f", path], capture_output=True, text=True, **self._asUser()
        )
        if checked.returncode != 0:
            raise HAProxyError(f"haproxy refused {path}:\n{checked.stdout}{checked.stderr}")
        with open(os.path.join(self.folder, "haproxy.log"), "wb") as log:
            self._process = subprocess.Popen(
                [program, "-db", "-f", path],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **self._asUser(),
            )
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [route.port for route in self.routes]
        while waiting:
            if self._process.poll() is not None:
                raise HAProxyError(f"haproxy exited with {self._process.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                output = self.log()
                self.stop()
                raise HAProxyError(f"haproxy not listening on {waiting}: {output}")
            waiting = [port for port in waiting if not _accepts(port)]
            if waiting:
                time.sleep(0.02)

    def log(self) -> str:
        """
        What HAProxy printed so far (warnings, alerts).
        """
        with open(os.path.join(self.folder, "haproxy.log"), "rb") as stream:
            return stream.read().decode("utf-8", "replace")

    def command(self, text: str) -> str:
        """
        Send one command to the runtime API and give its answer.
        """
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(self.adminSocket)
            client.sendall(text.encode("ascii") + b"\n")
            parts = []
            while chunk := client.recv(65536):
                parts.append(chunk)
        return b"".join(parts).decode("utf-8", "replace")

    def setEnabled(self, route: str, index: int, enabled: bool) -> None:
        """
        Put server C{index} of C{route} back in service or take it out
        (maintenance: no new request or connection reaches it).

        @raise HAProxyError: when the runtime API refuses.
        """
        verb = "enable" if enabled else "disable"
        answer = self.command(f"{verb} server {self.route(route).name}/node{index}").strip()
        if answer:
            raise HAProxyError(f"{verb} server {route}/node{index}: {answer}")

    def status(self, route: str) -> list[str]:
        """
        The state of each server of C{route}, in order: C{"UP"}, C{"DOWN"},
        C{"MAINT"}... as HAProxy's statistics show it.
        """
        rows = self.command("show stat").splitlines()
        header = rows[0].lstrip("# ").split(",")
        states = {}
        for row in rows[1:]:
            fields = dict(zip(header, row.split(","), strict=False))
            if fields.get("pxname") == route and fields.get("svname", "").startswith("node"):
                states[int(fields["svname"][4:])] = fields["status"].split(" ")[0]
        return [states[i] for i in sorted(states)]

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop HAProxy (SIGTERM, SIGKILL if it lingers), wait for it, and
        remove its folder.
        """
        process, self._process = self._process, None
        if process is not None:
            terminate(process, timeout)
        releasePorts(route.port for route in self.routes)
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = ""
