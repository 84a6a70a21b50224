"""
What the parts of L{FakeACMEServer
<letsencrypt_resource.testing.acmeserver.FakeACMEServer>} share: its base
URL, its problem answers and its JSON answers.
"""

from __future__ import annotations

import datetime

import josepy
from acme import messages
from twisted.web.server import Request

#: The base URL of every resource of the fake ACME server.
BASE = "https://acme.test"


class ACMEProblem(Exception):
    """
    Raised by the fake server's handlers: answered as an ACME problem.

    @ivar status: the HTTP status.
    @ivar code: the ACME problem type, without its namespace.
    @ivar detail: the problem's detail.
    """

    def __init__(self, status: int, code: str, detail: str):
        super().__init__(status, code, detail)
        self.status = status
        self.code = code
        self.detail = detail


def answerJSON(request: Request, body: josepy.JSONDeSerializable, status: int = 200) -> bytes:
    """
    Answer C{request} with C{body} as JSON.
    """
    request.setResponseCode(status)
    request.setHeader("content-type", "application/json")
    return body.json_dumps().encode("utf-8")


def answerProblem(request: Request, status: int, code: str, detail: str) -> bytes:
    """
    Answer C{request} with an ACME problem.
    """
    request.setResponseCode(status)
    request.setHeader("content-type", "application/problem+json")
    return messages.Error.with_code(code, detail=detail).json_dumps().encode("utf-8")


def utc(seconds: float) -> datetime.datetime:
    """
    @return: the POSIX time C{seconds} as an aware UTC datetime.
    """
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
