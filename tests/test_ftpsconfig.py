"""
Tests for the C{type = ftps} service sections: L{letsencrypt_resource.ftpsoptions}.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.ftpsoptions import FTPSOptions

RESOURCE = """
[resources/le]
type = lets-encrypt
address = 127.0.0.1
"""


def configure(service: str, base: str = "/etc/server") -> str:
    """
    A configuration with a resource and the FTPS service section
    C{service} (its options without the section header and type).
    """
    return RESOURCE + "[services/ftp]\ntype = ftps\naddress = 127.0.0.1\n" + service


def ftpsOf(service: str) -> tuple[int, FTPSOptions | None]:
    """
    The port and FTPS options of the service section C{service}.
    """
    [options] = parseConfiguration(configure(service), "/etc/server").services
    return options.port, options.ftps


class FTPSSectionTests(SynchronousTestCase):
    """
    How an C{ftps} section is read.
    """

    BASE = "ssl_domains = ftp.example.com\npath = /srv/ftp\n"

    def refusal(self, service: str) -> ConfigurationError:
        return self.assertRaises(
            ConfigurationError, parseConfiguration, configure(service), "/etc/server"
        )

    def test_defaults(self) -> None:
        """
        An anonymous-only section: explicit FTPS on port 21, read-only, any
        passive port, session reuse required.
        """
        self.assertEqual(
            ftpsOf(self.BASE + "anonymous = yes\n"),
            (
                21,
                FTPSOptions(
                    implicit=False,
                    usersFile=None,
                    anonymous=True,
                    writable=False,
                    passivePorts=None,
                    passiveAddress=None,
                    requireSessionReuse=True,
                ),
            ),
        )

    def test_implicitPort(self) -> None:
        """
        Implicit FTPS listens on 990 by default; a port set is kept.
        """
        self.assertEqual(ftpsOf(self.BASE + "anonymous = yes\nimplicit = yes\n")[0], 990)
        self.assertEqual(
            ftpsOf(self.BASE + "anonymous = yes\nimplicit = yes\nport = 2990\n")[0], 2990
        )

    def test_everyOption(self) -> None:
        """
        Every FTPS option is read, the accounts file resolved against the
        configuration's folder.
        """
        _, ftps = ftpsOf(
            self.BASE + "users_file = ftp-users\nwritable = yes\npassive_ports = 50000-50009\n"
            "passive_address = 203.0.113.7\nrequire_session_reuse = no\nmax_sessions = 500\n"
        )
        self.assertEqual(
            ftps,
            FTPSOptions(
                usersFile=os.path.join("/etc/server", "ftp-users"),
                writable=True,
                passivePorts=range(50000, 50010),
                passiveAddress="203.0.113.7",
                requireSessionReuse=False,
                maxSessions=500,
            ),
        )

    def test_badValues(self) -> None:
        """
        Port ranges out of order or below 1024, an IPv6 or a host name as
        the PASV address, and session counts out of 1 to 10000 are refused
        naming the option.
        """
        for option, value in [
            ("passive_ports", "50010-50000"),
            ("passive_ports", "80-90"),
            ("passive_ports", "high"),
            ("passive_address", "2001:db8::1"),
            ("passive_address", "ftp.example.com"),
            ("max_sessions", "0"),
            ("max_sessions", "10001"),
            ("max_sessions", "many"),
        ]:
            error = self.refusal(self.BASE + f"anonymous = yes\n{option} = {value}\n")
            self.assertEqual((error.section, error.option), ("services/ftp", option), value)

    def test_noOneCouldLogIn(self) -> None:
        """
        A section without accounts and without anonymous is refused.
        """
        error = self.refusal(self.BASE)
        self.assertEqual(error.option, "users_file")
        self.assertIn("no one could log in", str(error))

    def test_usersFileServed(self) -> None:
        """
        An accounts file inside the served folder is refused: its hashes
        would be published.
        """
        error = self.refusal(self.BASE + "users_file = /srv/ftp/sub/users\n")
        self.assertEqual(error.option, "users_file")
        self.assertIn("publish its password hashes", str(error))

    def test_httpsTakesNoFTPSOption(self) -> None:
        """
        An C{https} section refuses the FTPS options as unknown.
        """
        text = RESOURCE + (
            "[services/web]\ntype = https\naddress = 127.0.0.1\n" + self.BASE + "implicit = yes\n"
        )
        error = self.assertRaises(ConfigurationError, parseConfiguration, text, "/etc/server")
        self.assertEqual((error.option, str(error).split(": ")[-1]), ("implicit", "unknown option"))
