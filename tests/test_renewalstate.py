"""
L{letsencrypt_resource.renewalstate}: what a renewal state keeps of a
failure's text.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.renewalstate import MAX_ERROR, restoreState, savedError


class LastErrorTests(SynchronousTestCase):
    """
    C{last_error} is bounded where the state is made: a CA's problem detail
    of any size cannot make a state that the next start refuses.
    """

    def test_shortKept(self) -> None:
        """
        A text of up to L{MAX_ERROR} characters, or none, is kept whole.
        """
        self.assertIsNone(savedError(None))
        self.assertEqual(savedError("x" * MAX_ERROR), "x" * MAX_ERROR)

    def test_longCut(self) -> None:
        """
        A longer text keeps its first L{MAX_ERROR} characters, marked as
        cut with its full length.
        """
        self.assertEqual(
            savedError("é" * (MAX_ERROR + 1)),
            "é" * MAX_ERROR + f" [cut: {MAX_ERROR + 1} characters in all]",
        )

    def test_stateBounded(self) -> None:
        """
        A set whose last failure said 2 MiB saves a state of a few KiB,
        which restores with the cut text.
        """
        managed = ManagedCertificate(("example.com",), "settings")
        managed.failures = 1
        managed.lastError = "urn:ietf:params:acme:error:serverInternal: " + "y" * (2 << 20)
        state = json.dumps(managed.state()).encode()
        self.assertLess(len(state), 3 * MAX_ERROR)
        restored = ManagedCertificate(("example.com",), "settings")
        restoreState(restored, json.loads(state))
        self.assertEqual(restored.lastError, savedError(managed.lastError))
        self.assertEqual(restored.failures, 1)
