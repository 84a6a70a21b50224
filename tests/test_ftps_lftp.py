"""
Tests for L{letsencrypt_resource.ftps} with Debian's lftp as the client,
the certificate and its host name checked.

lftp has no option to resolve a name to an address of one's choosing (like
curl's C{--resolve}), so it runs in a mount namespace of its own where
C{/etc/hosts} is a file that maps the certificate's name to loopback;
nothing changes for the rest of the system.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.trial.unittest import SkipTest

from tests.helpers.ftpscase import CONTENT, NAME, PASSWORD, USER, FTPSServiceCase


class _Lftp:
    """
    lftp against explicit or implicit FTPS.
    """

    def lftp(
        self: FTPSServiceCase, commands: str, name: str = NAME
    ) -> subprocess.CompletedProcess[str]:  # type: ignore[misc]
        """
        Run lftp with C{commands} on the service, reached as C{name}, with
        the certificate checked against the test CA and C{name}, and
        everything over TLS.
        """
        if shutil.which("lftp") is None or shutil.which("unshare") is None:
            raise SkipTest("lftp or unshare is not installed")
        base = os.path.dirname(self.usersFile)
        hosts = os.path.join(base, "hosts")
        with open(hosts, "w") as file:
            file.write(f"127.0.0.1 {NAME} other.example.com\n")
        scheme = "ftps" if self.implicit else "ftp"
        script = (
            "set ssl:verify-certificate yes; "
            f"set ssl:ca-file {self.caFile}; "
            "set ssl:check-hostname yes; "
            "set ftp:ssl-force yes; "
            "set ftp:ssl-protect-data yes; "
            "set ftp:ssl-protect-list yes; "
            "set ftp:passive-mode yes; "
            "set net:max-retries 1; "
            "set net:timeout 10; "
            f"open -u {USER},{PASSWORD} {scheme}://{name}:{self.port}; "
            f"{commands}"
        )
        return subprocess.run(
            [
                "unshare",
                "--mount",
                "sh",
                "-c",
                'mount --bind "$0" /etc/hosts && exec lftp -c "$1"',
                hosts,
                script,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=base,
        )

    async def test_listDownloadUpload(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        lftp lists, downloads and uploads with the certificate and its
        name checked and the data connections protected.
        """
        self.startService()
        base = os.path.dirname(self.usersFile)
        with open(os.path.join(base, "local.bin"), "wb") as file:
            file.write(CONTENT * 10)
        result = await self.inThread(
            self.lftp,  # type: ignore[attr-defined]
            "cls -1; get own.txt -o downloaded.txt; put local.bin -o uploaded.bin",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("own.txt", result.stdout.split())
        with open(os.path.join(base, "downloaded.txt"), "rb") as file:
            self.assertEqual(file.read(), CONTENT)
        with open(os.path.join(self.served, USER, "uploaded.bin"), "rb") as file:
            self.assertEqual(file.read(), CONTENT * 10)

    async def test_resume(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        lftp finishes a partial download (C{get -c}: REST, RETR) and a
        partial upload (C{put -c}: SIZE, REST, STOR), transferring only
        what is missing: the partial files' first bytes, which differ from
        the whole files', are kept.
        """
        self.startService()
        base = os.path.dirname(self.usersFile)
        whole = CONTENT * 10
        with open(os.path.join(base, "partial.txt"), "wb") as file:
            file.write(b"d" * 100)
        with open(os.path.join(base, "local.bin"), "wb") as file:
            file.write(whole)
        stored = os.path.join(self.served, USER, "resumed.bin")
        with open(stored, "wb") as file:
            file.write(b"u" * 1000)
        result = await self.inThread(
            self.lftp,  # type: ignore[attr-defined]
            "get -c own.txt -o partial.txt; put -c local.bin -o resumed.bin",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(os.path.join(base, "partial.txt"), "rb") as file:
            self.assertEqual(file.read(), b"d" * 100 + CONTENT[100:])
        with open(stored, "rb") as file:
            self.assertEqual(file.read(), b"u" * 1000 + whole[1000:])

    async def test_otherName(self: FTPSServiceCase) -> None:  # type: ignore[misc]
        """
        lftp refuses the service under a name its certificate does not
        carry.
        """
        self.startService()
        result = await self.inThread(
            self.lftp,  # type: ignore[attr-defined]
            "cls -1",
            "other.example.com",
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("Certificate verification", result.stderr)
        self.assertNotIn("own.txt", result.stdout.split())


class ExplicitLftpTests(_Lftp, FTPSServiceCase):
    """
    lftp with explicit FTPS (AUTH TLS).
    """


class ImplicitLftpTests(_Lftp, FTPSServiceCase):
    """
    lftp with implicit FTPS.
    """

    implicit = True
