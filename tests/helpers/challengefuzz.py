"""
Raw HTTP requests for fuzzing the product's web sites (L{tests.filefuzz}
uses them for the C{https} file service), and the property every answer
of the challenge site must have: never a 5xx, never a body but a pending key
authorization (for its own token), the readiness text, the not-found or
method texts, or an empty redirect under the redirect URL; malformed or
oversized requests refused by Twisted with a 4xx or a closed connection.

Used by L{tests.test_security}: 400 requests, or 100,000 in the slow tests
(L{tests.helpers.slow}).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from typing import Any

import attrs
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock
from twisted.web.server import Site

from letsencrypt_resource.challenge import (
    CHALLENGE_PREFIX,
    READY_TEXT,
    ChallengeResponder,
    ChallengeSite,
)
from tests.helpers import connectInMemory

TOKENS = {
    "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA": (
        "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
    ),
    "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0": (
        "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0.3M9fm21mqTI9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA"
    ),
    "a": "a.short",
}
REDIRECT_URL = "https://www.example.com/base"
NOT_FOUND = b"Not found."
ONLY_GET = b"Only GET and HEAD are allowed."
#: Statuses Twisted itself answers malformed or oversized requests with.
REFUSALS = {400, 408, 411, 413, 414, 431, 501, 505}
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")
#: Marks of files that must never be served.
FORBIDDEN = [b"root:", b"PRIVATE KEY", b"[resources/", b"#!/"]


def makeSite(redirect: bool) -> ChallengeSite:
    """
    A challenge site with L{TOKENS} pending, timeouts on a fake clock.
    """
    responder = ChallengeResponder()
    for token, answer in TOKENS.items():
        responder.add(token, answer)
    site = ChallengeSite(responder, REDIRECT_URL if redirect else None)
    site.reactor = MemoryReactorClock()
    return site


#: Path segments that probe for escapes and encodings.
PROBES = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "%2f",
    "%5c",
    "\\",
    "..%2f",
    "%00",
    "etc",
    "passwd",
    ".well-known",
    "acme-challenge",
    "test.txt",
    "",
    "~root",
    "%252e%252e",
    "%c0%ae%c0%ae",
]


@cache
def targets(names: tuple[str, ...]) -> st.SearchStrategy[bytes]:
    """
    Request-targets: paths of L{PROBES}, C{names} and arbitrary segments,
    challenge paths, and other request-target forms.

    @param names: Path segments the site under test may answer.
    """
    segment = st.one_of(
        st.sampled_from(PROBES + list(names)),
        st.text(st.sampled_from("ABCabcxyz019_-.~%+=!$&'()*,;:@"), max_size=40),
    )
    path = st.lists(segment, max_size=8).map(lambda parts: "/" + "/".join(parts))
    query = st.one_of(
        st.just(""),
        st.text(st.sampled_from("abc=&%?/#.x"), max_size=20).map(lambda q: "?" + q),
    )
    return st.one_of(
        st.tuples(path, query).map("".join),
        st.tuples(
            st.sampled_from(["/.well-known/acme-challenge/"]),
            st.one_of(st.sampled_from(list(TOKENS) + ["test.txt"]), segment),
            query,
        ).map("".join),
        st.sampled_from(
            [
                "*",
                "http://evil.example/x",
                "//evil.example/x",
                "@evil.example",
                "evil",
                "/\\evil.example",
                "http://localhost/.well-known/acme-challenge/test.txt",
            ]
        ),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
    ).map(lambda text: text.encode("ascii"))


_rawTarget = st.one_of(
    st.binary(max_size=60).filter(lambda b: b" " not in b and b"\r" not in b and b"\n" not in b),
    st.integers(16_000, 70_000).map(lambda n: b"/" + b"a" * n),
)
_method = st.one_of(
    st.sampled_from([b"GET", b"HEAD"]),
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"TRACE"]),
    st.sampled_from([b"CONNECT", b"PATCH", b"get", b"G\x00T", b""]),
    st.binary(min_size=1, max_size=10).filter(lambda b: b" " not in b and b"\r\n" not in b),
)
_version = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.1x", b""]
)
_headerName = st.one_of(
    st.sampled_from(
        [
            b"Host",
            b"Content-Length",
            b"Transfer-Encoding",
            b"Connection",
            b"Expect",
            b"X-Forwarded-For",
            b"Cookie",
            b"Range",
            b"If-Modified-Since",
            b"Authorization",
        ]
    ),
    st.binary(min_size=1, max_size=20).filter(
        lambda b: b":" not in b and b"\r" not in b and b"\n" not in b
    ),
)
_headerValue = st.one_of(
    st.sampled_from(
        [
            b"0",
            b"5",
            b"-1",
            b"chunked",
            b"close",
            b"100-continue",
            b"bytes=0-1",
            b"x" * 20000,
            b"1e9",
        ]
    ),
    st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b),
)
_headers = st.lists(st.tuples(_headerName, _headerValue), max_size=6)
_body = st.one_of(st.just(b""), st.binary(max_size=64), st.just(b"0\r\n\r\n"))


@attrs.frozen
class FuzzRequest:
    """
    One raw request and the site it goes to.
    """

    raw: bytes
    method: bytes
    target: bytes
    redirect: bool


_goodHeaders = st.lists(
    st.sampled_from(
        [
            (b"Host", b"example.com"),
            (b"Host", b"example.com:80"),
            (b"Accept", b"*/*"),
            (b"User-Agent", b"Mozilla/5.0"),
            (b"Connection", b"keep-alive"),
            (b"Connection", b"close"),
            (b"Accept-Encoding", b"gzip"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"Range", b"bytes=0-3"),
            (b"If-None-Match", b"*"),
        ]
    ),
    max_size=4,
)


@st.composite
def requests(draw: Any, names: Sequence[str] = tuple(TOKENS)) -> FuzzRequest:
    """
    Raw HTTP requests: two thirds well-formed GETs and HEADs of odd targets
    with ordinary headers; the rest with odd methods, versions, headers,
    bodies and sizes.

    @param names: As for L{targets}.
    """
    wild = draw(st.integers(0, 2)) == 0
    someTarget = targets(tuple(names))
    if wild:
        method = draw(_method)
        target = draw(st.one_of(someTarget, _rawTarget))
        version = draw(_version)
        headers = draw(_headers)
        body = draw(_body)
    else:
        method = draw(st.sampled_from([b"GET", b"GET", b"GET", b"HEAD", b"POST", b"OPTIONS"]))
        target = draw(someTarget)
        version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"]))
        headers = draw(_goodHeaders)
        body = b""
    if draw(st.booleans()):
        headers = [(b"Host", b"example.com")] + headers
    head = b" ".join([method, target] + ([version] if version else []))
    lines = [head] + [name + b": " + value for name, value in headers]
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    return FuzzRequest(raw, method, target, draw(st.booleans()))


@attrs.frozen
class Answer:
    """
    What the site sent back: nothing (closed), or a status, headers, body.
    """

    raw: bytes
    code: int | None
    headers: dict[bytes, bytes]
    body: bytes


def send(site: Site, raw: bytes, clock: MemoryReactorClock | None = None) -> Answer:
    """
    Send C{raw} on a new in-memory connection and read the first answer.

    @param clock: As for L{connectInMemory}.
    """
    connection = connectInMemory(site, clock=clock)
    connection.send(raw)
    received = connection.collector.received
    connection.collector.transport.loseConnection()
    connection.pump.flush()
    # An interim 100 Continue comes before the answer, if any.
    while received.startswith((b"HTTP/1.1 100 ", b"HTTP/1.0 100 ")):
        received = received.partition(b"\r\n\r\n")[2]
    if not received:
        return Answer(received, None, {}, b"")
    head, _, body = received.partition(b"\r\n\r\n")
    statusLine, *headerLines = head.split(b"\r\n")
    parts = statusLine.split(b" ")
    code = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1
    headers = {}
    for line in headerLines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" in headers and headers[b"content-length"].isdigit():
        body = body[: int(headers[b"content-length"])]
    return Answer(received, code, headers, body)


def commonProblems(answer: Answer) -> list[str]:
    """
    What is wrong with C{answer} whatever the site and the request: not
    HTTP/1.x, a server error on the connection, or forbidden content.
    """
    found = []
    if answer.code is None:
        return found
    if not answer.raw.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")) or answer.code < 100:
        found.append(f"not an HTTP/1.x status line: {answer.raw[:60]!r}")
    # Every answer on the connection, pipelined ones included.
    for status in _STATUS.findall(answer.raw):
        if int(status) >= 500 and int(status) not in REFUSALS:
            found.append(f"server error {int(status)}")
    for mark in FORBIDDEN:
        if mark in answer.raw:
            found.append(f"forbidden content {mark!r}")
    return found


def problems(request: FuzzRequest, answer: Answer) -> list[str]:
    """
    Everything wrong with C{answer} to C{request} from the challenge site;
    empty when all is well.
    """
    found = commonProblems(answer)
    if answer.code is None:
        return found
    code = answer.code
    path = request.target.split(b"?", 1)[0]
    answers = {answer.encode("ascii"): token for token, answer in TOKENS.items()}
    for keyAuthorization, token in answers.items():
        if keyAuthorization in answer.raw and path != CHALLENGE_PREFIX + token.encode():
            found.append(f"key authorization of {token} for {request.target!r}")
    body = answer.body
    head = request.method == b"HEAD"
    if head:
        body = b""
    if code == 200:
        allowed = set(answers) | {READY_TEXT}
        if request.target == b"*":
            allowed.add(b"")
        if not (head and body == b"") and body not in allowed:
            found.append(f"200 with an unknown body {body[:60]!r}")
        if body == READY_TEXT and path != CHALLENGE_PREFIX + b"test.txt":
            found.append(f"readiness text for {request.target!r}")
    elif code in (301, 302, 307, 308):
        location = answer.headers.get(b"location", b"")
        if not request.redirect:
            found.append(f"redirect without a redirect URL: {location!r}")
        if not location.startswith(REDIRECT_URL.encode() + b"/"):
            found.append(f"redirect outside the redirect URL: {location!r}")
        if body:
            found.append(f"redirect with a body {body[:60]!r}")
    elif code == 404:
        if body not in (NOT_FOUND, b""):
            found.append(f"404 with body {body[:60]!r}")
    elif code == 405:
        if body not in (ONLY_GET, b""):
            found.append(f"405 with body {body[:60]!r}")
    elif code not in REFUSALS:
        found.append(f"unexpected status {code}")
    return found
