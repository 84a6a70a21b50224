"""
Tests for the limits of L{letsencrypt_resource.ftps} sessions against
their clients: sessions that end free their place, idle and silent ones
are cut, and a data connection resumes only its control connection's TLS
session.
"""

from __future__ import annotations

import ftplib
import io
import os
import socket
import ssl
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs

from letsencrypt_resource import events, ftpsprotocol, ftpsthrottle, ftpstransfer
from letsencrypt_resource.ftps import MAX_SESSIONS_PER_ADDRESS, FTPSFactory, FTPSService
from letsencrypt_resource.ftpsfiles import PoolStopped, ServicePool
from letsencrypt_resource.ftpsshell import UPLOAD_PREFIX
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.ftpscase import NAME, PASSWORD, USER, FTPSServiceCase


def _cutWithin(sock: socket.socket, seconds: float) -> bool:
    """
    Whether the server ends the connection of C{sock} within C{seconds},
    reading and discarding what it sends.
    """
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except (OSError, ssl.SSLError):
        pass
    return True


class _Limits:
    """
    The tests that hold for explicit and implicit FTPS alike.
    """

    async def test_manySessionsInARow(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        More sessions than the per-address limit, one after the other from
        one address, are all served: a session that QUITs over TLS ends
        and frees its place.
        """
        service = self.startService()

        def sessions() -> list[list[str]]:
            listings = []
            for _ in range(MAX_SESSIONS_PER_ADDRESS + 3):
                client = self.loggedIn()
                listings.append(client.nlst())
                client.quit()
            return listings

        listings = await self.inThread(sessions)
        self.assertEqual(listings, [["own.txt"]] * (MAX_SESSIONS_PER_ADDRESS + 3))
        assert service._sessions is not None
        self.assertLessEqual(len(service._sessions.protocols), 1)

    async def test_idleCut(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A logged-in session over TLS that sends nothing for the idle time
        is cut, without waiting for the client's close_notify.
        """
        self.patch(FTPSFactory, "timeOut", 1)
        service = self.startService()

        def session() -> bool:
            client = self.loggedIn()
            # Seen the end, but never answer with a close_notify.
            return _cutWithin(client.sock, 20)

        self.assertTrue(await self.inThread(session))
        await self.sessionsEnded(service)

    async def sessionsEnded(  # type: ignore[misc]
        self: FTPSServiceCase, service: FTPSService, left: int = 0
    ) -> None:
        """
        Wait until no more than C{left} sessions of C{service} are open;
        fail after 20 s.
        """
        assert service._sessions is not None
        for _ in range(200):
            if len(service._sessions.protocols) <= left:
                return
            await deferLater(reactor, 0.1)
        self.fail("a session is still open")

    async def test_loginDeadline(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A session that does not log in within the deadline is cut, even if
        it keeps sending NOOP.
        """
        self.patch(ftpsprotocol, "LOGIN_DEADLINE", 1.0)
        self.startService()

        def session() -> bool:
            client = self.client()
            if not self.implicit:
                client.auth()
            end = time.monotonic() + 20
            while time.monotonic() < end:
                try:
                    client.voidcmd("NOOP")
                except (EOFError, OSError, ftplib.Error):
                    return True
                time.sleep(0.2)
            return False

        self.assertTrue(await self.inThread(session))

    async def test_onlyControlSessionResumed(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Over TLS 1.2, a session made by a refused data handshake is not
        kept in the session's cache: a data connection that resumes it from
        the same address is refused too, and the client's transfer gets 522
        rather than going to it.
        """
        self.startService()

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.maximum_version = ssl.TLSVersion.TLSv1_2

        def attack(client: ftplib.FTP, session: ssl.SSLSession | None) -> tuple[Any, bool]:
            conn = context.wrap_socket(
                socket.create_connection(ftplib.parse227(client.sendcmd("PASV")), 10),
                server_hostname=NAME,
                session=session,
                do_handshake_on_connect=False,
            )
            try:
                conn.do_handshake()
            except OSError:
                pass
            result = conn.session, conn.session_reused
            _cutWithin(conn, 10)
            return result

        def session() -> tuple[bool, str]:
            client = self.loggedIn(maximumVersion=ssl.TLSVersion.TLSv1_2)
            stolen, _ = attack(client, None)
            _, reused = attack(client, stolen)
            client.putcmd("RETR own.txt")
            while (reply := client.getline())[0] == "1":
                pass
            return reused, reply[:3]

        with capturedLogs() as logged:
            self.assertEqual(await self.inThread(session), (False, "522"))
        self.assertEqual(
            len([e for e in logged if e.get("event_id") == events.FTPS_DATA_NOT_RESUMED.id]), 2
        )

    async def test_resumedOverTLS12(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Over TLS 1.2, the client of the control connection resumes its
        session on each of its data connections.
        """
        self.startService()

        def session() -> list[list[str]]:
            client = self.loggedIn(maximumVersion=ssl.TLSVersion.TLSv1_2)
            return [client.nlst(), client.nlst(), client.nlst()]

        self.assertEqual(await self.inThread(session), [["own.txt"]] * 3)

    async def test_longListing(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        LIST gives a line as C{ls -l} writes it for each regular file and
        folder, in name order, sent in pieces; a file gives its own line;
        flags are ignored.  NLST gives the names, those a pattern matches,
        nothing for what does not exist, a file's own name.
        """
        self.patch(ftpstransfer, "LIST_LINES_AT_ONCE", 2)
        folder = os.path.join(self.served, USER)
        for name in ["c.txt", "b.txt", "a.txt"]:
            with open(os.path.join(folder, name), "wb") as file:
                file.write(b"12345")
            os.chmod(os.path.join(folder, name), 0o640)
        self.startService()

        def session() -> tuple[list[str], list[str]]:
            client = self.loggedIn()
            listed: list[str] = []
            client.retrlines("LIST -al", listed.append)
            single: list[str] = []
            client.retrlines("LIST b.txt", single.append)
            return listed, single

        def names() -> list[list[str]]:
            client = self.loggedIn()
            return [
                client.nlst(),
                client.nlst("[ab]*"),
                client.nlst("missing"),
                client.nlst("c.txt"),
            ]

        self.assertEqual(
            await self.inThread(names),
            [["a.txt", "b.txt", "c.txt", "own.txt"], ["a.txt", "b.txt"], [], ["c.txt"]],
        )
        listed, single = await self.inThread(session)
        self.assertEqual(
            [line.split()[-1] for line in listed], ["a.txt", "b.txt", "c.txt", "own.txt"]
        )
        self.assertEqual(single[0].split()[0], "-rw-r-----")
        self.assertEqual(single[0].split()[4:5] + single[0].split()[-1:], ["5", "b.txt"])

    async def test_listingReuseRequired(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        A listing is not sent over a data connection that did not resume
        the control connection's TLS session: 522.
        """
        self.startService()

        def session() -> str:
            client = self.loggedIn(resume=False)
            try:
                client.nlst()
            except ftplib.Error as error:
                return str(error)[:3]
            except OSError:
                # Cut during its handshake; the reply tells why.
                return client.getline()[:3]
            return "listed"

        self.assertEqual(await self.inThread(session), "522")

    async def test_loginFailuresClose(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        Each failed login is answered after a delay that grows for the
        address; the third in a session closes it (event 20237).
        """
        self.patch(ftpsthrottle, "FIRST_DELAY", 0.2)
        self.startService()

        def session() -> tuple[list[str], float, str]:
            client = self.client()
            if not self.implicit:
                client.auth()
            replies = []
            started = time.monotonic()
            for _ in range(3):
                client.sendcmd(f"USER {USER}")
                client.putcmd("PASS wrong")
                replies.append(client.getline())
            elapsed = time.monotonic() - started
            return replies, elapsed, client.file.readline()

        with capturedLogs() as logged:
            replies, elapsed, after = await self.inThread(session)
        self.assertEqual([reply[:3] for reply in replies], ["530"] * 3)
        self.assertEqual(replies[2], "530 Too many failed logins.")
        self.assertEqual(after, "")
        self.assertGreaterEqual(elapsed, 0.2 + 0.4 + 0.8)
        self.assertEqual(
            [e["count"] for e in logged if e.get("event_id") == events.FTPS_LOGINS_CLOSED.id], [3]
        )

    async def test_passivePortsExhausted(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        When every passive port is taken, PASV and EPSV get 425 (event
        20238) and the session goes on; the port is free again once the
        data connection that held it is made.
        """
        port = freeTCPPort()
        self.startService(passivePorts=range(port, port + 1))

        def session() -> tuple[str, str, list[str], list[str]]:
            holder = self.loggedIn()
            other = self.loggedIn()
            holder.sendcmd("PASV")
            try:
                other.sendcmd("PASV")
            except ftplib.error_temp as error:
                refusedPASV = str(error)
            try:
                other.sendcmd("EPSV")
            except ftplib.error_temp as error:
                refusedEPSV = str(error)
            holder.putcmd("ABOR")
            # The holder's data connection: made and closed, its port free.
            socket.create_connection(("127.0.0.1", port), 10).close()
            holder.getline()
            return refusedPASV, refusedEPSV, other.nlst(), holder.nlst()

        with capturedLogs() as logged:
            pasv, epsv, names, again = await self.inThread(session)
        self.assertEqual((pasv[:3], epsv[:3]), ("425", "425"))
        self.assertEqual((names, again), (["own.txt"], ["own.txt"]))
        self.assertEqual(
            len([e for e in logged if e.get("event_id") == events.FTPS_NO_PASSIVE_PORT.id]), 2
        )

    async def test_sessionsFull(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        With C{max_sessions} open, a new connection is closed at once
        (event 20239); once one ends, the next is served.
        """
        service = self.startService(maxSessions=2)

        def sessions() -> tuple[bool, list[str]]:
            first, second = self.loggedIn(), self.loggedIn()
            try:
                self.loggedIn()
            except (EOFError, OSError, ftplib.Error):
                refused = True
            else:
                refused = False
            second.nlst()
            first.quit()
            return refused, second.nlst()

        with capturedLogs() as logged:
            refused, names = await self.inThread(sessions)
        self.assertEqual((refused, names), (True, ["own.txt"]))
        await self.sessionsEnded(service, 1)

        def again() -> list[str]:
            return self.loggedIn().nlst()

        self.assertEqual(await self.inThread(again), ["own.txt"])
        self.assertEqual(
            [e["limit"] for e in logged if e.get("event_id") == events.FTPS_SESSIONS_FULL.id], [2]
        )


class ExplicitLimitsTests(_Limits, FTPSServiceCase):
    """
    The limits of explicit FTPS sessions.
    """

    async def test_staleUploadsRemoved(self) -> None:
        """
        When the service starts, it removes the temporary files of uploads
        that a stopped process left (event 20240).
        """
        stale = os.path.join(self.served, USER, UPLOAD_PREFIX + "0123456789abcdef")
        with open(stale, "wb") as file:
            file.write(b"partial")
        os.utime(stale, (1000, 1000))
        with capturedLogs() as logged:
            self.startService()
            for _ in range(200):
                if any(e.get("event_id") == events.FTPS_STALE_UPLOADS.id for e in logged):
                    break
                await deferLater(reactor, 0.1)
        self.assertFalse(os.path.exists(stale))
        self.assertEqual(
            [e["count"] for e in logged if e.get("event_id") == events.FTPS_STALE_UPLOADS.id], [1]
        )


class ImplicitLimitsTests(_Limits, FTPSServiceCase):
    """
    The limits of implicit FTPS sessions.
    """

    implicit = True


class ServicePoolTests(FTPSServiceCase):
    """
    The thread pools of an FTPS service: one checks its passwords, one
    reads and writes the files of its transfers.
    """

    async def test_stoppedWithTheReactor(self) -> None:
        """
        The pools stop when the reactor shuts down, should the service not
        be stopped first (their threads would keep the process alive); a
        service that stops takes that back and stops them itself.
        """
        triggers: dict[int, tuple[str, str, Any]] = {}

        def add(phase: str, event: str, callable: Any) -> int:
            triggers[len(triggers)] = (phase, event, callable)
            return len(triggers) - 1

        self.patch(reactor, "addSystemEventTrigger", add)
        self.patch(reactor, "removeSystemEventTrigger", triggers.pop)
        service = self.startService()
        pools = [service._logins.threadPool, service._files.threadPool]
        self.assertEqual([pool.started for pool in pools], [True, True])
        self.assertEqual(
            [(phase, event) for phase, event, _ in triggers.values()],
            [("during", "shutdown")] * 2,
        )
        for _, _, stop in triggers.values():
            stop()
        self.assertEqual([pool.started for pool in pools], [False, False])
        service.stopService()
        self.assertEqual(len(triggers), 2)
        stopped = self.startService()
        pools = [stopped._logins.threadPool, stopped._files.threadPool]
        self.assertEqual([pool.started for pool in pools], [True, True])
        self.assertEqual(len(triggers), 4)
        stopped.stopService()
        self.assertEqual(len(triggers), 2)
        # Their threads are stopped in a thread of their own.
        while any(pool.started for pool in pools):
            await deferLater(reactor, 0.01, lambda: None)

    async def test_stopWaitsForNoThread(self) -> None:
        """
        Stopping a pool while its work hangs (a failing disk) returns at
        once, and the threads stop once that work ended; work given after
        the stop fails at once rather than never ending.
        """
        pool = ServicePool(reactor, "test-pool", 1)
        pool.start()
        hung = threading.Event()
        self.addCleanup(hung.set)
        running = pool.run(hung.wait, 30)
        stopping = pool.stop()
        self.assertNoResult(stopping)
        self.failureResultOf(pool.run(lambda: None), PoolStopped)
        hung.set()
        self.assertTrue(await running)
        await stopping
        self.assertFalse(pool.threadPool.started)

    async def test_loginAfterStop(self) -> None:
        """
        A password that comes once the logins' threads stopped (a session
        the service's stop did not cut) is answered 421 and its session
        closed, instead of never being answered.
        """
        service = self.startService()

        def user() -> Any:
            client = self.client()
            client.sock.settimeout(10)
            client.auth()
            client.sendcmd(f"USER {USER}")
            return client

        client = await self.inThread(user)
        await service._logins.stop()

        def password() -> tuple[str, str]:
            try:
                answer = client.sendcmd(f"PASS {PASSWORD}")
            except ftplib.error_temp as error:
                answer = str(error)
            try:
                after = client.getline()
            except (OSError, EOFError) as error:
                after = type(error).__name__
            return answer, after

        answer, after = await self.inThread(password)
        self.assertEqual(answer, "421 Service not available, closing control connection.")
        self.assertIn(after, ("", "EOFError"))


class IPv6Tests(FTPSServiceCase):
    """
    An FTPS service on IPv6 loopback.
    """

    host = "::1"

    async def test_epsv(self) -> None:
        """
        Over IPv6, EPSV data connections carry listings, downloads and
        uploads; PASV, which cannot announce an IPv6 address, is refused.
        """
        self.startService()

        def session() -> tuple[str, list[str], bytes, str]:
            client = self.loggedIn()
            try:
                client.sendcmd("PASV")
            except ftplib.Error as error:
                refused = str(error)[:3]
            received = io.BytesIO()
            client.storbinary("STOR six.bin", io.BytesIO(b"over IPv6"))
            client.retrbinary("RETR six.bin", received.write)
            return refused, client.nlst(), received.getvalue(), client.sock.getpeername()[0]

        refused, names, data, peer = await self.inThread(session)
        self.assertEqual((names, data, peer), (["own.txt", "six.bin"], b"over IPv6", "::1"))
        self.assertTrue(refused.startswith("5"), refused)
