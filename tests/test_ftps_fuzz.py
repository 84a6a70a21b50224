"""
Every command of the FTPS service fuzzed with hypothesis, on a real
session: each line gets one well-formed reply, the session survives, and
nothing changes outside the account's folder.
"""

from __future__ import annotations

import hashlib
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers.ftpscase import USER, FTPSServiceCase

#: The commands fuzzed: all the server answers but those that wait for a
#: data connection (PASV, EPSV), end or restart the session (QUIT, AUTH).
VERBS = [
    "USER", "PASS", "CWD", "CDUP", "PWD", "LIST", "NLST", "RETR", "STOR",
    "SIZE", "MDTM", "TYPE", "SYST", "STRU", "MODE", "MKD", "RMD", "DELE",
    "RNFR", "RNTO", "NOOP", "FEAT", "OPTS", "PBSZ", "PROT", "PORT", "EPRT",
    "CCC", "REST", "APPE", "SITE", "XYZZY", "",
]  # fmt: skip
#: Path pieces that try to leave the folder or reach what is hidden.
PIECES = ["..", ".", "/", "//", "own.txt", "secret-link", "outside-link", ".hidden",
          "inside-link", "new", "%2e%2e", "\\", "*", "~"]  # fmt: skip
_REPLY = re.compile(r"^[1-5][0-9][0-9][ -]")

ARGUMENTS = st.one_of(
    st.just(""),
    st.lists(st.sampled_from(PIECES), max_size=6).map("/".join),
    st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40),
)
COMMANDS = st.lists(
    st.tuples(st.sampled_from(VERBS), ARGUMENTS, st.booleans()).map(
        lambda c: f"{c[0].lower() if c[2] else c[0]} {c[1]}".strip()
    ),
    min_size=1,
    max_size=12,
)


def fingerprint(folder: str) -> dict[str, str]:
    """
    Every entry below C{folder}, links not followed, with a digest of
    each file.
    """
    found = {}
    for parent, folders, files in os.walk(folder):
        for name in folders + files:
            path = os.path.join(parent, name)
            if os.path.islink(path):
                found[path] = "link " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as file:
                    found[path] = hashlib.sha256(file.read()).hexdigest()
            else:
                found[path] = "folder"
    return found


class CommandFuzzTests(FTPSServiceCase):
    """
    Random command lines on a logged-in, writable session.
    """

    async def test_commands(self) -> None:
        """
        Each command line gets one reply with a valid code, the session
        still answers NOOP after them, and nothing outside the account's
        folder changes (the served folder's other files, the folder
        outside with its secret).
        """
        self.startService(anonymous=True)
        base = os.path.dirname(self.served)
        own = os.path.join(self.served, USER)
        before = {p: f for p, f in fingerprint(base).items() if not p.startswith(own + os.sep)}
        client = await self.inThread(self.loggedIn)

        @settings(
            max_examples=150,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(COMMANDS)
        def session(commands: list[str]) -> None:
            for command in commands:
                client.putline(command)
                reply = client.getmultiline()
                self.assertRegex(reply, _REPLY, command)
                if reply.startswith("350"):
                    # RNFR waits for RNTO; keep the session in step.
                    client.putline("RNTO renamed")
                    self.assertRegex(client.getmultiline(), _REPLY, command)
            self.assertTrue(client.voidcmd("NOOP").startswith("200"))

        await self.inThread(session)
        after = {p: f for p, f in fingerprint(base).items() if not p.startswith(own + os.sep)}
        self.assertEqual(after, before)
