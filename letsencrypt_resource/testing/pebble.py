"""
What tests need of a local pebble beyond what L{letsencrypt_resource.pebble}
runs for the C{testca} command: pebble 2.10 or later (renewal information
and profiles), and its management interface's certificate status and
renewal windows.
"""

from __future__ import annotations

import datetime
import json
import os

from acme import messages
from twisted.internet.defer import Deferred

from ..pebble import RunningTestCA, TestCANotFound, findTestCA

#: The C{[resources/le]} section of a resource ordering from a running test
#: CA, its state in C{state}: format it with C{challengePort},
#: C{directoryURL}, C{caFile} and C{keyType}; option lines written right
#: after it belong to it.
RESOURCE_SECTION = """\
[resources/le]
type = lets-encrypt
address = 127.0.0.1
port = {challengePort}
acme_url = {directoryURL}
acme_ca_file = {caFile}
state_directory = state
key_type = {keyType}
agree_tos = yes
"""

#: The environment variable naming a folder holding C{pebble} 2.10 or
#: later, with ARI and profiles (C{./dev test} fetches Debian's).
MODERN_VARIABLE = "PEBBLE_MODERN_DIR"


def findModernTestCA() -> tuple[str, str]:
    """
    Find pebble 2.10 or later, with renewal information (ARI) and profiles,
    in the folder L{MODERN_VARIABLE} names, for the C{executables} of
    L{startTestCA <letsencrypt_resource.pebble.startTestCA>}.

    @return: the paths of C{pebble} and C{pebble-challtestsrv}.
    @raise TestCANotFound: if either is missing.
    """
    folder = os.environ.get(MODERN_VARIABLE)
    if not folder:
        raise TestCANotFound(
            f"no pebble 2.10 or later: set {MODERN_VARIABLE} to the folder "
            "holding it (`./dev test` fetches Debian's)"
        )
    pebble = os.path.join(folder, "pebble")
    if not os.access(pebble, os.X_OK):
        raise TestCANotFound(f"{pebble} ({MODERN_VARIABLE}) is not an executable")
    # Its DNS server takes other flags; the stable one serves as well.
    return pebble, findTestCA()[1]


def certificateStatus(testCA: RunningTestCA, serial: int) -> Deferred[str]:
    """
    Whether C{testCA} holds the certificate with C{serial} as C{"Valid"} or
    C{"Revoked"}.
    """
    return testCA.manage("GET", f"/cert-status-by-serial/{serial:x}").addCallback(
        lambda body: json.loads(body)["Status"]
    )


def setRenewalInfo(
    testCA: RunningTestCA,
    certificatePEM: bytes,
    start: datetime.datetime,
    end: datetime.datetime,
) -> Deferred[None]:
    """
    Make C{testCA} (pebble 2.10 or later) suggest the renewal window
    C{start} to C{end} for the certificate C{certificatePEM}.
    """
    window = messages.RenewalInfo.SuggestedWindow(start=start, end=end)
    answer = messages.RenewalInfo(suggested_window=window).json_dumps()
    request = {"Certificate": certificatePEM.decode("ascii"), "ARIResponse": answer}
    return testCA.manage("POST", "/set-renewal-info/", json.dumps(request).encode()).addCallback(
        lambda _: None
    )
