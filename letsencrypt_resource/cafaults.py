"""
Which failed attempts count against the CA they were made with, toward
ordering from the next one: those another CA might not have had.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .acmeerrors import (
    ERROR_PREFIX,
    AccountError,
    ACMEProblem,
    ACMEProtocolError,
    ACMEUnavailable,
    CertificateMismatch,
    OrderTimedOut,
)
from .ordering import CompromisedAccountKey, ProfileNotOffered
from .storage.interface import StorageError

if TYPE_CHECKING:
    from acme import messages

#: The ACME problems (RFC 8555 section 6.7, and C{invalidProfile} of the
#: profiles draft) that say the CA failed, is busy, or refuses what
#: another CA may accept.  The problems of a failed validation
#: (C{unauthorized}, C{connection}, C{dns}, C{tls}, C{incorrectResponse})
#: are not among them: every CA reaches this server's site in the same
#: way; but see L{caSideValidation}.
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
        "invalidContact",
        "unsupportedContact",
        "invalidProfile",
    }
)

#: The failures that are this server's own, whichever CA it orders from:
#: never held against a CA, not even as a last resort (a broken install
#: of the ACME packages among them).
LOCAL_FAILURES = (StorageError, CompromisedAccountKey, ACMEUnavailable)

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


def problemType(problem: messages.Error) -> str | None:
    """
    The ACME type of C{problem} without its C{urn:ietf:params:acme:error:}
    prefix, whether C{acme} knows it or not (it does not know
    C{invalidProfile}); C{None} for a type outside that namespace.
    """
    typ = str(problem.typ)
    return typ[len(ERROR_PREFIX) :] if typ.startswith(ERROR_PREFIX) else None


def caSideValidation(problem: messages.Error) -> bool:
    """
    Whether the failed validation C{problem} is the CA's own: a C{dns}
    problem met looking up the CAA records, which the CA's resolver does
    whatever the challenge (another CA's resolver may get the answer).
    """
    return problemType(problem) == "dns" and "CAA" in (problem.detail or "")


def blamesCA(error: BaseException, urgent: bool) -> bool:
    """
    Whether the failed attempt that ended with C{error} counts against the
    CA it was made with: it is one of L{CA_FAILURES}, or an ACME problem
    that came with an HTTP status of 500 or more, is one of L{CA_PROBLEMS}
    or a L{caSideValidation} (for a compound problem, one of its
    subproblems).  Other failed validations and other problems do not
    count, unless the set is C{urgent} (its CA-issued certificate past its
    emergency threshold): then every failure counts but the
    L{LOCAL_FAILURES}, so that no answer of a CA keeps a set from the next
    until its certificate expires.
    """
    if isinstance(error, LOCAL_FAILURES):
        return False
    if urgent or isinstance(error, CA_FAILURES):
        return True
    if not isinstance(error, ACMEProblem):
        return False
    if error.status is not None and error.status >= 500:
        return True
    problems = (error.problem,) + tuple(error.problem.subproblems or ())
    return any(problemType(p) in CA_PROBLEMS or caSideValidation(p) for p in problems)
