"""
A smoke run of the FTPS benchmark, C{bench/ftps.py}, at a tiny size: a
slow test (about 20 s, with pebble, twistd and vsftpd), run only when
C{LETSENCRYPT_SLOW_TESTS=1}, so that the benchmark keeps working as the
FTPS service changes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.helpers.processcase import ROOT
from tests.helpers.slow import skipUnlessSlow

#: A rate cell: a median then its range, in MiB/s.
RATE = r"[0-9.]+ \([0-9.]+–[0-9.]+\)"


class FTPSBenchSmokeTests(SynchronousTestCase):
    """
    C{bench/ftps.py} with a 4 MiB file, once, and 10 sessions through one
    renewal.
    """

    skip = skipUnlessSlow()

    def test_tinyRun(self) -> None:
        """
        The command exits 0 and prints both tables: a rate for each
        direction and TLS variant (vsftpd's too where it can run), and the
        sessions' table with no failed transfer and a renewal done.
        """
        if shutil.which("curl") is None or shutil.which("pebble") is None:
            raise SkipTest("curl and pebble are needed")
        result = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "bench", "ftps.py"),
                *("--size-mib", "4", "--repeats", "1", "--sessions", "10"),
                *("--renewals", "1", "--settle", "1", "--pace", "0.2"),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
        )
        self.assertEqual(result.returncode, 0, result.stderr[-3000:])
        out = result.stdout
        vsftpd = os.geteuid() == 0 and os.access("/usr/sbin/vsftpd", os.X_OK)
        for direction in ("download", "upload"):
            for tls in ("TLS 1.3 AES-256-GCM", "TLS 1.2 ECDHE-ECDSA-AES256-GCM"):
                # vsftpd 3.0.3 fails some uploads under TLS 1.3 (426).
                other = rf"(?:{RATE}|n/a \(every one failed\))" if vsftpd else "not run"
                self.assertRegex(out, rf"\| {direction} \| {re.escape(tls)} \| {RATE} \| {other}")
        self.assertIn("| **failed transfers** (target 0) | 0 |", out)
        self.assertRegex(out, r"\| renewals \(forced, during the load\) \| renewed in ")
        self.assertRegex(out, r"\| \*\*longest reactor stall\*\* \(target < 50 ms\) \| [0-9.]+ ms")
