"""
A test case base for tests that run a real pebble test CA.
"""

from __future__ import annotations

import os
from typing import Any

from twisted.internet import reactor
from twisted.trial.unittest import SkipTest, TestCase

from letsencrypt_resource.pebble import (
    RunningTestCA,
    TestCANotFound,
    findTestCA,
    freeTCPPort,
    startTestCA,
)
from letsencrypt_resource.testing.pebble import findModernTestCA


class TestCACase(TestCase):
    """
    Runs tests against a local pebble; skips them when pebble is not
    installed, except under CI (C{CI=true}), where that is a failure.
    """

    def setUp(self) -> None:
        self._require(modern=False)

    def requireModern(self) -> None:
        """
        Skip the test unless pebble 2.10 or later is at hand (except under
        CI, where its absence is a failure).
        """
        self._require(modern=True)

    def _require(self, modern: bool) -> None:
        try:
            findModernTestCA() if modern else findTestCA()
        except TestCANotFound as e:
            if os.environ.get("CI") == "true":
                raise
            raise SkipTest(str(e)) from None

    async def startTestCA(
        self, httpPort: int | None = None, *, modern: bool = False, **kwargs: Any
    ) -> RunningTestCA:
        """
        Start a test CA in a new directory, stopped when the test ends.

        @param httpPort: Where it validates HTTP-01; a free port by default.
        @param modern: Run pebble 2.10 or later (see L{findModernTestCA}).
        """
        if modern:
            kwargs["executables"] = findModernTestCA()
        ca = await startTestCA(reactor, self.mktemp(), httpPort or freeTCPPort(), **kwargs)
        self.addCleanup(ca.stop)
        return ca
