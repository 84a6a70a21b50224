"""
Whether a node may use the cluster's database now: not before the key
check passed (the database was first used with the same key file), not
while it cannot be reached or its key check record no longer opens (then
one cheap query every L{PROBE_INTERVAL} seconds tells when it is back),
and never again once the key check failed at start.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import events
from ..coroutines import deferred
from .interface import IStorage, StaleFence, StorageError, StorageUnavailable
from .sealed import SealedValueRefused

T = TypeVar("T")

#: The key of the record that tells whether a node's key file is the
#: cluster's: a known text, sealed by the first node.
KEY_CHECK = "cluster-key-check"
#: What that record holds, once opened.
KEY_CHECK_TEXT = b"letsencrypt-resource cluster key check, version 1"
#: Seconds between two attempts to reach the database while it cannot be
#: reached.
PROBE_INTERVAL = 5.0
#: The fewest seconds between two attempts that a call asks for, while the
#: database cannot be reached, rather than wait for the next probe (see
#: L{Availability.recheck}).
RECHECK_GAP = 1.0
#: Seconds a node may hold the lease C{cluster-key-check} (named as the
#: record) while it stores the record, which only the holder may create.
KEY_CHECK_LEASE = 30.0
#: Seconds before the first new attempt to take that lease while another
#: node holds it (normally for a few milliseconds), doubled at each attempt
#: up to L{KEY_CHECK_RETRY_MAX}.
KEY_CHECK_RETRY = 0.1
KEY_CHECK_RETRY_MAX = 2.0
#: Seconds a node waits for any answer of the database before it takes it
#: as lost: the last bound, beyond the database's own time limits (see
#: L{postgres <letsencrypt_resource.storage.postgres>}), for a call stuck
#: behind others or on a connection that stopped answering.
CALL_DEADLINE = 60.0

UNKNOWN = "unknown"
UP = "up"
LOST = "lost"
REFUSED = "refused"


class KeyMismatch(StorageUnavailable):
    """
    The database was first used with another cluster key file: this node
    uses nothing from it.
    """


def deadline(d: Deferred[T], clock: IReactorTime, key: str) -> Deferred[T]:
    """
    C{d}, failed with L{StorageUnavailable} about C{key} unless it fires
    within L{CALL_DEADLINE} seconds (its late answer is then dropped).
    """

    def late(failure: Failure) -> Failure:
        failure.trap(TimeoutError)
        raise StorageUnavailable(key, f"the database gave no answer in {CALL_DEADLINE:g} s")

    return d.addTimeout(CALL_DEADLINE, clock).addErrback(late)


class Availability:
    """
    The state of one node's use of the database: L{UNKNOWN} until the first
    key check ends, then L{UP}, L{LOST} or, for good, L{REFUSED}: the
    first check's mismatch stops the node (C{onRefused}), a later one only
    keeps it L{LOST}, serving from its cache, until the record opens again.

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
        @param onRefused: Called once the key check has failed at start.
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
        self._mismatched = False
        self._rechecking: Deferred[None] | None = None
        self._lastRecheck: float | None = None

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

    def recheck(self) -> Deferred[None]:
        """
        While the database counts as lost, try to reach it now rather than
        at the next probe, up to L{PROBE_INTERVAL} seconds later: for a
        call that cannot wait, such as a CA's validation request asking
        for a challenge token just after the database came back.  One
        attempt at a time, and none within L{RECHECK_GAP} seconds of the
        last one asked.

        @return: A Deferred that fires, never failing, once the state is
            known again (at once when the database does not count as lost).
        """
        if self.state != LOST or self._closed:
            return succeed(None)
        checking = self._rechecking
        if checking is None:
            now = self._clock.seconds()
            if self._lastRecheck is not None and now - self._lastRecheck < RECHECK_GAP:
                return succeed(None)
            self._lastRecheck = now
            if self._probe is not None and self._probe.active():
                self._probe.cancel()
            checking = self._rechecking = self._check()

            def ended(result: object) -> None:
                self._rechecking = None

            checking.addBoth(ended)
        waiter: Deferred[None] = Deferred()
        checking.addBoth(lambda _: waiter.callback(None))
        return waiter

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

    def _ask(self, d: Deferred[T]) -> Deferred[T]:
        return deadline(d, self._clock, KEY_CHECK)

    async def _readCheck(self) -> bytes:
        """
        The key check record's text; when there is none, this node's,
        stored under the lease L{KEY_CHECK} so that it is stored only
        where none is: of nodes that start together with different key
        files, one stores it, and the others read it and are refused.
        """
        value = await self._ask(self._shared.load(KEY_CHECK))
        retry = KEY_CHECK_RETRY
        while value is None and not self._closed:
            lease = await self._ask(self._shared.lease(KEY_CHECK, KEY_CHECK_LEASE))
            if lease is None:
                await deferLater(self._clock, retry, lambda: None)
                retry = min(retry * 2, KEY_CHECK_RETRY_MAX)
                continue
            try:
                value = await self._ask(self._shared.load(KEY_CHECK))
                if value is None:
                    await self._ask(self._shared.store(KEY_CHECK, KEY_CHECK_TEXT, lease))
                    value = KEY_CHECK_TEXT
            except StaleFence:
                continue  # held too long: another node took over; read its record
            finally:
                lease.release().addErrback(lambda failure: None)  # or let it expire
        if value is None:
            raise StorageUnavailable(KEY_CHECK, "the storage is closed")
        return value

    @deferred
    async def _check(self) -> None:
        """
        Read the key check record (store it first when there is none) and
        set the state from the outcome; the first check's waiters are told
        once the state is known.
        """
        try:
            value = await self._readCheck()
        except SealedValueRefused as error:
            self._refuse(error.message)
        except StorageError as error:
            self._unreachable(error)
        except Exception as error:
            self._log.failure("The cluster key check failed")
            self._unreachable(StorageUnavailable(KEY_CHECK, f"the key check failed: {error!r}"))
        else:
            if value != KEY_CHECK_TEXT:
                self._refuse("the key check record holds something else")
            else:
                self._up()
        finally:
            if self.state == UNKNOWN:  # only when cancelled: never let a call skip the check
                self._unreachable(StorageUnavailable(KEY_CHECK, "the key check was cancelled"))
            waiting, self._waiting = self._waiting or [], None
            for waiter in waiting:
                waiter.callback(None)

    def _unreachable(self, error: StorageError) -> None:
        if self.state == UNKNOWN:
            self.state = UP
        self.lost(error)
        self._probeLater()

    def _up(self) -> None:
        previous, self.state = self.state, UP
        self._mismatched = False
        if previous == LOST and not self._closed:
            seconds = round(self._clock.seconds() - self._lostSince)
            events.CLUSTER_DATABASE_BACK.emit(self._log, node_name=self._node, seconds=seconds)
            self._onBack(self._lostSince)

    def _refuse(self, details: str) -> None:
        """
        The key check record does not open: at start, refuse the database
        for good and stop; later (a record changed or restored from
        elsewhere, found by a probe), stay lost and keep serving from the
        cache, reporting it once, until the record opens again.
        """
        if not self._mismatched:
            events.CLUSTER_KEY_MISMATCH.emit(
                self._log, node_name=self._node, path=self._keyFile, details=details
            )
        self._mismatched = True
        if self.state == UNKNOWN:
            self.state = REFUSED
            self._onRefused()
        else:
            self._unreachable(StorageUnavailable(KEY_CHECK, details))

    def close(self) -> None:
        """
        Stop trying to reach the database.
        """
        self._closed = True
        if self._probe is not None and self._probe.active():
            self._probe.cancel()
