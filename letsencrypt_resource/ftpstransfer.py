"""
The transfer commands of the FTPS protocol (RETR, STOR, LIST, NLST), over
the data connections of L{letsencrypt_resource.ftpsdata}: a download is
complete once the data connection's handshake passed its checks and the
file was sent; an upload is stored only when its data connection ended
with a TLS close_notify.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail
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
    IReadFile,
    toSegments,
)
from twisted.python.failure import Failure

from . import events
from .ftpsdata import DataRefused, SecureDTP
from .ftpsshell import Upload

#: The lines of a listing formatted and sent at once.
LIST_LINES_AT_ONCE = 200
#: What each entry of a LIST tells.
_LIST_KEYS = ("size", "directory", "permissions", "hardlinks", "modified", "owner", "group")
#: The reply to a transfer whose data connection did not resume the
#: session (vsftpd's words).
REUSE_REQUIRED = "522 SSL connection failed: session reuse required"


class TransferCommands:
    """
    RETR, STOR, LIST and NLST for an C{FTP} subclass whose data connections
    are L{SecureDTP}.
    """

    if TYPE_CHECKING:
        # Given by twisted.protocols.ftp.FTP and the protocol.
        dtpInstance: Any
        workingDirectory: list[str]
        binary: bool
        shell: Any
        transport: Any
        factory: Any

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
        if failure.check(FTPCmdError):
            return (failure.value.errorCode, path)  # type: ignore[union-attr]
        return (CNX_CLOSED_TXFR_ABORTED,)

    def _started(self, dtp: SecureDTP) -> None:
        self.reply(
            DATA_CNX_ALREADY_OPEN_START_XFR if dtp.isConnected else FILE_STATUS_OK_OPEN_DATA_CNX
        )

    def ftp_RETR(self, path: str) -> Deferred[Any]:
        dtp = self._dataConnection("RETR")
        segments = self._segments(path)

        def send(file: IReadFile) -> Deferred[Any]:
            self._started(dtp)
            sending = file.send(dtp if self.binary else ASCIIConsumerWrapper(dtp))
            return sending.addCallback(lambda _: dtp.whenHandshaken())

        return self._transfer(self.shell.openForReading(segments), send, path)

    def ftp_STOR(self, path: str) -> Deferred[Any]:
        dtp = self._dataConnection("STOR")
        segments = self._segments(path)

        def receive(upload: Upload) -> Deferred[Any]:
            receiving: Deferred[Any] = upload.receive()
            receiving.addCallback(lambda consumer: self._receiveInto(dtp, consumer))
            receiving.addCallback(lambda _: upload.close())
            receiving.addErrback(self._uploadFailed, upload, path)
            return receiving

        return self._transfer(self.shell.openForWriting(segments), receive, path)

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

    def _receiveInto(self, dtp: SecureDTP, consumer: Any) -> Deferred[None]:
        if not self.binary:
            consumer = ASCIIConsumerWrapper(consumer)
        receiving: Deferred[None] = dtp.registerConsumer(consumer)
        self._started(dtp)
        return receiving

    def _uploadFailed(self, failure: Failure, upload: Upload, path: str) -> Failure:
        upload.abort()
        self.factory.warnings.emit(
            events.FTPS_UPLOAD_FAILED,
            path=path,
            client=self.transport.getPeer().host,
            details=failure.getErrorMessage() or "failed",
        )
        return failure

    def ftp_LIST(self, path: str = "") -> Deferred[Any]:
        """
        Send the listing of C{path} a few hundred lines at a time, between
        other work of the reactor (Twisted's formats and sends it at once,
        a TLS record for each entry).
        """
        dtp = self.dtpInstance
        if dtp is None or not dtp.isConnected:
            return fail(BadCmdSequenceError("PASV or EPSV required before LIST"))
        if path.lower() in ("-a", "-l", "-la", "-al"):
            # Flags that clients send; ignored, as Twisted does.
            path = ""
        segments = self._segments(path)

        def lines(results: list[tuple[str, list[Any]]]) -> Iterator[None]:
            for start in range(0, len(results), LIST_LINES_AT_ONCE):
                dtp.transport.write(
                    b"".join(
                        dtp._formatOneListResponse(self._encodeName(name), *attributes) + b"\r\n"
                        for name, attributes in results[start : start + LIST_LINES_AT_ONCE]
                    )
                )
                yield None

        def send(results: list[tuple[str, list[Any]]]) -> Deferred[Any]:
            self.reply(DATA_CNX_ALREADY_OPEN_START_XFR)
            sending: Deferred[Any] = cooperate(lines(results)).whenDone()
            return sending.addCallback(lambda _: dtp.transport.loseConnection())

        listing: Deferred[Any] = self.shell.list(segments, _LIST_KEYS)
        listing.addCallback(send)
        listing.addCallback(lambda _: (TXFR_COMPLETE_OK,))
        return listing.addCallback(self._listed)

    def _listed(self, result: Any) -> Any:
        """
        Hold a listing's reply until its data connection passed its checks.
        """
        dtp = self.dtpInstance
        if dtp is None or result != (TXFR_COMPLETE_OK,):
            return result
        return dtp.whenHandshaken().addCallbacks(
            lambda _: result, self._transferFailed, errbackArgs=("",)
        )


def _notFound(failure: Failure, path: str) -> Failure:
    """
    A file that cannot be opened, as a client sees it.
    """
    if failure.check(FTPCmdError):
        return failure
    return Failure(FileNotFoundError(path))
