"""
What C{twistd lets-encrypt} imports before its reactor runs: only what a
server needs, so that start-up does not pay for the rest.
"""

from __future__ import annotations

import json
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.acmeloading import ACME_MODULES
from tests.helpers.processcase import environment

#: Prints the modules loaded once the twistd plugin's module is.
LOADED = "import json, sys; import letsencrypt_resource.tap; print(json.dumps(sorted(sys.modules)))"


def loadedByTap() -> set[str]:
    """
    The modules a fresh interpreter holds once it imported
    L{letsencrypt_resource.tap}.
    """
    output = subprocess.run(
        [sys.executable, "-c", LOADED],
        check=True,
        capture_output=True,
        env=environment(),
    ).stdout
    return set(json.loads(output))


class TapImportsTests(SynchronousTestCase):
    """
    The modules C{letsencrypt_resource.tap} loads.
    """

    def test_noFTPSUnlessServed(self) -> None:
        """
        The FTPS modules (and C{twisted.protocols.ftp}, C{twisted.cred}'s
        checkers under them) wait until the configuration has an FTPS
        service; the test framework is never loaded.
        """
        loaded = loadedByTap()
        self.assertIn("letsencrypt_resource.host", loaded)
        self.assertEqual(
            sorted(
                name
                for name in loaded
                if name.startswith(("letsencrypt_resource.ftps", "twisted.trial"))
                or name == "twisted.protocols.ftp"
            ),
            [],
        )

    def test_noACMEUntilAnAccountConnects(self) -> None:
        """
        The modules that speak ACME, and C{acme}, C{josepy} and C{requests}
        under them (about 0.3 s of CPU), wait until an account connects:
        L{letsencrypt_resource.acmeloading} loads them then, off the reactor
        thread.
        """
        loaded = loadedByTap()
        self.assertIn("letsencrypt_resource.acmeloading", loaded)
        self.assertEqual(
            sorted(
                name
                for name in loaded
                if name.split(".")[0] in ("acme", "josepy", "requests") or name in ACME_MODULES
            ),
            [],
        )
