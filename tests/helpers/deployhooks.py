"""
Deploy hooks on the records of one node, for the tests of the runs a node
records as due.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from twisted.logger import Logger

from letsencrypt_resource.deploy import DeployHooks
from letsencrypt_resource.deployflags import DeployFlags
from letsencrypt_resource.managed import ManagedCertificate
from tests.helpers.fakeprocess import ProcessReactor
from tests.helpers.resourcecase import resourceOptions


def startedHooks(
    flags: DeployFlags, certificates: Sequence[ManagedCertificate]
) -> tuple[DeployHooks, list[ManagedCertificate]]:
    """
    Started deploy hooks of C{certificates} with a command, on the records
    of C{flags}, on a fake process reactor; and the list of the sets whose
    run they ask for again (L{DeployHooks.again}).
    """
    hooks = DeployHooks(
        resourceOptions(deployCommand=(sys.executable, "reload")),
        ProcessReactor(),
        Logger(),
        {frozenset(c.domains): c for c in certificates},
        flags.save,
        recorded=flags,
    )
    asked: list[ManagedCertificate] = []
    hooks.again = asked.append
    hooks.startService()
    return hooks, asked
