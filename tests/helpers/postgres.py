"""
A real PostgreSQL for the tests (L{letsencrypt_resource.testing.postgres}),
started once per test run, and the test case that gives each test a schema
of its own in it.
"""

from __future__ import annotations

import os
from typing import Any

import psycopg
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SkipTest, TestCase

from letsencrypt_resource.testing.postgres import (
    DATABASE,
    NOBODY,
    PostgresNotFound,
    PostgresServer,
    findServerPrograms,
    server,
)

__all__ = [
    "DATABASE",
    "NOBODY",
    "PostgresCase",
    "PostgresNotFound",
    "PostgresServer",
    "findServerPrograms",
    "server",
]


class PostgresCase(TestCase):
    """
    Runs tests against a real PostgreSQL, each in a schema of its own;
    skips them when PostgreSQL is not installed, except under CI
    (C{CI=true}), where that is a failure.

    @ivar schema: The test's schema.
    @ivar conninfo: The connection string that uses it.
    """

    def setUp(self) -> None:
        try:
            self.server = server()
        except PostgresNotFound as e:
            if os.environ.get("CI") == "true":
                raise
            raise SkipTest(str(e)) from None
        self.schema = self.server.newSchema()
        self.conninfo = self.server.conninfo(self.schema)
        super().setUp()

    def admin(self) -> psycopg.Connection[Any]:
        """
        A connection to the test's schema, closed at the end of the test.
        """
        connection = psycopg.connect(self.conninfo, autocommit=True)
        self.addCleanup(connection.close)
        return connection

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        """
        Wait, in steps of 10 ms, until C{predicate()} is true.

        @raise AssertionError: when it is not within C{timeout} seconds.
        """
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"not true after {timeout} seconds: {predicate}")
