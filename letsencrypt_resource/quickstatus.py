"""
The operations command's C{status}, answered by the running server at the
cost of a small start: the command line and the configuration file are
read only as far as status needs (the state directory of the enabled
C{lets-encrypt} resource), the server is asked over its control socket
with the standard library alone, and nothing else of the package is
imported.  Whenever this way cannot answer (another command or form of
the command line, a file it cannot read so, no server, an error), the
full command runs, which reads and checks the whole configuration.
"""

from __future__ import annotations

import bisect
import configparser
import json
import os
import re
import socket
import stat
import time
from collections.abc import Callable
from typing import Any, TextIO

from .controlsocket import (
    MAX_ANSWER,
    STATUS_ANSWER_WAIT,
    AnswerLine,
    AnswerTooLong,
    requestLine,
    resultOf,
    serverAddress,
)
from .display import formatStatus
from .inireader import readINI, resolvePath
from .operationerror import OperationError
from .resourcesection import (
    DEFAULT_STATE_DIRECTORY,
    ENABLED_DEFAULT,
    RESOURCE_OPTION_NAMES,
    RESOURCE_TYPE,
    parseBoolean,
)

#: Seconds to wait for the server to accept the connection.
CONNECT_WAIT = 5.0
#: Seconds to wait for its whole answer: the reactor's client's deadline.
ANSWER_WAIT = STATUS_ANSWER_WAIT
#: The section type, enabled option and state directory option read.
_TYPE, _ENABLED, _STATE = "type", "enabled", "state_directory"
#: A line that starts with C{[} and is no section header as the
#: configuration reads it (C{configparser.ConfigParser.SECTCRE} on the
#: stripped line): no C{]} after the character next to the C{[}.  These
#: patterns are searched for in the text after a line end, which each
#: begins with (a literal start is searched for fast, unlike C{^}).
_NO_HEADER = re.compile(r"\n\[(?![^\n]+\])")
#: A resource section's header, which a header that starts so is.
_RESOURCE = re.compile(r"\n\[resources/")
#: An indented line that starts as a resource section's header.
_INDENTED_RESOURCE = re.compile(r"\n[^\S\n]+\[resources/")


def statusArguments(argv: list[str]) -> tuple[str, bool] | None:
    """
    The configuration file and whether JSON is asked for, when C{argv} is
    C{status [--json]} with one C{--config FILE} (or C{-c FILE}, or
    C{--config=FILE}) before or after it; C{None} for anything else, which
    the full command line parser takes.
    """
    path: str | None = None
    command = False
    asJSON = False
    words = iter(argv)
    for word in words:
        if word in ("--config", "-c"):
            path = next(words, None)
            if path is None or path.startswith("-"):
                return None
        elif word.startswith("--config="):
            path = word.partition("=")[2]
        elif word == "status" and not command:
            command = True
        elif word == "--json" and command:
            asJSON = True
        else:
            return None
    if not command or not path:
        return None
    return path, asJSON


def _resourceSections(text: str) -> str | None:
    """
    The C{[resources/...]} sections of the INI C{text}, each from its
    header to the next header; C{None} when a line could be read as a
    header otherwise than the configuration reads it (a line that starts
    with C{[} and is no header, an indented resource header outside a
    resource section).  Lines end at C{\\n} alone, as the configuration
    reads them.  A few searches of the whole text find them: no step is
    taken per section of another kind (a server's many services).
    """
    lines = "\n" + text
    if _NO_HEADER.search(lines):
        return None
    # Positions in lines: one past those in text.
    starts: list[int] = []
    ends: list[int] = []
    for found in _RESOURCE.finditer(lines):
        starts.append(found.start())
        # The next line that starts with "[": the next header.
        ends.append(lines.find("\n[", found.end()) + 1 or len(lines))
    for found in _INDENTED_RESOURCE.finditer(lines):
        section = bisect.bisect_right(starts, found.start()) - 1
        if section < 0 or found.start() >= ends[section]:
            return None
    return "".join(lines[start + 1 : end] for start, end in zip(starts, ends, strict=True))


def stateDirectoryOf(path: str) -> str | None:
    """
    The state directory of the one enabled C{lets-encrypt} resource of the
    configuration file at C{path}, as the configuration reads it, from its
    resource sections alone; C{None} when that is not plain, the resource
    sections would not pass the configuration's reading (a section twice,
    an option twice or unknown), or the file is not a regular file (a
    pipe, C{/dev/stdin}, a process substitution can be read once only: the
    full command reads it).  The values of the options other than C{type},
    C{enabled} and C{state_directory} are not checked, nor other sections.
    """
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, encoding="utf-8-sig") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                return None
            text = stream.read()
    except (OSError, UnicodeDecodeError):
        return None
    resources = _resourceSections(text)
    if resources is None:
        return None
    try:
        sections = readINI(resources)
    except configparser.Error:
        return None
    found = []
    for values in sections.values():
        if (
            values.get(_TYPE, "").strip() != RESOURCE_TYPE
            or not values.keys() <= RESOURCE_OPTION_NAMES
        ):
            return None
        try:
            if parseBoolean(values.get(_ENABLED, ENABLED_DEFAULT)):
                found.append(values.get(_STATE, "").strip())
        except ValueError:
            return None
    if len(found) != 1 or "\0" in found[0]:
        return None
    base = os.path.dirname(os.path.abspath(path))
    return resolvePath(base, found[0] or DEFAULT_STATE_DIRECTORY)


def readLine(receive: Callable[[int], bytes], limit: int = MAX_ANSWER) -> bytes | None:
    """
    The first line that C{receive} gives, without its end (see
    L{AnswerLine <letsencrypt_resource.controlsocket.AnswerLine>});
    C{None} when the connection ends first or the line is longer than
    C{limit} bytes, L{MAX_ANSWER
    <letsencrypt_resource.controlsocket.MAX_ANSWER>} as for the other
    client: no more than one byte beyond it is ever asked for.
    """
    answer = AnswerLine(limit)
    while True:
        chunk = receive(min(1 << 20, answer.wanted()))
        if not chunk:
            return None
        try:
            line = answer.feed(chunk)
        except AnswerTooLong:
            return None
        if line is not None:
            return line


def receiving(
    connection: socket.socket, wait: float, clock: Callable[[], float] = time.monotonic
) -> Callable[[int], bytes]:
    """
    A receive of C{connection} for L{readLine}, under one deadline: the
    whole answer must come within C{wait} seconds from now, however it is
    cut into parts.

    @return: A function like C{connection.recv}, which raises
        C{TimeoutError} once the deadline has passed.
    """
    deadline = clock() + wait

    def receive(size: int) -> bytes:
        left = deadline - clock()
        if left <= 0:
            raise TimeoutError(f"no answer within {wait:g} s")
        connection.settimeout(left)
        return connection.recv(size)

    return receive


def askStatus(stateDirectory: str) -> tuple[Any, str | None] | None:
    """
    The answer of the server running on C{stateDirectory} to C{status},
    once its control socket is trusted as the full command trusts it
    (L{serverAddress <letsencrypt_resource.controlsocket.serverAddress>}):
    its result, and the result's text to print as it is, when it is safe to
    (see L{resultOf <letsencrypt_resource.controlsocket.resultOf>});
    C{None} when there is no such
    server, it answers no status, or its answer is no answer or does not
    come within L{ANSWER_WAIT} seconds.
    """
    try:
        with serverAddress(stateDirectory) as address:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(CONNECT_WAIT)
                connection.connect(address)
                connection.sendall(requestLine("status", {}))
                line = readLine(receiving(connection, ANSWER_WAIT))
        return None if line is None else resultOf(line)
    except (OSError, OperationError):
        return None


def quickStatus(argv: list[str], out: TextIO) -> bool:
    """
    Print, to C{out}, the status a running server gives, when C{argv} asks
    for it plainly (see L{statusArguments}).

    @return: Whether it did; when not, the full command is to run.
    """
    arguments = statusArguments(argv)
    if arguments is None:
        return False
    path, asJSON = arguments
    stateDirectory = stateDirectoryOf(path)
    if stateDirectory is None:
        return False
    answer = askStatus(stateDirectory)
    if answer is None:
        return False
    rows, text = answer
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        return False
    if asJSON:
        # The rows as the server encoded them, the same text as json.dumps
        # gives, rather than encoded again; else encoded again, escaped.
        if text is None:
            try:
                text = json.dumps(rows)
            except (ValueError, RecursionError):
                return False
        out.write(text + "\n")
        return True
    try:
        table = formatStatus(rows, True, stateDirectory)
    except (LookupError, TypeError, ValueError, AttributeError):
        # Rows of another shape: the full command says what is wrong.
        return False
    out.write(table + "\n")
    return True
