"""
Change notification among the storage objects of one process that share a
place: each is told of the others' writes.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from .. import events


class ChangeFeed:
    """
    The watches of the storage objects on one place.
    """

    _log = Logger()

    def __init__(self) -> None:
        self._watches: list[tuple[object, str, Callable[[str], object]]] = []

    def watch(
        self, storage: object, prefix: str, callback: Callable[[str], object]
    ) -> Callable[[], None]:
        """
        Call C{callback(key)} for each change to a key starting with
        C{prefix} that another storage than C{storage} makes.

        @return: A function that stops the calls.
        """
        entry = (storage, prefix, callback)
        self._watches.append(entry)

        def stop() -> None:
            self._watches = [w for w in self._watches if w is not entry]

        return stop

    def forget(self, storage: object) -> None:
        """
        Stop every watch of C{storage}.
        """
        self._watches = [w for w in self._watches if w[0] is not storage]

    def changed(self, source: object, key: str) -> None:
        """
        Tell every watch of another storage than C{source} that C{key}
        changed.  A callback that raises is logged (event 20188).
        """
        for storage, prefix, callback in list(self._watches):
            if storage is source or not key.startswith(prefix):
                continue
            try:
                callback(key)
            except Exception as error:
                events.WATCH_CALLBACK_FAILED.emit(self._log, key=key, details=repr(error))
