"""
The frames a state directory's read-ahead process writes (see
L{letsencrypt_resource.storage.readerchild}), read back: each checked, as
what another process wrote, before it is believed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..safefs import UnusablePath
from .fileread import Result, TooLarge
from .readerchild import DATA, ERRNO, ERROR, HEADER, HELLO_FRAME, MISSING, TOO_LARGE, UNUSABLE

#: The longest message an L{ERROR} or L{UNUSABLE} frame may carry.
MAX_MESSAGE = 1 << 16


class MalformedFrame(Exception):
    """
    The process wrote something that is not a frame it may write.
    """


class Frames:
    """
    The frames of the process that reads C{keys}, read as they arrive.

    @ivar complete: Whether a frame of every key has arrived.
    @ivar greeted: Whether the first frame, L{HELLO_FRAME}, has arrived.
    """

    def __init__(self, directory: str, keys: Sequence[str], limit: int):
        """
        @param directory: The state directory's path, which the paths that
            the process names must be under.
        @param keys: The keys the process was given, in order.
        @param limit: The most bytes a file is read of.
        """
        self._directory = directory
        self._keys = keys
        self._limit = limit
        self._seen = bytearray(len(keys))
        self._left = len(keys)
        self._buffer = b""
        self.greeted = False

    @property
    def complete(self) -> bool:
        return self.greeted and self._left == 0 and not self._buffer

    def feed(self, data: bytes) -> list[tuple[str, Result]]:
        """
        The keys and their values whose frames C{data} ends.

        @raise MalformedFrame: when C{data} or what came before it is not
            frames the process may write: a frame of an unknown kind, of a
            key it was not given or given already, longer than a value or
            a message can be, or with a payload its kind does not have;
            or a first frame that is not L{HELLO_FRAME}.
        """
        buffer = self._buffer + data if self._buffer else data
        results: list[tuple[str, Result]] = []
        start = 0
        if not self.greeted:
            if buffer[: len(HELLO_FRAME)] != HELLO_FRAME[: len(buffer)]:
                raise MalformedFrame("the first frame is not the process's greeting")
            if len(buffer) < len(HELLO_FRAME):
                self._buffer = buffer
                return results
            self.greeted = True
            start = len(HELLO_FRAME)
        end = len(buffer)
        size = HEADER.size
        while end - start >= size:
            kind, index, length = HEADER.unpack_from(buffer, start)
            key = self._key(index)
            if length > (self._limit if kind == DATA else MAX_MESSAGE):
                raise MalformedFrame(f"a frame of {key} is {length} bytes long")
            if end - start - size < length:
                break
            payload = buffer[start + size : start + size + length]
            start += size + length
            results.append((key, self._value(kind, key, payload)))
            self._seen[index] = 1
            self._left -= 1
        self._buffer = buffer[start:]
        return results

    def _key(self, index: int) -> str:
        """
        The key of the frame of C{index}.

        @raise MalformedFrame: when it names no key, or one already given.
        """
        if index >= len(self._keys) or self._seen[index]:
            raise MalformedFrame(f"a frame names key number {index}, not one it is to give")
        return self._keys[index]

    def _value(self, kind: int, key: str, payload: bytes) -> Result:
        """
        The value of C{key} that a frame of C{kind} with C{payload} gives.

        @raise MalformedFrame: when it is no such frame.
        """
        if kind == DATA:
            return payload
        if kind in (MISSING, TOO_LARGE) and not payload:
            return None if kind == MISSING else TooLarge(os.path.join(self._directory, key))
        if kind == ERROR and len(payload) >= ERRNO.size:
            (number,) = ERRNO.unpack_from(payload)
            path, message = self._message(key, payload[ERRNO.size :])
            return OSError(number, message, path)
        if kind == UNUSABLE:
            return UnusablePath(*self._message(key, payload))
        raise MalformedFrame(f"the frame of {key} is not one of a read")

    def _message(self, key: str, payload: bytes) -> tuple[str, str]:
        """
        The path and the message of an error's frame about C{key}.

        @raise MalformedFrame: when it has not both, or the path is not
            the key's nor one of the folders on its way.
        """
        path, zero, message = payload.decode("utf-8", "surrogateescape").partition("\0")
        key = os.path.join(self._directory, key)
        if not zero or not (path == key or key.startswith(path + "/")):
            raise MalformedFrame(f"the error of {key} names another path")
        return path, message
