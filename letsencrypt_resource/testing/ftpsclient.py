"""
Python's C{ftplib.FTP_TLS}, made into the FTPS client that tests and the
FTPS benchmark need: it checks the server's certificate against a given
name, resumes the control connection's TLS session on every data
connection (which C{ftplib} does not do, CPython issue 63699), and speaks
implicit FTPS as well.
"""

from __future__ import annotations

import ftplib
import socket
import ssl
from typing import Any


def clientContext(caFile: str) -> ssl.SSLContext:
    """
    A client context that trusts only the certificates in C{caFile}.
    """
    return ssl.create_default_context(cafile=caFile)


class ResumingFTPS(ftplib.FTP_TLS):
    """
    Explicit FTPS (AUTH TLS) that checks the certificate for C{tlsName}
    and, with C{resume}, resumes the control session on data connections.
    """

    def __init__(self, context: ssl.SSLContext, tlsName: str, resume: bool = True, **kwargs: Any):
        super().__init__(context=context, timeout=20, **kwargs)
        self.tlsName = tlsName
        self.resume = resume

    def auth(self) -> str:
        resp = self.voidcmd("AUTH TLS")
        plain = self.sock
        assert plain is not None
        self.sock = self.context.wrap_socket(plain, server_hostname=self.tlsName)
        self.file = self.sock.makefile(mode="r", encoding=self.encoding)
        return resp

    def ntransfercmd(self, cmd: str, rest: Any = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:  # type: ignore[attr-defined]
            control = self.sock
            assert isinstance(control, ssl.SSLSocket)
            session = control.session if self.resume else None
            conn = self.context.wrap_socket(conn, server_hostname=self.tlsName, session=session)
        return conn, size


class ImplicitFTPS(ResumingFTPS):
    """
    Implicit FTPS: TLS from the first byte of the control connection.
    """

    def connect(
        self, host: str = "", port: int = 0, timeout: float = -999, source_address: Any = None
    ) -> str:
        self.host = host
        self.port = port
        # As ftplib's: the data connections come from the same address.
        self.source_address = source_address
        plain = socket.create_connection((host, port), self.timeout, source_address)
        self.sock = self.context.wrap_socket(plain, server_hostname=self.tlsName)
        self.af = self.sock.family
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome

    def login(self, user: str = "", passwd: str = "", acct: str = "", secure: bool = True) -> str:
        return ftplib.FTP.login(self, user, passwd, acct)
