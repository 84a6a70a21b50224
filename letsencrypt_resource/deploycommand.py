"""
The deploy command's options, as the configuration file has them: the
command as an argument list (no shell) and its time limit.

Parsing reads nothing but the text; whether the program exists is checked
by L{findProgram} when the server loads its configuration (see
L{letsencrypt_resource.host.checkDeployCommand}) and again at each run.
"""

from __future__ import annotations

import os
import shlex
import shutil

#: The shortest and longest time limit of a deploy command, in seconds.
MIN_TIMEOUT = 1.0
MAX_TIMEOUT = 3600.0
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parseCommand(value: str) -> tuple[str, ...]:
    """
    The argument list of the C{deploy_command} text C{value}, split as a
    POSIX shell splits words (quotes and backslashes), but never run by a
    shell: no variables, globs, pipes or redirections.

    @raise ValueError: when it is empty, its quotes are unbalanced, or its
        program is a relative path (a program is an absolute path or a name
        looked up on C{PATH}).
    """
    try:
        arguments = tuple(shlex.split(value, comments=False, posix=True))
    except ValueError as error:
        raise ValueError(f"cannot be split into arguments: {error} (check its quotes)") from None
    if not arguments or not arguments[0]:
        raise ValueError("names no program to run")
    if any("\0" in argument for argument in arguments):
        raise ValueError("an argument cannot hold a NUL character")
    program = arguments[0]
    if "/" in program and not os.path.isabs(program):
        raise ValueError(
            f"the program {program!r} is a relative path; give an absolute path, "
            "or a name found on PATH"
        )
    return arguments


def parseTimeout(value: str) -> float:
    """
    The C{deploy_timeout} text C{value} in seconds: a whole number of
    seconds, or a whole number followed by s, m or h, from L{MIN_TIMEOUT}
    to L{MAX_TIMEOUT}.

    @raise ValueError: when it is not one.
    """
    text = value.strip().lower()
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isascii() or not number.isdigit():
        raise ValueError(
            f"{value!r} is not a duration: use seconds, or a whole number followed by s, m or h"
        )
    seconds = float(int(number) * _UNITS[unit])
    if not MIN_TIMEOUT <= seconds <= MAX_TIMEOUT:
        raise ValueError(f"{value!r} is outside the range 1 second to 1 hour")
    return seconds


def findProgram(program: str, searchPath: str | None) -> str | None:
    """
    The absolute path of the executable C{program}: C{program} itself when
    it is an absolute path, else the first match on C{searchPath} (a
    C{PATH} value); C{None} when there is none.
    """
    if os.path.isabs(program):
        found = program if os.path.isfile(program) and os.access(program, os.X_OK) else None
    else:
        found = shutil.which(program, path=searchPath or os.defpath)
    return os.path.abspath(found) if found is not None else None
