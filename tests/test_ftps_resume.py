"""
Tests for resumed transfers (REST STREAM, APPE) and for the file work of
transfers in threads, on an L{letsencrypt_resource.ftps.FTPSService} on
loopback with Python's C{ftplib} as the client.
"""

from __future__ import annotations

import errno
import ftplib
import io
import os
import socket
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater

from letsencrypt_resource import ftps, ftpsshell, ftpssilence
from letsencrypt_resource.ftps import FTPSFactory
from tests.helpers.ftpscase import CONTENT, USER, FTPSServiceCase, retrieve
from tests.helpers.slowdisk import WAIT, useSlowDisk

#: The size of the file the tests resume.
SIZE = len(CONTENT)


class _Resume:
    """
    The tests that hold for explicit and implicit FTPS alike.
    """

    def path(self: Any, name: str) -> str:  # type: ignore[misc]
        return os.path.join(self.served, USER, name)

    def read(self: Any, name: str) -> bytes:  # type: ignore[misc]
        with open(self.path(name), "rb") as file:
            return file.read()

    def temporaries(self: Any) -> list[str]:  # type: ignore[misc]
        """
        The hidden names of the account's folder: the temporary files of
        uploads.
        """
        return [name for name in os.listdir(self.path("")) if name[0] == "."]

    def appending(self: Any, name: str) -> tuple[Any, socket.socket]:  # type: ignore[misc]
        """
        A session logged in that sent C{APPE name} once it connected its
        data connection (a TCP connection that never starts its TLS
        handshake), and that connection, closed at the end of the test.
        """
        client = self.loggedIn()
        conn = socket.create_connection(client.makepasv(), timeout=10)
        self.addCleanup(conn.close)
        client.putcmd(f"APPE {name}")
        return client, conn

    async def test_downloadResumed(self: Any) -> None:  # type: ignore[misc]
        """
        REST then RETR sends the file from the offset on; an offset at the
        end sends nothing; one beyond it answers 554.
        """
        self.startService()

        def session() -> tuple[bytes, bytes, str]:
            client = self.loggedIn()
            received = io.BytesIO()
            client.retrbinary("RETR own.txt", received.write, rest=100)
            atEnd = io.BytesIO()
            client.retrbinary("RETR own.txt", atEnd.write, rest=SIZE)
            try:
                client.retrbinary("RETR own.txt", atEnd.write, rest=SIZE + 1)
            except ftplib.error_perm as error:
                return received.getvalue(), atEnd.getvalue(), str(error)
            return received.getvalue(), atEnd.getvalue(), "sent"

        received, atEnd, refused = await self.inThread(session)
        self.assertEqual((received, atEnd), (CONTENT[100:], b""))
        self.assertEqual(refused, "554 Requested action not taken: invalid REST parameter.")

    async def test_uploadResumed(self: Any) -> None:  # type: ignore[misc]
        """
        REST then STOR keeps that many bytes of the file there and appends
        what comes; APPE appends to the whole file, or makes a new one; no
        temporary file is left.
        """
        self.startService()

        def session() -> None:
            client = self.loggedIn()
            client.storbinary("STOR own.txt", io.BytesIO(b"resumed"), rest=10)
            client.storbinary("APPE own.txt", io.BytesIO(b" and appended"))
            client.storbinary("APPE new.txt", io.BytesIO(b"new"))

        await self.inThread(session)
        self.assertEqual(self.read("own.txt"), CONTENT[:10] + b"resumed and appended")
        self.assertEqual(self.read("new.txt"), b"new")
        self.assertEqual(self.temporaries(), [])

    async def test_uploadResumedBeyondEnd(self: Any) -> None:  # type: ignore[misc]
        """
        REST beyond the end of the file, or before STOR of a file that is
        not there, answers 554 and changes nothing.
        """
        self.startService()

        def session() -> list[str]:
            client = self.loggedIn()
            answers = []
            for name, rest in (("own.txt", SIZE + 1), ("missing.txt", 1)):
                try:
                    client.storbinary(f"STOR {name}", io.BytesIO(b"x"), rest=rest)
                except ftplib.error_perm as error:
                    answers.append(str(error)[:3])
            return answers

        self.assertEqual(await self.inThread(session), ["554", "554"])
        self.assertEqual(self.read("own.txt"), CONTENT)
        self.assertFalse(os.path.exists(self.path("missing.txt")))

    async def test_resumedUploadTruncated(self: Any) -> None:  # type: ignore[misc]
        """
        A resumed upload whose data connection ends without a TLS
        close_notify leaves the file as it was (426): it is never written
        in place.
        """
        self.startService()

        def session() -> str:
            client = self.loggedIn()
            conn = client.transfercmd("APPE own.txt")
            conn.sendall(b"cut short")
            socket.socket.shutdown(conn, socket.SHUT_RDWR)
            conn.close()
            try:
                return client.voidresp()
            except ftplib.error_temp as error:
                return str(error)[:3]

        self.assertEqual(await self.inThread(session), "426")
        self.assertEqual(self.read("own.txt"), CONTENT)

    async def test_readOnlyRefusesAppend(self: Any) -> None:  # type: ignore[misc]
        """
        Without C{writable}, APPE and resumed STOR are refused (550);
        resumed downloads are served.
        """
        self.startService(writable=False)

        def session() -> tuple[list[str], bytes]:
            client = self.loggedIn()
            refused = []
            for command, rest in (("APPE own.txt", None), ("STOR own.txt", 5)):
                try:
                    client.storbinary(command, io.BytesIO(b"x"), rest=rest)
                except ftplib.error_perm as error:
                    refused.append(str(error)[:3])
            received = io.BytesIO()
            client.retrbinary("RETR own.txt", received.write, rest=5)
            return refused, received.getvalue()

        self.assertEqual(await self.inThread(session), (["550", "550"], CONTENT[5:]))
        self.assertEqual(self.read("own.txt"), CONTENT)

    async def test_hangUpDuringTransfer(self: Any) -> None:  # type: ignore[misc]
        """
        A client that hangs up its control connection during a download
        causes no error: the transfer's end finds the session gone.
        """
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"b" * (8 << 20))
        service = self.startService()

        def session() -> int:
            client = self.loggedIn()
            conn = client.transfercmd("RETR big.bin")
            socket.socket.shutdown(client.sock, socket.SHUT_RDWR)
            received = 0
            while chunk := conn.recv(1 << 16):
                received += len(chunk)
            conn.close()
            return received

        self.assertEqual(await self.inThread(session), 8 << 20)
        await service.stopService()

    async def test_longTransferNotIdle(self: Any) -> None:  # type: ignore[misc]
        """
        A session whose transfer lasts longer than the idle time is not
        cut: it is idle only from the transfer's end.
        """
        self.patch(FTPSFactory, "timeOut", 1)
        self.startService()

        def session() -> str:
            client = self.loggedIn()
            conn = client.transfercmd("STOR slow.bin")
            for _ in range(5):
                conn.sendall(CONTENT)
                time.sleep(0.5)
            conn.unwrap().close()
            return client.voidresp()

        self.assertEqual((await self.inThread(session))[:3], "226")
        self.assertEqual(self.read("slow.bin"), CONTENT * 5)

    async def test_stalledTransferCut(self: Any) -> None:  # type: ignore[misc]
        """
        A session whose transfer stalls (nothing comes on its data
        connection) for the idle time is cut.
        """
        self.patch(FTPSFactory, "timeOut", 1)
        self.startService()

        def session() -> tuple[str, bytes, float]:
            client = self.loggedIn()
            conn = client.transfercmd("STOR stalled.bin")
            self.addCleanup(conn.close)
            conn.settimeout(10)
            started = time.monotonic()
            try:
                answer = client.getline()
            except (OSError, EOFError) as error:
                answer = type(error).__name__
            try:
                data = conn.recv(1)
            except OSError as error:
                data = type(error).__name__.encode()
            return answer, data, time.monotonic() - started

        answer, data, waited = await self.inThread(session)
        self.assertFalse(answer.startswith("2"), answer)
        # The data connection is cut with its session, not left open.
        self.assertNotEqual(data, b"TimeoutError")
        self.assertLess(waited, 10)
        self.assertFalse(os.path.exists(self.path("stalled.bin")))


class ExplicitResumeTests(_Resume, FTPSServiceCase):
    """
    Resumed transfers over explicit FTPS, and the REST command itself.
    """

    async def test_restCommand(self) -> None:
        """
        FEAT announces C{REST STREAM}; REST takes a byte offset only (501),
        in binary mode only (504), and holds for the next command only: a
        RETR after another command sends the whole file.
        """
        self.startService()

        def session() -> tuple[str, list[str], bytes]:
            client = self.loggedIn()
            features = client.sendcmd("FEAT")
            answers = []
            for command in ("REST -1", "REST 1e3", "REST ١٢", "REST " + "9" * 19):
                try:
                    client.sendcmd(command)
                except ftplib.error_perm as error:
                    answers.append(str(error)[:3])
            client.sendcmd("TYPE A")
            try:
                client.sendcmd("REST 10")
            except ftplib.error_perm as error:
                answers.append(str(error)[:3])
            client.sendcmd("TYPE I")
            answers.append(client.sendcmd("REST 10"))
            client.sendcmd("NOOP")
            received = io.BytesIO()
            client.retrbinary("RETR own.txt", received.write)
            return features, answers, received.getvalue()

        features, answers, received = await self.inThread(session)
        self.assertIn(" REST STREAM\n", features)
        self.assertEqual(
            answers, ["501"] * 4 + ["504", "350 Restarting at 10. Send RETR, STOR or APPE."]
        )
        self.assertEqual(received, CONTENT)

    async def test_slowDiskStallsNoOne(self) -> None:
        """
        While a download's read of its file hangs (a slow disk), the other
        sessions are served: files are read in the service's threads, not
        in the reactor's.
        """
        self.startService()
        disk = useSlowDisk(self, failUnreleased=True)
        reading, release = disk.reading, disk.release

        def slow() -> bytes:
            client = self.loggedIn()
            return retrieve(client, "own.txt")

        def other() -> str:
            assert reading.wait(30)
            client = self.loggedIn()
            answer = client.sendcmd("NOOP")
            release.set()
            return answer

        downloading = self.inThread(slow)
        self.assertEqual((await self.inThread(other))[:3], "200")
        self.assertEqual(await downloading, CONTENT)

    async def test_restBeforePassive(self) -> None:
        """
        REST holds across TYPE I and PASV, as for vsftpd and ProFTPD:
        a client that sends REST before PASV gets the file from the offset,
        not the whole file to append to its part.
        """
        self.startService()

        def session() -> bytes:
            client = self.loggedIn()
            client.sendcmd("TYPE I")
            client.sendcmd("REST 100")
            client.sendcmd("TYPE I")
            conn = client.transfercmd("RETR own.txt")
            received = b""
            while chunk := conn.recv(1 << 16):
                received += chunk
            conn.unwrap().close()
            client.voidresp()
            return received

        self.assertEqual(await self.inThread(session), CONTENT[100:])

    async def test_stopWhileReadHangs(self) -> None:
        """
        Stopping the service while a download's read hangs (a failing
        disk) does not wait for the read, and once it returns the file is
        closed: the download's next read fails rather than never ending.
        """
        service = self.startService()
        disk = useSlowDisk(self, failUnreleased=False)
        reading, release = disk.reading, disk.release

        def download() -> None:
            client = self.loggedIn()
            try:
                client.retrbinary("RETR own.txt", io.BytesIO().write)
            except (OSError, EOFError, ftplib.Error):
                pass

        def opened() -> list[str]:
            names = []
            for fd in os.listdir("/proc/self/fd"):
                try:
                    names.append(os.readlink(f"/proc/self/fd/{fd}"))
                except OSError:
                    # The folder's own descriptor, closed.
                    continue
            return [name for name in names if name.endswith("own.txt")]

        downloading = self.inThread(download)
        self.assertTrue(await self.inThread(reading.wait, 30))
        started = time.monotonic()
        stopping = service.stopService()
        self.assertLess(time.monotonic() - started, 1)
        await stopping
        release.set()
        await downloading
        while service._files.threadPool.started:
            await deferLater(reactor, 0.01, lambda: None)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(opened(), [])

    def slowCopy(self, steps: list[None]) -> None:
        """
        Copy resumed uploads 1 MiB at a time, each step 0.1 s long, counted
        in C{steps}.
        """
        self.patch(ftpsshell, "COPY_STEP", 1 << 20)
        copy = ftpsshell._copyBytes

        def slow(*args: Any) -> None:
            steps.append(None)
            time.sleep(0.1)
            copy(*args)

        self.patch(ftpsshell, "_copyBytes", slow)

    async def test_longCopyNotIdle(self) -> None:
        """
        A resumed upload whose copy of the file's start lasts longer than
        the idle time is not cut: each step of the copy is activity.
        """
        self.patch(FTPSFactory, "timeOut", 1)
        self.slowCopy([])
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"a" * (20 << 20))
        self.startService()

        def session() -> str:
            client = self.loggedIn()
            return client.storbinary("APPE big.bin", io.BytesIO(b"tail"))

        self.assertEqual((await self.inThread(session))[:3], "226")
        self.assertEqual(os.path.getsize(self.path("big.bin")), (20 << 20) + 4)

    async def test_copyStopsWithSession(self) -> None:
        """
        A resumed upload's copy stops once its session ended (after the
        step that runs), its temporary file is removed, and the session's
        slot of its address stays taken until then.
        """
        steps: list[None] = []
        self.slowCopy(steps)
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"a" * (40 << 20))
        service = self.startService()

        await self.inThread(self.appending, "big.bin")
        while len(steps) < 2:
            await deferLater(reactor, 0.02, lambda: None)
        sessions: Any = service._sessions
        await sessions.closeAll()
        await deferLater(reactor, 0, lambda: None)
        self.assertEqual(sessions._open, {"127.0.0.1": 1})
        cut = len(steps)

        while self.temporaries():
            await deferLater(reactor, 0.02, lambda: None)
        self.assertLessEqual(len(steps), cut + 1)
        self.assertEqual(sessions._open, {})

    async def test_copyStopsWhenClientLeaves(self) -> None:
        """
        A client that leaves while its resumed upload copies the file's
        start ends its session at once, and the copy with it.
        """
        steps: list[None] = []
        self.slowCopy(steps)
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"a" * (40 << 20))
        self.startService()

        def leave() -> int:
            client, conn = self.appending("big.bin")
            while len(steps) < 2:
                time.sleep(0.02)
            conn.close()
            client.close()
            return len(steps)

        left = await self.inThread(leave)

        while self.temporaries():
            await deferLater(reactor, 0.02, lambda: None)
        self.assertLessEqual(len(steps), left + 2)

    def holdCopy(self) -> tuple[threading.Event, threading.Event]:
        """
        Hold each copy step of resumed uploads until the test lets them go.

        @return: An event set once a step started, and the one that lets
            the steps go (at the end of the test at the latest).
        """
        copying, release = threading.Event(), threading.Event()
        self.addCleanup(release.set)
        copy = ftpsshell._copyBytes

        def held(*args: Any) -> None:
            copying.set()
            release.wait(WAIT)
            copy(*args)

        self.patch(ftpsshell, "_copyBytes", held)
        return copying, release

    async def test_liveUploadKeptByAnotherStart(self) -> None:
        """
        A second service starting on the folder while the first runs an
        upload (a reload adding the implicit twin, say) leaves that
        upload's temporary file in its sweep of stale uploads, and the
        upload is stored.
        """
        copying, release = self.holdCopy()
        swept = threading.Semaphore(0)
        sweep = ftps.removeStaleUploads

        def recorded(*args: Any) -> int:
            try:
                return sweep(*args)
            finally:
                swept.release()

        self.patch(ftps, "removeStaleUploads", recorded)
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"a" * 100)
        self.startService()
        self.assertTrue(await self.inThread(swept.acquire, True, WAIT))
        first = self.inThread(
            lambda: self.loggedIn().storbinary("APPE big.bin", io.BytesIO(b"first"))
        )
        self.assertTrue(await self.inThread(copying.wait, WAIT))
        temporaries = self.temporaries()
        self.startService(implicit=True)
        self.assertTrue(await self.inThread(swept.acquire, True, WAIT))
        self.assertEqual(self.temporaries(), temporaries)
        release.set()
        self.assertEqual((await first)[:3], "226")
        self.assertEqual(self.read("big.bin"), b"a" * 100 + b"first")

    async def test_concurrentAppendsRefused(self) -> None:
        """
        While one session appends to a file (its copy of the file's start
        runs, held until the test lets it go), another session's append to
        it, resumed store, removal and RNFR are answered 450, its MKD and
        RMD 550 and a renaming onto it 553 (RFC 959 lists no 450 for
        those); none of the first's data is lost, and once it ended the
        second appends after it.
        """
        copying, release = self.holdCopy()
        with open(self.path("big.bin"), "wb") as file:
            file.write(b"a" * (4 << 20))
        self.startService()
        first = self.inThread(
            lambda: self.loggedIn().storbinary("APPE big.bin", io.BytesIO(b"first"))
        )
        self.assertTrue(await self.inThread(copying.wait, WAIT))
        second = await self.inThread(self.loggedIn)

        def refusals() -> list[str]:
            answers = []
            for command, rest in (("APPE big.bin", None), ("STOR big.bin", 10)):
                try:
                    second.storbinary(command, io.BytesIO(b"second"), rest=rest)
                except ftplib.error_temp as error:
                    answers.append(str(error))
            for commands in (
                ["DELE big.bin"],
                ["RNFR big.bin"],
                ["MKD big.bin"],
                ["RMD big.bin"],
                ["RNFR own.txt", "RNTO big.bin"],
            ):
                try:
                    for command in commands:
                        second.sendcmd(command)
                except ftplib.Error as error:
                    answers.append(str(error))
            release.set()
            return answers

        busy = "big.bin: file busy, an upload of it is in progress."
        self.assertEqual(
            await self.inThread(refusals),
            [f"{code} {busy}" for code in (450, 450, 450, 450, 550, 550, 553)],
        )
        self.assertEqual((await first)[:3], "226")
        await self.inThread(second.storbinary, "APPE big.bin", io.BytesIO(b"second"))
        self.assertEqual(self.read("big.bin"), b"a" * (4 << 20) + b"firstsecond")

    async def test_silentUploadCut(self) -> None:
        """
        An upload whose data connection brings nothing for
        L{ftpssilence.UPLOAD_SILENCE} seconds is cut (426) long before its
        session's idle timeout, and its file is free: another session's
        upload of it is stored.
        """
        self.patch(ftpssilence, "UPLOAD_SILENCE", 0.5)
        self.startService()

        def silent() -> str:
            client = self.loggedIn()
            client.voidcmd("TYPE I")
            conn = client.transfercmd("STOR own.txt")
            self.addCleanup(conn.close)
            try:
                return client.getresp()
            except ftplib.Error as error:
                return str(error)

        self.assertEqual((await self.inThread(silent))[:3], "426")
        # The retry is not held to the short bound (a loaded machine).
        self.patch(ftpssilence, "UPLOAD_SILENCE", 60)
        retry = await self.inThread(self.loggedIn)
        await self.inThread(retry.storbinary, "STOR own.txt", io.BytesIO(b"retry"))
        self.assertEqual(self.read("own.txt"), b"retry")

    async def test_copiesLeaveThreadsToOthers(self) -> None:
        """
        While one account's sessions append to three big files at once,
        their copies take one file thread at a time, and another account's
        downloads go on between their steps: they end long before the
        copies.
        """
        steps: list[None] = []
        self.slowCopy(steps)
        copy, running, most = ftpsshell._copyBytes, [0], [0]

        def counted(*args: Any) -> None:
            running[0] += 1
            most[0] = max(most[0], running[0])
            try:
                copy(*args)
            finally:
                running[0] -= 1

        self.patch(ftpsshell, "_copyBytes", counted)
        names = [f"big{index}.bin" for index in range(3)]
        for name in names:
            with open(self.path(name), "wb") as file:
                file.write(b"a" * (8 << 20))
        self.startService(anonymous=True)
        appending = [
            self.inThread(
                lambda name=name: self.loggedIn().storbinary(f"APPE {name}", io.BytesIO(b"+"))
            )
            for name in names
        ]
        while not steps:
            await deferLater(reactor, 0.02, lambda: None)

        def downloads() -> list[bytes]:
            client = self.loggedIn("anonymous", "guest")
            return [retrieve(client, "hello.txt") for _ in range(5)]

        self.assertEqual(await self.inThread(downloads), [CONTENT] * 5)
        self.assertLess(len(steps), 3 * 8 - 4)
        for done in appending:
            self.assertEqual((await done)[:3], "226")
        self.assertEqual(most[0], 1)
        self.assertEqual(len(steps), 3 * 8)

    async def test_diskFullDuringCopy(self) -> None:
        """
        A resumed upload whose copy finds the disk full is refused with
        452, its data connection is closed, and the file is left as it
        was with no temporary file.
        """
        self.startService()

        def full(*args: Any) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(ftpsshell, "_copyBytes", full)

        def session() -> tuple[str, bytes]:
            client, conn = self.appending("own.txt")
            try:
                answer = client.getresp()
            except ftplib.error_temp as error:
                answer = str(error)
            try:
                data = conn.recv(1)
            except OSError as error:
                data = type(error).__name__.encode()
            conn.close()
            return answer, data

        answer, data = await self.inThread(session)
        self.assertEqual(answer, "452 Insufficient storage space: nothing was written.")
        self.assertNotEqual(data, b"TimeoutError")
        self.assertEqual(self.read("own.txt"), CONTENT)
        self.assertEqual(self.temporaries(), [])


class ImplicitResumeTests(_Resume, FTPSServiceCase):
    """
    Resumed transfers over implicit FTPS.
    """

    implicit = True
