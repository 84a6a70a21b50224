"""
The failures of ACME orders and accounts that every layer tells apart,
and the limit of an order, in a module that imports no C{acme}: the
services catch and count them from start-up, while the modules that speak
ACME (and C{acme}, C{josepy} and C{requests} under them) are loaded only
when the first account connects (see L{letsencrypt_resource.acmeloading}).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet.defer import CancelledError

if TYPE_CHECKING:
    from acme import messages

#: The namespace of the standard ACME problem types (RFC 8555 section 6.7),
#: as C{acme.messages.ERROR_PREFIX} has it.
ERROR_PREFIX = "urn:ietf:params:acme:error:"

#: Seconds an order may take from creation to the downloaded certificate.
ORDER_TIMEOUT = 300.0


class ACMEProblem(Exception):
    """
    The ACME server answered with a problem document (RFC 8555 section 6.7).

    @ivar problem: The parsed problem.
    @ivar status: The HTTP status it came with, or C{None} when it came in
        an authorization or order.
    @ivar retryAfter: Seconds the server asked to wait, if it said.
    """

    def __init__(
        self,
        problem: messages.Error,
        status: int | None = None,
        retryAfter: float | None = None,
    ):
        super().__init__(problem, status, retryAfter)
        self.problem = problem
        self.status = status
        self.retryAfter = retryAfter

    @property
    def type(self) -> str:
        """
        The problem type URN.
        """
        return str(self.problem.typ)

    @property
    def code(self) -> str | None:
        """
        The ACME error code (the type without its URN prefix), if standard.
        """
        return self.problem.code

    @property
    def identifiers(self) -> tuple[str, ...]:
        """
        The identifiers the problem and its subproblems name.
        """
        found = []
        for problem in (self.problem,) + tuple(self.problem.subproblems or ()):
            if problem.identifier is not None and problem.identifier.value not in found:
                found.append(problem.identifier.value)
        return tuple(found)

    def __str__(self) -> str:
        where = f" ({self.problem.identifier.value})" if self.problem.identifier else ""
        text = f"{self.type}{where}: {self.problem.detail or self.problem.title or ''}".strip()
        for sub in self.problem.subproblems or ():
            where = f" ({sub.identifier.value})" if sub.identifier else ""
            text += f"; {sub.typ}{where}: {sub.detail or ''}"
        if self.retryAfter is not None:
            text += f" (retry after {self.retryAfter:.0f} s)"
        return text


class ACMEProtocolError(Exception):
    """
    The ACME server's answer is not what the protocol allows.

    @ivar url: The URL requested.
    @ivar status: The HTTP status, if a response came.
    @ivar retryAfter: Seconds the server asked to wait, if it said.
    """

    def __init__(
        self,
        url: str,
        message: str,
        status: int | None = None,
        retryAfter: float | None = None,
    ):
        super().__init__(url, message, status, retryAfter)
        self.url = url
        self.message = message
        self.status = status
        self.retryAfter = retryAfter

    def __str__(self) -> str:
        status = f"HTTP {self.status} " if self.status is not None else ""
        return f"{status}from {self.url}: {self.message}"


class ACMEServerUntrusted(ACMEProtocolError):
    """
    The ACME server's TLS certificate did not verify against the trusted
    roots: the CA uses a private root, or the wrong roots are trusted.  Its
    message names the URL and says what to set C{acme_ca_file} to.

    @ivar reason: What the TLS library said.
    @ivar caFile: The C{acme_ca_file} trusted, or C{None} for the system's
        roots.
    """

    def __init__(self, url: str, reason: str, caFile: str | None = None):
        if caFile is None:
            message = (
                f"the TLS certificate of {url} does not verify against the "
                f"system's trusted roots ({reason}): for a CA with a private "
                "or test root, set acme_ca_file to the PEM file of that root"
            )
        else:
            message = (
                f"the TLS certificate of {url} does not verify against "
                f"acme_ca_file {caFile} ({reason}): set acme_ca_file to the "
                "PEM file of the root that signed it"
            )
        super().__init__(url, message)
        self.reason = reason
        self.caFile = caFile

    def __str__(self) -> str:
        return self.message


class OrderTimedOut(Exception):
    """
    The order did not complete within L{ORDER_TIMEOUT}.
    """

    def __init__(self, status: str, timeout: float):
        super().__init__(status, timeout)
        self.status = status
        self.timeout = timeout

    def __str__(self) -> str:
        return f"the order was still {self.status} after {self.timeout:.0f} seconds"


class ChallengeNotOffered(ACMEProtocolError):
    """
    The CA offers no challenge of the type asked for an authorization.
    """


class CertificateMismatch(Exception):
    """
    The CA issued a certificate that does not match our request.
    """


class AccountError(Exception):
    """
    The account cannot be used as configured.

    @ivar option: The option to change.
    """

    def __init__(self, option: str, message: str):
        super().__init__(option, message)
        self.option = option
        self.message = message

    def __str__(self) -> str:
        return f"option '{self.option}': {self.message}"


class AccountBusy(Exception):
    """
    Another user of the storage is creating or changing the account.
    """

    def __str__(self) -> str:
        return "another user of the storage is creating or changing the account; trying later"


def orderSurvives(error: BaseException) -> bool:
    """
    Whether the order of an attempt that failed with C{error} may still end
    in a certificate, so that the next attempt resumes it: the attempt was
    cancelled or took too long, or the CA could not be reached or failed
    itself.  After any other failure (the CA refused the order, offered no
    challenge of the type asked, or issued a wrong certificate), the next
    attempt places a new order.
    """
    if isinstance(error, (CancelledError, OrderTimedOut)):
        return True
    if isinstance(error, ChallengeNotOffered):
        return False
    return isinstance(error, ACMEProtocolError) and (error.status is None or error.status >= 500)


class ACMEUnavailable(Exception):
    """
    The modules that speak ACME cannot be imported: a package they need
    (C{acme}, C{josepy}, C{requests} or theirs) is missing or does not work
    with them.  A fault of this install, not of any CA.

    @ivar module: The module whose import failed.
    @ivar error: What its import raised.
    """

    def __init__(self, module: str, error: BaseException):
        super().__init__(module, error)
        self.module = module
        self.error = error

    def __str__(self) -> str:
        return (
            "the modules that speak ACME cannot be loaded: "
            f"importing {self.module} failed: {self.error!r}"
        )
