"""
What the product's web listeners (the challenge site and the C{https} file
services) accept: GET and HEAD, without a body, with a request line and
headers within Twisted's limits.

Anything else is refused at once with a short answer, before it is read:
a request that announces a body gets 405 (other methods) or 413 (GET and
HEAD), a request line or header line
over 16 KiB gets 400 (as do more than 16 KiB of headers in all or more
than 500 headers, Twisted's own limits), a request whose line and
headers are not all in within 30 seconds of its first byte gets 408, and
the connection is closed, over TLS as over TCP.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.http import HTTPChannel
from twisted.web.server import Request, Site

#: The only methods the sites answer.
ALLOWED_METHODS = (b"GET", b"HEAD")
#: How long a client has to send a request's line and headers once it
#: began: a client that trickles them holds a connection no longer.
HEADERS_DEADLINE = 30.0
#: How many bytes a closing connection may still receive (a refused body,
#: say) before it is cut; a client that sends nothing more is cut after
#: C{HTTPChannel.abortTimeout} seconds.
DRAIN_LIMIT = 64 * 1024
#: Seconds an idle connection closed as its listener stops waits for the
#: client's TLS close_notify before it is cut.
CLOSE_NOTIFY_WAIT = 1.0
_ALLOW = b", ".join(ALLOWED_METHODS)


class LimitedChannel(HTTPChannel):
    """
    An HTTP/1.x channel that refuses request bodies and over-long lines
    promptly, and reads nothing once it is closing.
    """

    _drained = 0
    _headersDue: IDelayedCall | None = None
    _closing = False
    _answered = False
    site: LimitedSite

    def dataReceived(self, data: bytes) -> None:
        """
        Give a request that begins L{HEADERS_DEADLINE} seconds to have its
        headers in (408 then).  Ignore whatever comes once the connection
        is closing: a refused request's body or a request pipelined behind
        it.  Over TLS, closing waits for the client's close_notify while the
        client may go on sending: past L{DRAIN_LIMIT} bytes, the connection
        is cut.
        """
        # Every Twisted transport has disconnecting; ITransport omits it.
        if not self.transport.disconnecting:  # type: ignore[union-attr]
            if self._headersDue is None and not self._handlingRequest:
                self._headersDue = self.callLater(
                    HEADERS_DEADLINE, lambda: self._refuse(b"408 Request Timeout")
                )
            super().dataReceived(data)
            return
        self._drained += len(data)
        if self._drained > DRAIN_LIMIT and self._abortingCall is not None:
            self._abortingCall.cancel()
            self.forceAbortClient()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Answer a request line or header line over C{MAX_LENGTH} with 400,
        then close.

        C{LineReceiver} would only close the transport, which over TLS
        waits for the channel to unregister as the transport's producer,
        that is until the idle timeout.
        """
        self._refuse(b"400 Bad Request")

    def allHeadersReceived(self) -> None:
        """
        Refuse a request that announces a body (a non-zero
        C{Content-Length} or chunked transfer coding) before any of it is
        read or spooled to a temporary file: 405 for a method other than
        GET and HEAD, as without a body, 413 for those two.
        """
        self._cancelHeadersDeadline()
        if self.length != 0:
            # The method of the request line, kept by HTTPChannel: the
            # request itself learns it only once its body has come.
            if self._command in ALLOWED_METHODS:
                self._refuse(b"413 Content Too Large")
            else:
                self._refuse(b"405 Method Not Allowed", b"Allow: " + _ALLOW)
            return
        super().allHeadersReceived()

    def connectionMade(self) -> None:
        super().connectionMade()
        site = self.site
        site.channels.add(self)
        if site.closing:
            self.closeWhenIdle()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancelHeadersDeadline()
        self.site.channels.discard(self)
        super().connectionLost(reason)

    def closeWhenIdle(self) -> None:
        """
        Close the connection at once when it is idle between requests (it
        answered one, and no other is under way: its client sends the next
        one on a new connection, as HTTP clients do when a reused
        connection closes); otherwise once the request under way, or the
        first one of a new connection, is answered, with C{Connection:
        close} on that answer.

        C{HTTPChannel} has no public "close when idle"; this uses only its
        public names: C{requests} (the queue of requests received and not
        yet answered), C{persistent} (read by C{requestDone}, which closes
        the connection when it is false), C{checkPersistence} and
        C{requestDone} (overridden below) and C{loseConnection} (which
        unregisters the channel as the transport's producer before
        closing, so over TLS the close is not held by it).  Not
        C{_networkProducer}.
        """
        self._closing = True
        # Every Twisted transport has disconnecting; ITransport omits it.
        if self.transport is None or self.transport.disconnecting:  # type: ignore[attr-defined]
            return
        if self.requests:
            self.persistent = False
            for request in self.requests:
                if not request.startedWriting:
                    request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return
        if not self._answered:
            return
        self._cancelHeadersDeadline()
        self.setTimeout(None)
        # Over TLS the close waits for the client's close_notify: a client
        # that does not answer is cut after CLOSE_NOTIFY_WAIT.
        self._abortingCall = self.callLater(CLOSE_NOTIFY_WAIT, self.forceAbortClient)
        self.loseConnection()

    def requestDone(self, request: Any) -> None:
        """
        A request was answered: the connection is idle between requests
        from now on, unless another is under way.
        """
        self._answered = True
        super().requestDone(request)

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        Keep the connection open after C{request} as C{HTTPChannel} does,
        unless it is to close when idle: then close it, and say so.
        """
        if self._closing:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return bool(super().checkPersistence(request, version))

    def _cancelHeadersDeadline(self) -> None:
        due, self._headersDue = self._headersDue, None
        if due is not None and due.active():
            due.cancel()

    def _refuse(self, status: bytes, *headers: bytes) -> None:
        self._cancelHeadersDeadline()
        lines = [b"HTTP/1.1 " + status, *headers, b"Connection: close", b"Content-Length: 0"]
        assert self.transport is not None, "a request came, so it is connected"
        self.transport.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self.setTimeout(None)
        self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)
        self.loseConnection()


class LimitedRequest(Request):
    """
    A request that treats the asterisk-form target C{*} like any path the
    site does not have.
    """

    def _handleStar(self) -> None:
        """
        Answer C{*} with 404 for GET and HEAD and 405 otherwise, where
        Twisted would answer OPTIONS with 200 and other methods with
        C{Allow: OPTIONS}.
        """
        body = notFound(self) if self.method in ALLOWED_METHODS else refuseMethod(self)
        self.setHeader(b"content-length", b"%d" % len(body))
        self.write(body)
        self.finish()


class LimitedSite(Site):
    """
    A site whose connections are L{LimitedChannel}s and whose requests are
    L{LimitedRequest}s.

    It writes no access log (a subclass logs requests as events, or not
    at all), so it keeps no access-log date either: Twisted refreshes that
    date with a timer each second for every site, which woke a server of
    1,000 services 1,000 times a second doing nothing.
    """

    protocol = LimitedChannel  # type: ignore[assignment]
    requestFactory = LimitedRequest
    #: Set by L{closeIdle}: connections are closed once idle.
    closing = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        #: The connections open.
        self.channels: set[LimitedChannel] = set()

    def closeIdle(self) -> None:
        """
        The site's listener stopped: close its connections once idle (see
        L{LimitedChannel.closeWhenIdle}), those open and any still to come.
        """
        self.closing = True
        for channel in list(self.channels):
            channel.closeWhenIdle()

    def _updateLogDateTime(self) -> None:
        """
        Start no timer: there is no access-log date to keep.
        """

    def log(self, request: http.Request) -> None:
        """
        Write no access log.
        """


def refuseMethod(request: Request) -> bytes:
    """
    Answer C{request} with 405 and an C{Allow} header naming
    L{ALLOWED_METHODS}.

    @return: The body.
    """
    request.setResponseCode(405)
    request.setHeader(b"allow", _ALLOW)
    return plainText(request, b"Only GET and HEAD are allowed.")


def notFound(request: Request) -> bytes:
    """
    Answer C{request} with 404.

    @return: The body.
    """
    request.setResponseCode(404)
    return plainText(request, b"Not found.")


def plainText(request: Any, body: bytes) -> bytes:
    """
    Mark C{request}'s answer as short, uncached ASCII text.

    @return: C{body}.
    """
    request.setHeader(b"content-type", b"text/plain; charset=ascii")
    request.setHeader(b"cache-control", b"no-store")
    return body
