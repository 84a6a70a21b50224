"""
The deploy command as the configuration file has it: an argument list,
run without a shell.

Parsing reads nothing but the text; whether the program exists is checked
by L{findProgram} when the server loads its configuration (see
L{letsencrypt_resource.host.checkDeployCommand}) and again at each run.
"""

from __future__ import annotations

import os
import shlex
import shutil


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
