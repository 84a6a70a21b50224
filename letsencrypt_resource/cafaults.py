"""
Which failed attempts count against the CA they were made with, toward
ordering from the next one: those another CA might not have had.
"""

from __future__ import annotations

from .account import AccountError
from .acmetransport import ACMEProblem, ACMEProtocolError
from .issuer import CertificateMismatch, OrderTimedOut
from .ordering import ProfileNotOffered

#: The ACME problems (RFC 8555 section 6.7) that say the CA failed, is
#: busy, or refuses what another CA may accept.  The problems of a failed
#: validation (C{unauthorized}, C{connection}, C{dns}, C{tls},
#: C{incorrectResponse}) are not among them: every CA reaches this
#: server's site in the same way.
CA_PROBLEMS = frozenset(
    {
        "serverInternal",
        "rateLimited",
        "badNonce",
        "caa",
        "rejectedIdentifier",
        "unsupportedIdentifier",
        "externalAccountRequired",
        "userActionRequired",
        "badSignatureAlgorithm",
    }
)

#: The failures of an exchange with the CA or of what it issued: it could
#: not be reached, answered outside the protocol (a 5xx without a problem
#: document among them) or not in time, offered no challenge of the type
#: asked, issued a certificate for other names or keys, offers no profile
#: of the name asked, or refused the account as configured for it.
CA_FAILURES = (
    ACMEProtocolError,
    OrderTimedOut,
    CertificateMismatch,
    ProfileNotOffered,
    AccountError,
)


def blamesCA(error: BaseException) -> bool:
    """
    Whether the failed attempt that ended with C{error} counts against the
    CA it was made with: it is one of L{CA_FAILURES}, or an ACME problem
    that came with an HTTP status of 500 or more or is one of
    L{CA_PROBLEMS} (for a compound problem, one of its subproblems).
    Local failures (storage, a key revoked as compromised) and failed
    validations do not count.
    """
    if isinstance(error, CA_FAILURES):
        return True
    if not isinstance(error, ACMEProblem):
        return False
    if error.status is not None and error.status >= 500:
        return True
    problems = (error.problem,) + tuple(error.problem.subproblems or ())
    return any(problem.code in CA_PROBLEMS for problem in problems)
