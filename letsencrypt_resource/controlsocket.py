"""
Where the control socket of a state directory is, whether it can be
trusted, and the lines of its protocol: what the server binds and both
clients of the operations command (L{askServer
<letsencrypt_resource.control.askServer>} in the reactor, and
L{askStatus <letsencrypt_resource.quickstatus.askStatus>} without it)
reach and say, with nothing beyond the standard library, so that the
command can ask a running server without importing the rest of the
package.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .operationerror import OperationError
from .safefs import openFolder

#: The control socket's name in the state directory.
SOCKET_NAME = "control.sock"
#: UNIX socket paths longer than this do not fit in a sockaddr_un.
_MAX_SOCKET_PATH = 100
#: Where, on Linux, each open descriptor of this process is a link to what
#: it opened: a folder held open is reached there by a short path.
DESCRIPTORS = "/proc/self/fd"
#: The longest answer, in bytes.
MAX_ANSWER = 64 * 1024 * 1024
#: Seconds the reactor's client waits for the answer to C{status}, which a
#: server gives from memory; a renewal or an account change, which waits
#: on the CA, has no such deadline.
STATUS_ANSWER_WAIT = 60.0


def socketProblem(folder: int) -> str | None:
    """
    Why the control socket of the state directory open as C{folder} cannot
    be trusted, if it cannot: it must be a socket of the folder's owner,
    the user the server runs as; an answer from any other socket could be
    forged.

    @raise OSError: when there is no socket.
    """
    socket = os.lstat(SOCKET_NAME, dir_fd=folder)
    if not stat.S_ISSOCK(socket.st_mode) or socket.st_uid != os.fstat(folder).st_uid:
        return "it is not a socket of that user"
    return None


@contextmanager
def serverAddress(stateDirectory: str) -> Iterator[str]:
    """
    Open the state directory as the commands check it before they use it
    (L{openFolder <letsencrypt_resource.safefs.openFolder>}, creating
    nothing: a folder of this user that no one else can write in, not a
    link, below folders no other user controls), and check its control
    socket (see L{socketProblem}).

    @return: A context manager giving the socket's address (see
        L{socketAddress}), valid while it is open.
    @raise OperationError: when the socket is not trusted.
    @raise OSError: when the state directory or the socket is missing, or
        the folder breaks the rules
        (L{UnusablePath <letsencrypt_resource.safefs.UnusablePath>}), or
        the socket cannot be reached.
    """
    with openFolder(stateDirectory, create=False) as folder:
        problem = socketProblem(folder)
        if problem is not None:
            path = os.path.join(stateDirectory, SOCKET_NAME)
            owner = os.fstat(folder).st_uid
            raise OperationError(
                f"the control socket {path} is not trusted: the server runs as the "
                f"owner of {stateDirectory} (uid {owner}), and {problem}"
            )
        yield socketAddress(stateDirectory, folder)


def requestLine(name: str, arguments: dict[str, Any]) -> bytes:
    """
    The request to run the operation C{name} with C{arguments}: a line of
    JSON, C{{"name": ..., "arguments": {...}}}, with its end.
    """
    return json.dumps({"name": name, "arguments": arguments}).encode("utf-8") + b"\n"


class AnswerTooLong(Exception):
    """
    The answer's line is longer than the client takes.
    """


class AnswerLine:
    """
    The first line of an answer that comes in parts, for both clients:
    each part is searched for the line's end once (searching all received
    at each part would be quadratic in the answer's length).
    """

    def __init__(self, limit: int = MAX_ANSWER):
        """
        @param limit: The longest line taken, in bytes.
        """
        self._received = bytearray()
        self._limit = limit

    def wanted(self) -> int:
        """
        The most bytes worth receiving next: one beyond the limit at most.
        """
        return self._limit + 1 - len(self._received)

    def feed(self, data: bytes) -> bytes | None:
        """
        Take the next part of the answer.

        @return: The line, without its end, once C{data} ends it; C{None}
            while it goes on.
        @raise AnswerTooLong: when it is longer than the limit.
        """
        if b"\n" in data:
            # Joined in one copy: a line's bytes held twice at most, with
            # what was received, not four times.
            line = b"".join((self._received, memoryview(data)[: data.index(b"\n")]))
        else:
            line = None
            self._received += data
        if len(line if line is not None else self._received) > self._limit:
            raise AnswerTooLong(f"the answer is longer than {self._limit} bytes")
        return line


class EncodedJSON(str):
    """
    A result already encoded, the JSON text C{json.dumps} would give for
    it: the server's answer holds it as it is (see L{answerLine}).
    """


#: How the server's answer to a request that succeeded begins and ends,
#: around the result's JSON text.
_RESULT_HEAD, _RESULT_TAIL = b'{"result": ', b', "error": null}'


def answerLine(result: Any, error: str | None) -> bytes:
    """
    The server's answer: a line of JSON, C{{"result": ..., "error": ...}},
    without its end, as C{json.dumps} writes it, whether or not the result
    is an L{EncodedJSON}.
    """
    if isinstance(result, EncodedJSON) and error is None:
        return _RESULT_HEAD + result.encode("utf-8") + _RESULT_TAIL
    return json.dumps({"result": result, "error": error}).encode("utf-8")


def resultText(line: bytes) -> bytes | None:
    """
    The JSON text of the result of the server's answer C{line} (without
    its end) to a request that succeeded, as L{answerLine} writes it, taken
    as it is, without decoding it: the same text as C{json.dumps} of the
    result; C{None} when the line is no such answer (an error, or another
    form), which L{answerOf} then reads.
    """
    if line.startswith(_RESULT_HEAD) and line.endswith(_RESULT_TAIL):
        return line[len(_RESULT_HEAD) : -len(_RESULT_TAIL)]
    return None


#: The ASCII bytes but the printable ones that JSON text may hold: the
#: parser refuses the other control characters, in strings and out.
_UNPRINTABLE = (b"\x7f", b"\t", b"\r")


def resultOf(line: bytes) -> tuple[Any, str | None]:
    """
    The result of the server's answer C{line} (without its end), as
    L{answerOf} gives it, and its JSON text as the line holds it (see
    L{resultText}), to print as it is: C{None} unless that text is
    printable ASCII and is, read on its own, one JSON value, the result
    given.  Such a line is that one answer, whatever its text; any other
    line is read whole (L{answerOf}).

    @raise OperationError: as L{answerOf}.
    """
    text = resultText(line)
    if (
        text is not None
        and text.isascii()
        and not any(unprintable in text for unprintable in _UNPRINTABLE)
    ):
        try:
            return json.loads(text), text.decode("ascii")
        except (ValueError, RecursionError):
            pass
    return answerOf(line), None


def answerOf(line: bytes) -> Any:
    """
    The result of the server's answer C{line} (without its end), a JSON
    object C{{"result": ..., "error": ...}}.

    @raise OperationError: with the server's error text; or when the line
        is no such answer (not JSON, nested deeper than the parser goes,
        not an object with both).
    """
    try:
        answer = json.loads(line)
    except (ValueError, RecursionError):
        raise OperationError("the server's answer is not JSON") from None
    if not isinstance(answer, dict) or not {"result", "error"} <= answer.keys():
        raise OperationError("the server's answer has no result or error")
    if answer["error"]:
        raise OperationError(str(answer["error"]))
    return answer["result"]


def socketAddress(stateDirectory: str, folder: int) -> str:
    """
    The address at which to bind, or reach, the control socket of
    C{stateDirectory}, open as C{folder}.

    On Linux it is the socket's name in the folder's link of
    L{DESCRIPTORS}: short whatever the state directory's path, and it
    names the very folder that was opened and checked, whatever happened
    to its path since.  Elsewhere it is the socket's path, if it fits in a
    UNIX socket address.

    @raise OSError: when it is neither: the path is too long and
        L{DESCRIPTORS} is missing.
    """
    link = os.path.join(DESCRIPTORS, str(folder))
    opened = os.fstat(folder)
    try:
        linked = os.stat(link)
    except OSError:
        pass
    else:
        if (linked.st_dev, linked.st_ino) == (opened.st_dev, opened.st_ino):
            return os.path.join(link, SOCKET_NAME)
    path = os.path.join(os.path.abspath(stateDirectory), SOCKET_NAME)
    if len(path.encode("utf-8")) > _MAX_SOCKET_PATH:
        raise OSError(
            errno.ENAMETOOLONG,
            f"too long for a UNIX socket, and {DESCRIPTORS}, through which a "
            "long path is reached, is missing",
            path,
        )
    return path
