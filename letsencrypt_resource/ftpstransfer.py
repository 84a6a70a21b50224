"""
The transfer commands of the FTPS protocol (RETR, STOR, LIST, NLST), over
the data connections of L{letsencrypt_resource.ftpsdata}: a download is
complete once the data connection's handshake passed its checks and the
file was sent; an upload is stored only when its data connection ended
with a TLS close_notify, and is cut once that connection was silent too
long (L{letsencrypt_resource.ftpssilence}).  RNFR is here too: it refuses
a file an upload is writing at once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import cooperate
from twisted.protocols.ftp import (
    CNX_CLOSED_TXFR_ABORTED,
    DATA_CNX_ALREADY_OPEN_START_XFR,
    FILE_STATUS_OK_OPEN_DATA_CNX,
    TXFR_COMPLETE_OK,
    ASCIIConsumerWrapper,
    BadCmdSequenceError,
    FileNotFoundError,
    FTPCmdError,
    InvalidPath,
    _isGlobbingExpression,
    toSegments,
)
from twisted.python.failure import Failure

from . import events
from .ftpsbusy import FileBusy
from .ftpsdata import DataRefused, SecureDTP
from .ftpsshell import Download, RestartInvalid, StorageFull, Upload, refusal
from .ftpssilence import SilenceLimit

_F = TypeVar("_F", Failure, None)

#: The lines of a listing formatted and sent at once.
LIST_LINES_AT_ONCE = 200
#: What each entry of a LIST tells.
_LIST_KEYS = ("size", "directory", "permissions", "hardlinks", "modified", "owner", "group")
#: The reply to a transfer whose data connection did not resume the
#: session (vsftpd's words).
REUSE_REQUIRED = "522 SSL connection failed: session reuse required"
#: The reply to a transfer whose REST offset is beyond the end of its file
#: (RFC 3659's words).
RESTART_INVALID = "554 Requested action not taken: invalid REST parameter."


class RenameCommands:
    """
    RNFR for an C{FTP} subclass whose shell is a
    L{letsencrypt_resource.ftpsshell.ConfinedShell}.
    """

    if TYPE_CHECKING:
        shell: Any

        def _segments(self, path: str) -> list[str]: ...

    def ftp_RNFR(self, fromName: str) -> Deferred[Any]:
        """
        Refuse to rename a file an upload is writing, or one that cannot
        be changed, at once (with 450 or 550, RFC 959's answers to RNFR);
        else wait for RNTO, as Twisted does.
        """
        checking: Deferred[Any] = self.shell.checkFree(self._segments(fromName))
        return checking.addCallback(self._renameFrom, fromName)

    def _renameFrom(self, _: None, fromName: str) -> Any:
        return super().ftp_RNFR(fromName)  # type: ignore[misc]


class TransferCommands(RenameCommands):
    """
    RETR, STOR, APPE, LIST and NLST for an C{FTP} subclass whose data connections
    are L{SecureDTP}.

    @ivar uploading: The upload in progress, if any.
    """

    uploading: Upload | None = None

    if TYPE_CHECKING:
        # Given by twisted.protocols.ftp.FTP and the protocol.
        dtpInstance: Any
        workingDirectory: list[str]
        binary: bool
        shell: Any
        transport: Any
        factory: Any
        restartAt: int

        def resetTimeout(self) -> None: ...

        def watchWhile(self, running: Deferred[Any]) -> Deferred[Any]: ...

        def sendLine(self, line: bytes | str) -> None: ...

        def reply(self, key: str, *args: Any) -> None: ...

        def _encodeName(self, name: str) -> bytes: ...

    def _dataConnection(self, command: str) -> SecureDTP:
        """
        The data connection a transfer command uses.

        @raise BadCmdSequenceError: when there is none.
        """
        dtp = self.dtpInstance
        if dtp is None:
            raise BadCmdSequenceError(f"PASV or EPSV required before {command}")
        return dtp

    def _segments(self, path: str) -> list[str]:
        try:
            return toSegments(self.workingDirectory, path)
        except InvalidPath:
            raise FileNotFoundError(path) from None

    def _transferFailed(self, failure: Failure, path: str) -> Any:
        """
        The reply to a transfer that failed, without logging a traceback
        for what clients cause.
        """
        dtp = self.dtpInstance
        if failure.check(DataRefused) or (dtp is not None and dtp.refused):
            self.sendLine(REUSE_REQUIRED)
            return None
        if failure.check(RestartInvalid):
            self.sendLine(RESTART_INVALID)
            return None
        if failure.check(StorageFull, FileBusy):
            self.sendLine(failure.value.response())  # type: ignore[union-attr]
            return None
        if failure.check(FTPCmdError):
            return (failure.value.errorCode, path)  # type: ignore[union-attr]
        return (CNX_CLOSED_TXFR_ABORTED,)

    def _started(self, dtp: SecureDTP) -> None:
        self.reply(
            DATA_CNX_ALREADY_OPEN_START_XFR if dtp.isConnected else FILE_STATUS_OK_OPEN_DATA_CNX
        )

    def ftp_RETR(self, path: str) -> Deferred[Any]:
        """
        Send the file at C{path}, from the offset of a REST before.
        """
        offset = self.restartAt
        dtp = self._dataConnection("RETR")
        segments = self._segments(path)

        def send(file: Download) -> Deferred[Any]:
            file.restartAt(offset)
            self._started(dtp)
            consumer: Any = dtp if self.binary else ASCIIConsumerWrapper(dtp)
            # Nothing is sent, nor the connection closed, before its
            # handshake passed its checks.
            sending = dtp.whenHandshaken()
            sending.addErrback(_closeUnsent, file)
            sending.addCallback(lambda _: file.send(consumer))
            # A file that cannot be read to its end is cut short, never
            # closed as if complete.
            return sending.addErrback(_cut, dtp)

        return self._transfer(self.shell.openForReading(segments), send, path)

    def ftp_STOR(self, path: str) -> Deferred[Any]:
        """
        Store what comes as the file at C{path}, after the number of bytes
        of a REST before of the file there.
        """
        return self._store("STOR", path, self.restartAt)

    def ftp_APPE(self, path: str) -> Deferred[Any]:
        """
        Store what comes as the file at C{path}, after all of the file
        there; a REST before is ignored.
        """
        return self._store("APPE", path, None)

    def _store(self, command: str, path: str, start: int | None) -> Deferred[Any]:
        dtp = self._dataConnection(command)
        segments = self._segments(path)

        def receive(upload: Upload) -> Deferred[Any]:
            self.uploading = upload
            receiving = self.watchWhile(upload.receive(self.resetTimeout))
            receiving.addCallback(lambda consumer: self._receiveInto(dtp, consumer))
            receiving.addCallback(lambda _: upload.close())
            receiving.addErrback(self._uploadFailed, upload, dtp, path)
            return receiving.addBoth(self._uploaded)

        return self._transfer(self.shell.openForWriting(segments, start), receive, path)

    def _transfer(
        self, opening: Deferred[Any], transfer: Callable[[Any], Deferred[Any]], path: str
    ) -> Deferred[Any]:
        """
        Once the file at C{path} is C{opening}, run C{transfer} on it, and
        give the command's reply.
        """
        opening.addErrback(lambda failure: fail(_notFound(failure, path)))
        opening.addCallback(transfer)
        opening.addCallbacks(
            lambda _: (TXFR_COMPLETE_OK,), self._transferFailed, errbackArgs=(path,)
        )
        return opening

    def _uploaded(self, result: Any) -> Any:
        self.uploading = None
        return result

    def _receiveInto(self, dtp: SecureDTP, consumer: Any) -> Deferred[None]:
        consumer = _watched(consumer, self.binary, dtp, self.factory.reactor)
        receiving: Deferred[None] = dtp.registerConsumer(consumer)
        self._started(dtp)
        return receiving

    def _uploadFailed(
        self, failure: Failure, upload: Upload, dtp: SecureDTP, path: str
    ) -> Failure | Deferred[Any]:
        """
        Remove a failed upload and cut its data connection (what it still
        brings goes nowhere); a file that could not be written (a full
        disk) gets its own reply.
        """
        upload.abort()
        _cut(failure, dtp)
        # A failed write of the file, rather than the connection it cut.
        failure = upload.failure or failure
        if self.transport is not None:
            self.factory.warnings.emit(
                events.FTPS_UPLOAD_FAILED,
                path=path,
                client=self.transport.getPeer().host,
                details=failure.getErrorMessage() or "failed",
            )
        if failure.check(OSError):
            return refusal(failure.value, [path])  # type: ignore[arg-type]
        return failure

    def _listingConnection(self) -> Any:
        """
        The data connection a listing uses, connected.

        @raise BadCmdSequenceError: when there is none.
        """
        dtp = self.dtpInstance
        if dtp is None or not dtp.isConnected:
            raise BadCmdSequenceError("PASV or EPSV required before LIST or NLST")
        return dtp

    def _sendListing(
        self,
        dtp: Any,
        results: list[tuple[str, list[Any]]],
        line: Callable[..., bytes],
    ) -> Deferred[Any]:
        """
        Send C{line(name, *attributes)} for each of C{results}, a few hundred
        at a time between other work of the reactor (Twisted's listings
        send a TLS record for each entry, all at once), then close the data
        connection.
        """

        def chunks() -> Iterator[None]:
            for start in range(0, len(results), LIST_LINES_AT_ONCE):
                dtp.transport.write(
                    b"".join(
                        line(self._encodeName(name), *attributes) + b"\r\n"
                        for name, attributes in results[start : start + LIST_LINES_AT_ONCE]
                    )
                )
                yield None

        def start(_: None) -> Deferred[Any]:
            return cooperate(chunks()).whenDone()

        self.reply(DATA_CNX_ALREADY_OPEN_START_XFR)
        # Nothing is sent, nor the connection closed, before its handshake
        # passed its checks.
        sending: Deferred[Any] = dtp.whenHandshaken().addCallback(start)
        sending.addCallback(lambda _: dtp.transport.loseConnection())
        sending.addCallbacks(lambda _: (TXFR_COMPLETE_OK,), self._transferFailed, errbackArgs=("",))
        return sending

    def ftp_LIST(self, path: str = "") -> Deferred[Any]:
        """
        Send the listing of C{path}, as C{ls -l} writes it.
        """
        dtp = self._listingConnection()
        if path.lower() in ("-a", "-l", "-la", "-al"):
            # Flags that clients send; ignored, as Twisted does.
            path = ""
        segments = self._segments(path)
        listing: Deferred[Any] = self.shell.list(segments, _LIST_KEYS)
        return listing.addCallback(
            lambda results: self._sendListing(dtp, results, dtp._formatOneListResponse)
        )

    def ftp_NLST(self, path: str = "") -> Deferred[Any]:
        """
        Send the names in C{path}, those matching its last segment when
        that is a pattern; an empty listing when it cannot be listed (RFC
        959 wants a listing or nothing).
        """
        dtp = self._listingConnection()
        segments = self._segments(path)
        pattern = segments.pop() if _isGlobbingExpression(segments) else None

        def send(results: list[tuple[str, list[Any]]]) -> Deferred[Any]:
            if pattern is not None:
                results = [entry for entry in results if fnmatch.fnmatch(entry[0], pattern)]
            return self._sendListing(dtp, results, lambda name: name)

        def nothing(failure: Failure) -> Deferred[Any]:
            return send([])

        listing: Deferred[Any] = self.shell.list(segments, ())
        return listing.addCallbacks(send, nothing)


def abandonUpload(upload: Upload | None, holdSession: Callable[[], Callable[[], None]]) -> None:
    """
    The session of C{upload} ended: abort it, if any; C{holdSession()} is
    called then, and what it gives once the upload stopped (a resumed
    upload's copy ends its step in a thread first).
    """
    if upload is not None:
        upload.abort()
        release = holdSession()
        upload.whenStopped().addBoth(lambda _: release())


def _watched(consumer: Any, binary: bool, dtp: SecureDTP, clock: IReactorTime) -> SilenceLimit:
    """
    What the data connection C{dtp} of an upload gives what it brings: cut
    once silent too long (L{SilenceLimit}), in ASCII mode unless
    C{binary}, then C{consumer}.
    """
    if not binary:
        consumer = ASCIIConsumerWrapper(consumer)
    return SilenceLimit(consumer, clock, lambda: _cut(None, dtp))


def _closeUnsent(failure: Failure, file: Download) -> Failure:
    """
    Close the file of a download that does not start.
    """
    file.close()
    return failure


def _cut(failure: _F, dtp: SecureDTP) -> _F:
    """
    Cut the data connection of a transfer that failed.
    """
    transport: Any = dtp.transport
    if transport is not None:
        transport.abortConnection()
    return failure


def _notFound(failure: Failure, path: str) -> Failure:
    """
    A file that cannot be opened, as a client sees it.
    """
    if failure.check(FTPCmdError):
        return failure
    return Failure(FileNotFoundError(path))
