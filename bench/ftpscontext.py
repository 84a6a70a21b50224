"""
The CPU time of one FTPS session's TLS context (issue 15): what
C{letsencrypt_resource.ftpstls.sessionContext} costs, against the same
context built through Twisted's C{CertificateOptions} (how it was built
before), in the same run, on the reactor's thread::

    .venv/bin/python bench/ftpscontext.py --repeats 7 --count 300

Each new control connection builds one; 200 sessions starting together
build 200 in a few reactor passes.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import time
from collections.abc import Callable

import common  # noqa: F401 (puts the project on sys.path)
from OpenSSL import SSL, crypto
from twisted.internet.ssl import CertificateOptions, TLSVersion

from letsencrypt_resource.certificates import CertifiedKey
from letsencrypt_resource.ftpstls import SESSION_LIFETIME, sessionContext
from letsencrypt_resource.provisional import makeProvisional, makeSigner


def throughTwisted(certifiedKey: CertifiedKey) -> SSL.Context:
    """
    The session context as built before: C{CertificateOptions}, with the
    certificate, chain and key converted at each session.
    """
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(certifiedKey.key),
        certificate=crypto.X509.from_cryptography(certifiedKey.certificate),
        extraCertChain=[crypto.X509.from_cryptography(c) for c in certifiedKey.chain],
        raiseMinimumTo=TLSVersion.TLSv1_2,
        enableSessions=True,
    )
    context = options.getContext()
    context.set_timeout(SESSION_LIFETIME)
    return context


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--count", type=int, default=300, help="contexts per repeat")
    arguments = parser.parse_args()
    now = datetime.datetime.now(datetime.timezone.utc)
    certifiedKey = makeProvisional(makeSigner("bench", ("test",), now), ("ftp.example.test",), now)
    builders: dict[str, Callable[[CertifiedKey], SSL.Context]] = {
        "CertificateOptions (before)": throughTwisted,
        "sessionContext": sessionContext,
    }
    times: dict[str, list[float]] = {name: [] for name in builders}
    for _ in range(arguments.repeats):
        for name, build in builders.items():
            started = time.thread_time()
            for _ in range(arguments.count):
                build(certifiedKey)
            times[name].append((time.thread_time() - started) / arguments.count * 1000)
    print(f"chain of {len(certifiedKey.chain)}; load average {os.getloadavg()[0]:.2f}")
    print("| context built by | CPU ms per session, median (min) |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.3f} ({min(values):.3f}) |")


if __name__ == "__main__":
    main()
