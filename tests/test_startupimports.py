"""
What C{twistd lets-encrypt} imports before its reactor runs: only what a
server needs, so that start-up does not pay for the rest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.acmeloading import ACME_MODULES
from letsencrypt_resource.pebble import freeTCPPort
from tests.helpers.configuration import OFFLINE_SERVER
from tests.helpers.processcase import environment

#: Prints the modules loaded once the twistd plugin's module is.
LOADED = "import json, sys; import letsencrypt_resource.tap; print(json.dumps(sorted(sys.modules)))"

#: Prints the modules loaded once the server of the configuration file
#: named first is made and started as twistd does, before its reactor runs.
STARTED = """\
import json, os, sys
from letsencrypt_resource import tap
options = tap.Options()
options.parseOptions(["--config", sys.argv[1]])
server = tap.makeService(options)
server.privilegedStartService()
server.startService()
print(json.dumps(sorted(sys.modules)), flush=True)
os._exit(0)
"""


def loaded(*arguments: str, cwd: str | None = None) -> set[str]:
    """
    The modules a fresh interpreter holds once it ran C{arguments}, which
    print them.
    """
    output = subprocess.run(
        [sys.executable, *arguments],
        check=True,
        capture_output=True,
        env=environment(),
        cwd=cwd,
    ).stdout
    return set(json.loads(output.splitlines()[-1]))


def loadedByTap() -> set[str]:
    """
    The modules a fresh interpreter holds once it imported
    L{letsencrypt_resource.tap}.
    """
    return loaded("-c", LOADED)


def speakACME(modules: set[str]) -> list[str]:
    """
    The modules among C{modules} that speak ACME, or that they need.
    """
    return sorted(
        name
        for name in modules
        if name.split(".")[0] in ("acme", "josepy", "requests") or name in ACME_MODULES
    )


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
        self.assertEqual(speakACME(loaded), [])

    def test_noACMEWhenStarted(self) -> None:
        """
        Neither does making and starting the server, before its reactor
        runs, for a resource that validates by TLS-ALPN-01 on an https
        service (what the function-level imports of start-up reach).
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                OFFLINE_SERVER.format(port=freeTCPPort(), extra="challenge_types = tls-alpn-01\n")
            )
        started = loaded("-c", STARTED, path, cwd=directory)
        self.assertIn("letsencrypt_resource.https", started)
        self.assertIn("letsencrypt_resource.alpn", started)
        self.assertEqual(speakACME(started), [])
