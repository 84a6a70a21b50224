"""
Whether a node may use the cluster's database now: not before the key
check passed (the database was first used with the same key file), not
while it cannot be reached (then one cheap query every L{PROBE_INTERVAL}
seconds tells when it is back), and never again once the key check
failed.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .. import events
from ..coroutines import deferred
from .interface import IStorage, StorageError, StorageUnavailable
from .sealed import SealedValueRefused

#: The key of the record that tells whether a node's key file is the
#: cluster's: a known text, sealed by the first node.
KEY_CHECK = "cluster-key-check"
#: What that record holds, once opened.
KEY_CHECK_TEXT = b"letsencrypt-resource cluster key check, version 1"
#: Seconds between two attempts to reach the database while it cannot be
#: reached.
PROBE_INTERVAL = 5.0

UNKNOWN = "unknown"
UP = "up"
LOST = "lost"
REFUSED = "refused"


class KeyMismatch(StorageUnavailable):
    """
    The database was first used with another cluster key file: this node
    uses nothing from it.
    """


class Availability:
    """
    The state of one node's use of the database: L{UNKNOWN} until the first
    key check ends, then L{UP}, L{LOST} or, for good, L{REFUSED}.

    @ivar state: One of those.
    """

    _log = Logger()

    def __init__(
        self,
        shared: IStorage,
        clock: IReactorTime,
        node: str,
        keyFile: str,
        onBack: Callable[[float], object],
        onRefused: Callable[[], object],
    ):
        """
        @param shared: The database's storage, sealed (see
            L{SealedStorage <letsencrypt_resource.storage.sealed.SealedStorage>}).
        @param node: The node's name, for events.
        @param keyFile: The key file's path, for errors and events.
        @param onBack: Called when the database is back after it was lost,
            or reached for the first time after a start without it, with
            the time it was found lost.
        @param onRefused: Called once the key check has failed.
        """
        self._shared = shared
        self._clock = clock
        self._node = node
        self._keyFile = keyFile
        self._onBack = onBack
        self._onRefused = onRefused
        self.state = UNKNOWN
        self._waiting: list[Deferred[None]] | None = None
        self._lostSince = 0.0
        self._probe: IDelayedCall | None = None
        self._closed = False

    def ready(self) -> Deferred[None]:
        """
        A Deferred that fires once the first key check has ended, which
        the first call starts.
        """
        if self.state != UNKNOWN:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        if self._waiting is None:
            self._waiting = [waiter]
            self._check()
        else:
            self._waiting.append(waiter)
        return waiter

    def refusal(self, key: str) -> StorageError | None:
        """
        The error a call about C{key} fails with now, without reaching the
        database, or C{None} when the database may be used.
        """
        if self.state == REFUSED:
            return KeyMismatch(key, f"cluster_key_file {self._keyFile} is not the cluster's")
        if self.state == LOST:
            return StorageUnavailable(key, "the cluster database cannot be reached")
        return None

    def lost(self, error: StorageError) -> None:
        """
        A call failed for want of the database (C{error}): report it, and
        try to reach it again regularly.
        """
        if self.state in (LOST, REFUSED) or self._closed:
            return
        self.state = LOST
        self._lostSince = self._clock.seconds()
        events.CLUSTER_DATABASE_LOST.emit(self._log, node_name=self._node, details=error.message)
        self._probeLater()

    def _probeLater(self) -> None:
        if not self._closed and (self._probe is None or not self._probe.active()):
            self._probe = self._clock.callLater(PROBE_INTERVAL, self._check)

    @deferred
    async def _check(self) -> None:
        """
        Read the key check record (store it first when there is none) and
        set the state from the outcome.
        """
        try:
            value = await self._shared.load(KEY_CHECK)
            if value is None:
                await self._shared.store(KEY_CHECK, KEY_CHECK_TEXT)
                # Another node may have stored its own meanwhile: the one
                # read now is the cluster's.
                value = await self._shared.load(KEY_CHECK)
        except SealedValueRefused as error:
            self._refuse(error.message)
        except StorageError as error:
            if self.state == UNKNOWN:
                self.state = UP
                self.lost(error)
            self._probeLater()
        else:
            if value != KEY_CHECK_TEXT:
                self._refuse("the key check record holds something else")
            else:
                self._up()
        finally:
            waiting, self._waiting = self._waiting or [], []
            for waiter in waiting:
                waiter.callback(None)

    def _up(self) -> None:
        previous, self.state = self.state, UP
        if previous == LOST and not self._closed:
            seconds = round(self._clock.seconds() - self._lostSince)
            events.CLUSTER_DATABASE_BACK.emit(self._log, node_name=self._node, seconds=seconds)
            self._onBack(self._lostSince)

    def _refuse(self, details: str) -> None:
        self.state = REFUSED
        events.CLUSTER_KEY_MISMATCH.emit(
            self._log, node_name=self._node, path=self._keyFile, details=details
        )
        self._onRefused()

    def close(self) -> None:
        """
        Stop trying to reach the database.
        """
        self._closed = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
