"""
Tests for L{letsencrypt_resource.ftpsdata}: the data connections of FTPS
sessions, on in-memory transports.
"""

from __future__ import annotations

import errno

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.ftpsdata import (
    HELD_LIMIT,
    HELD_MOST,
    READ_SIZE,
    DataTruncated,
    PeerOnlyTLSFactory,
    SecureDTP,
    SecureDTPFactory,
)
from letsencrypt_resource.ftpsthrottle import WarningBudget
from letsencrypt_resource.ftpstls import SessionTLS
from tests.helpers import selfSigned


class _FullDisk:
    """
    A consumer that cannot write: the disk is full.
    """

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


class _Factory:
    """
    What a data connection tells when it is made.
    """

    def __init__(self) -> None:
        self.deferred: Deferred[None] = Deferred()


class _PI:
    """
    The control connection of a data port, which only closes it and is
    never idle.
    """

    def closePassivePort(self) -> None:
        pass

    def resetTimeout(self) -> None:
        pass


class UploadWriteFailureTests(SynchronousTestCase):
    """
    An upload whose file cannot be written fails with the error, once.
    """

    def dtp(self) -> tuple[SecureDTP, StringTransport]:
        dtp = SecureDTP(WarningBudget(Clock(), "ftp"), lambda: None)
        dtp.factory = _Factory()
        transport = StringTransport()
        dtp.makeConnection(transport)
        return dtp, transport

    def test_writeFails(self) -> None:
        """
        When writing fails, the data connection is cut, what comes after
        is dropped without an error, and the upload fails with the write's
        error when the connection ends.
        """
        dtp, transport = self.dtp()
        receiving = dtp.registerConsumer(_FullDisk())
        dtp.dataReceived(b"first")
        self.assertTrue(transport.disconnecting)
        dtp.dataReceived(b"second")
        self.assertNoResult(receiving)
        dtp.connectionLost(Failure(ConnectionAborted()))
        failure = self.failureResultOf(receiving, OSError)
        self.assertEqual(failure.value.errno, errno.ENOSPC)

    def test_bufferedWriteFails(self) -> None:
        """
        Data that came before the upload's file was opened, and cannot be
        written to it, fails the upload as well.
        """
        dtp, transport = self.dtp()
        dtp.dataReceived(b"early")
        receiving = dtp.registerConsumer(_FullDisk())
        dtp.dataReceived(b"late")
        self.assertTrue(transport.disconnecting)
        dtp.connectionLost(Failure(ConnectionAborted()))
        self.failureResultOf(receiving, OSError)


class _Keeper:
    """
    A consumer that keeps what it is given.
    """

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def registerProducer(self, producer: object, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.received.append(data)


class UploadEndedEarlyTests(SynchronousTestCase):
    """
    An upload that is ready only after its data connection ended.
    """

    def dtp(self) -> tuple[SecureDTP, StringTransport]:
        dtp = SecureDTP(WarningBudget(Clock(), "ftp"), lambda: None)
        dtp.factory = _Factory()
        transport = StringTransport()
        dtp.makeConnection(transport)
        dtp.dataReceived(b"early")
        return dtp, transport

    def test_truncated(self) -> None:
        """
        A connection that ended without a TLS close_notify before the
        upload was ready (a resumed upload copying its start) fails it:
        what it brought is never taken as a complete file.
        """
        dtp, _ = self.dtp()
        dtp.connectionLost(Failure(ConnectionLost()))
        consumer = _Keeper()
        self.failureResultOf(dtp.registerConsumer(consumer), DataTruncated)
        self.assertEqual(consumer.received, [])

    def test_complete(self) -> None:
        """
        A connection that ended with a TLS close_notify before the upload
        was ready gives it all it brought.
        """
        dtp, _ = self.dtp()
        dtp.connectionLost(Failure(ConnectionDone()))
        consumer = _Keeper()
        self.successResultOf(dtp.registerConsumer(consumer))
        self.assertEqual(consumer.received, [b"early"])

    def test_stopProducing(self) -> None:
        """
        An upload that stops (its file could not be written) cuts the data
        connection.
        """
        dtp, transport = self.dtp()
        transport.abortConnection = lambda: setattr(transport, "aborted", True)  # type: ignore[method-assign]
        dtp.stopProducing()
        self.assertTrue(getattr(transport, "aborted", False))


class HeldDataTests(SynchronousTestCase):
    """
    What comes on a data connection before a transfer takes it is held,
    bounded, and never counts as the session's activity.
    """

    def dtp(self) -> tuple[SecureDTP, StringTransport, list[None]]:
        progress: list[None] = []
        dtp = SecureDTP(WarningBudget(Clock(), "ftp"), lambda: progress.append(None))
        dtp.factory = _Factory()
        transport = StringTransport()
        dtp.makeConnection(transport)
        return dtp, transport, progress

    def test_pausedAboveLimit(self) -> None:
        """
        Reading pauses once more than L{HELD_LIMIT} bytes wait for no
        transfer, the session's idle time goes on, and a transfer that
        comes takes them all and resumes reading.
        """
        dtp, transport, progress = self.dtp()
        chunk = b"x" * (64 * 1024)
        count = HELD_LIMIT // len(chunk)
        for _ in range(count):
            dtp.dataReceived(chunk)
        self.assertEqual(transport.producerState, "producing")
        dtp.dataReceived(chunk)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(progress, [])
        consumer = _Keeper()
        dtp.registerConsumer(consumer)
        self.assertEqual(transport.producerState, "producing")
        self.assertEqual(b"".join(consumer.received), chunk * (count + 1))
        dtp.dataReceived(b"more")
        self.assertEqual(len(progress), 1)

    def test_cutAboveMost(self) -> None:
        """
        A connection that brings more than L{HELD_MOST} bytes for no
        transfer, though paused, is cut, and what it brought is dropped.
        """
        dtp, transport, progress = self.dtp()
        transport.abortConnection = lambda: setattr(transport, "aborted", True)  # type: ignore[method-assign]
        dtp.dataReceived(b"x" * HELD_MOST)
        self.assertFalse(getattr(transport, "aborted", False))
        dtp.dataReceived(b"x")
        self.assertTrue(getattr(transport, "aborted", False))
        self.assertEqual(progress, [])

    def test_downloadProgress(self) -> None:
        """
        What a download sends is the session's activity.
        """
        dtp, transport, progress = self.dtp()
        dtp.write(b"sent")
        self.assertEqual(len(progress), 1)


class LargeReadsTests(SynchronousTestCase):
    """
    Tests for L{PeerOnlyTLSFactory}'s protocol.
    """

    def test_readSize(self) -> None:
        """
        A data connection reads up to L{READ_SIZE} bytes at once, not
        Twisted's 64 KiB.
        """
        factory = PeerOnlyTLSFactory(
            SessionTLS(selfSigned(("ftp.example.com",))),
            SecureDTPFactory(_PI(), Clock(), True, WarningBudget(Clock(), "ftp")),
            "127.0.0.1",
            WarningBudget(Clock(), "ftp"),
        )
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.bufferSize, READ_SIZE)  # type: ignore[attr-defined]
