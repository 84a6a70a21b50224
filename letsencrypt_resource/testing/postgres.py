"""
A real PostgreSQL for tests and benchmarks: Debian's server, started in a
temporary folder, reached only through a Unix socket in that folder.  Each
user of it gets a schema of its own in the one database (a database is
slower to create), which the store uses as the connection's
C{search_path} says.

C{initdb} refuses to run as root, as CI runs: the server then runs as
C{nobody}, who owns the folder (0700, so no other user reaches the socket,
which trusts whoever connects).
"""

from __future__ import annotations

import atexit
import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from functools import cache
from typing import Any

import attrs
import psycopg

#: The user the server runs as when the tests run as root.
NOBODY = 65534
#: The database of the tests.
DATABASE = "tests"
#: Settings for speed: the data are thrown away at the end.
_FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresNotFound(Exception):
    """
    PostgreSQL's server programs are not installed.
    """


def findServerPrograms() -> str:
    """
    The folder of C{initdb} and C{pg_ctl}: on C{PATH}, else where
    C{pg_config} says, else Debian's newest C{/usr/lib/postgresql/*/bin}.

    @raise PostgresNotFound: when there is none.
    """
    candidates = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(os.path.dirname(os.path.realpath(initdb)))
    if shutil.which("pg_config"):
        result = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if all(os.access(os.path.join(folder, p), os.X_OK) for p in ("initdb", "pg_ctl")):
            return folder
    raise PostgresNotFound(
        "PostgreSQL's server is not installed (initdb, pg_ctl); ./dev installs Debian's"
    )


@attrs.define
class PostgresServer:
    """
    A running server.

    @ivar folder: Its data folder's parent, which holds its socket.
    """

    bin: str
    folder: str
    _numbers: Any = attrs.field(factory=itertools.count)

    def _asServer(self) -> dict[str, Any]:
        if os.geteuid() != 0:
            return {}
        return {"user": NOBODY, "group": NOBODY, "extra_groups": []}

    def _run(self, *argv: str) -> None:
        subprocess.run(
            [os.path.join(self.bin, argv[0]), *argv[1:]],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **self._asServer(),
        )

    def start(self) -> None:
        if os.geteuid() == 0:
            os.chown(self.folder, NOBODY, NOBODY)
        data = os.path.join(self.folder, "data")
        self._run("initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.resume()
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    def halt(self) -> None:
        """
        Stop the server, its data kept, as an outage would (C{pg_ctl stop
        -m fast}: the sessions are ended); L{resume} starts it again.
        """
        self._run("pg_ctl", "-D", os.path.join(self.folder, "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """
        Start the server on its data folder.
        """
        data = os.path.join(self.folder, "data")
        options = f"-k {self.folder} -c listen_addresses='' {_FAST}"
        log = os.path.join(self.folder, "log")
        self._run("pg_ctl", "-D", data, "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        data = os.path.join(self.folder, "data")
        try:
            self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _conninfo(self, database: str, **extra: str) -> str:
        options = {"host": self.folder, "user": "postgres", "dbname": database, **extra}
        return psycopg.conninfo.make_conninfo(**options)

    def conninfo(self, schema: str, **extra: str) -> str:
        """
        The connection string of the tests' database with C{schema} first
        on the search path, as the superuser unless C{extra} gives another
        C{user}.
        """
        return self._conninfo(DATABASE, options=f"-c search_path={schema}", **extra)

    def newSchema(self) -> str:
        """
        Create a schema, empty, and give its name.
        """
        name = f"test_{next(self._numbers)}"
        with psycopg.connect(self._conninfo(DATABASE), autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {name}")
        return name


@cache
def server() -> PostgresServer:
    """
    The process's server, started at the first call and stopped at exit.

    @raise PostgresNotFound: when PostgreSQL is not installed.
    """
    running = PostgresServer(findServerPrograms(), tempfile.mkdtemp(prefix="le-pg-"))
    try:
        running.start()
    except BaseException:
        shutil.rmtree(running.folder, ignore_errors=True)
        raise
    atexit.register(running.stop)
    return running
