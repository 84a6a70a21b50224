"""
The read-ahead process of a state directory (see
L{letsencrypt_resource.storage.readahead}): it reads the files of the keys
it is given on its standard input, separated by zero bytes, under the rules of
L{letsencrypt_resource.storage.fileread}, and writes what each read gave
on its standard output, one frame per key.

It is started with the state directory's descriptor as its descriptor
L{ROOT} and reaches every file from it: it never opens the state
directory's path, given to it only to name files in errors.  It imports
the standard library and this package's modules that use only it, nothing
else: the parent starts it isolated (C{-I -S}), with only the folder it
imported this package from added to its path (see L{command}).

Its first frame, written at once, is L{HELLO_FRAME}: the parent gives
the process up when it does not come soon (a C{sys.executable} that is not
this Python, or hangs).  A frame is a header (L{HEADER}: the kind, the key's index in the list
given, the length of what follows) and its payload: the file's content
(L{DATA}); nothing (L{MISSING}, L{TOO_LARGE}); the error's number, then
the path it names and its message, separated by a zero byte (L{ERROR}); or
the path and why it cannot be used, the same way (L{UNUSABLE}).
"""

from __future__ import annotations

import functools
import os
import struct
import sys
from collections.abc import Sequence

from ..safefs import UnusablePath, openBelow
from .fileread import Result, TooLarge, readEach

#: The child's descriptor of the state directory.
ROOT = 3
#: A frame's header: its kind, the key's index, the payload's length.
HEADER = struct.Struct(">BII")
#: The frames' kinds.
DATA, MISSING, TOO_LARGE, ERROR, UNUSABLE, HELLO = range(6)
#: The first frame the process writes, before it reads its keys.
HELLO_FRAME = HEADER.pack(HELLO, 0, 0)
#: An L{ERROR} frame's error number, before the path and the message.
ERRNO = struct.Struct(">i")
#: How many keys are read (their folders opened) at a time, and their
#: frames written out together.
CHUNK = 128

_MAIN = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from letsencrypt_resource.storage.readerchild import main; main(sys.argv[2:])"
)


def command(base: str, limit: int) -> list[str]:
    """
    The command line of the read-ahead process of the state directory
    C{base}, reading files of up to C{limit} bytes: this Python, isolated
    from the environment, the current folder and the site's packages, with
    the folder of this package added last to its path.
    """
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, "-I", "-S", "-c", _MAIN, package, base, str(limit)]


def _text(path: object, message: object) -> bytes:
    return f"{path}\0{message}".encode("utf-8", "surrogateescape")


def frame(index: int, value: Result) -> bytes:
    """
    The frame that tells the read of key number C{index} gave C{value}.
    """
    if isinstance(value, bytes):
        kind, payload = DATA, value
    elif value is None:
        kind, payload = MISSING, b""
    elif isinstance(value, TooLarge):
        kind, payload = TOO_LARGE, b""
    elif isinstance(value, UnusablePath):
        kind, payload = UNUSABLE, _text(value.filename, value.strerror)
    else:
        number = ERRNO.pack(value.errno or 0)
        kind, payload = ERROR, number + _text(value.filename, value.strerror)
    return HEADER.pack(kind, index, len(payload)) + payload


def main(argv: Sequence[str]) -> None:
    """
    Read the keys on the standard input, and write their frames.

    @param argv: The state directory's path, and the most bytes a file is
        read of.
    """
    os.write(1, HELLO_FRAME)
    base, limit = argv[0], int(argv[1])
    text = sys.stdin.buffer.read().decode("utf-8", "surrogateescape")
    keys = text.split("\0") if text else []
    index = {key: number for number, key in enumerate(keys)}
    opener = functools.partial(openBelow, ROOT, base)
    out = open(1, "wb", buffering=1 << 18, closefd=False)  # noqa: SIM115
    try:
        for start in range(0, len(keys), CHUNK):
            for key, value in readEach(opener, base, keys[start : start + CHUNK], limit):
                out.write(frame(index[key], value))
            out.flush()
    except BrokenPipeError:
        # The parent stopped reading: it needs no more.
        os._exit(0)
