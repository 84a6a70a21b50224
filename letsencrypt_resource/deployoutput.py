"""
What a deploy command writes, logged as events a line at a time, within
bounds: at most L{MAX_LINES} lines of at most L{MAX_LINE_BYTES} bytes each
per run, the rest counted and told in one event at the end.  Control
characters are escaped, so that a line cannot forge another event.
"""

from __future__ import annotations

from twisted.logger import Logger

from . import events
from .display import printableText

#: The most lines of one run logged, stdout and stderr together.
MAX_LINES = 50
#: The most bytes of one line logged; a longer line is cut there.
MAX_LINE_BYTES = 1000
#: The names of the streams, by file descriptor.
STREAMS = {1: "stdout", 2: "stderr"}


def printable(data: bytes) -> str:
    """
    C{data} as UTF-8 text, undecodable bytes replaced and every character
    that is not printable (a line break, an escape sequence) escaped.
    """
    return printableText(data.decode("utf-8", errors="replace"))


class OutputLines:
    """
    Splits a run's output into lines and logs each as event 20248, until
    the bounds are reached.
    """

    def __init__(self, domains: str, log: Logger):
        """
        @param domains: The label of the domain set, for events.
        @param log: Where events go.
        """
        self._domains = domains
        self._log = log
        self._partial = dict.fromkeys(STREAMS, b"")
        self._logged = 0
        self._droppedLines = 0
        self._droppedBytes = 0

    def received(self, fd: int, data: bytes) -> None:
        """
        Take C{data}, written on C{fd}; a line longer than
        L{MAX_LINE_BYTES} is logged in pieces of that size, so that an
        unfinished line never holds more.
        """
        pending = self._partial[fd] + data
        *lines, rest = pending.split(b"\n")
        for line in lines:
            self._line(fd, line)
        whole = len(rest) - len(rest) % MAX_LINE_BYTES
        if whole:
            self._line(fd, rest[:whole])
        self._partial[fd] = rest[whole:]

    def finished(self) -> None:
        """
        The run ended: log what is left of unfinished lines, then what was
        not logged (event 20249), if anything.
        """
        for fd, rest in self._partial.items():
            if rest:
                self._line(fd, rest)
            self._partial[fd] = b""
        if self._droppedLines:
            events.DEPLOY_OUTPUT_TRUNCATED.emit(
                self._log,
                domains=self._domains,
                lines=self._droppedLines,
                bytes=self._droppedBytes,
                limit=MAX_LINES,
            )
            self._droppedLines = self._droppedBytes = 0

    def _line(self, fd: int, line: bytes) -> None:
        """
        Log C{line}, in pieces of L{MAX_LINE_BYTES}, or count it once
        L{MAX_LINES} are logged.
        """
        line = line.rstrip(b"\r")
        for start in range(0, max(len(line), 1), MAX_LINE_BYTES):
            piece = line[start : start + MAX_LINE_BYTES]
            if self._logged >= MAX_LINES:
                self._droppedLines += 1
                self._droppedBytes += len(piece)
                continue
            self._logged += 1
            events.DEPLOY_OUTPUT.emit(
                self._log, domains=self._domains, stream=STREAMS[fd], line=printable(piece)
            )
