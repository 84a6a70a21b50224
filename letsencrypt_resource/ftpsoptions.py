"""
The options that only C{type = ftps} service sections take, beside those of
every service (L{letsencrypt_resource.config.ServiceOptions}).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

import attrs

from .config import ConfigurationError, Option, _boolean, _field, _options, _path, _resolve

#: The port of an explicit FTPS service (AUTH TLS on plain FTP's port).
EXPLICIT_PORT = 21
#: The port of an implicit FTPS service (TLS from the first byte).
IMPLICIT_PORT = 990


def _portRange(value: str) -> range:
    """
    Parse C{first-last} (or one port) into the range of passive ports.
    """
    first, dash, last = value.partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise ValueError(f"{value!r} is not a port range such as 50000-50100") from None
    if not 1024 <= low <= high <= 65535:
        raise ValueError(f"{value!r} must be ports from 1024 to 65535, the lower one first")
    return range(low, high + 1)


def _sessionCount(value: str) -> int:
    """
    Parse the most sessions open at once: a number from 1 to 10000.
    """
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number of sessions") from None
    if not 1 <= count <= 10_000:
        raise ValueError(f"{value!r} must be from 1 to 10000")
    return count


def _ipAddress(value: str) -> str:
    """
    Parse an IPv4 address, which is what PASV replies can announce.
    """
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 address (PASV announces IPv4 only)") from None


@attrs.frozen(kw_only=True)
class FTPSOptions:
    """
    The options of an FTPS service that an HTTPS service does not have.
    """

    implicit: bool = _field(
        Option("implicit", _boolean, "no", "TLS from the first byte instead of AUTH TLS.")
    )
    #: The accounts file (htpasswd, bcrypt hashes), or C{None} for none.
    usersFile: str | None = _field(
        Option("users_file", _path, "", "Accounts in htpasswd format, bcrypt hashes only."),
        default=None,
    )
    anonymous: bool = _field(
        Option("anonymous", _boolean, "no", "Let anyone log in as anonymous, read-only.")
    )
    writable: bool = _field(
        Option("writable", _boolean, "no", "Let the accounts upload, rename and delete.")
    )
    #: The ports passive data connections listen on; C{None} for any.
    passivePorts: range | None = _field(
        Option("passive_ports", _portRange, "", "Ports for passive data connections."),
        default=None,
    )
    #: The address PASV replies announce; C{None} for the control
    #: connection's own.
    passiveAddress: str | None = _field(
        Option("passive_address", _ipAddress, "", "Address announced in PASV replies."),
        default=None,
    )
    requireSessionReuse: bool = _field(
        Option(
            "require_session_reuse",
            _boolean,
            "yes",
            "Refuse data connections that do not resume the control connection's TLS session.",
        )
    )
    maxSessions: int = _field(
        Option("max_sessions", _sessionCount, "200", "The most sessions open at once.")
    )


#: The options of L{FTPSOptions}, as the file reads them.
FTPS_OPTIONS = _options(FTPSOptions)


def ftpsOptions(section: str, values: dict[str, Any], base: str) -> FTPSOptions:
    """
    The L{FTPSOptions} of C{section}, from its option C{values}, paths
    resolved against C{base}.

    @raise ConfigurationError: when no one could log in, or when the
        accounts file lies in the served folder.
    """
    usersFile = values["users_file"] or None
    if usersFile is not None:
        usersFile = _resolve(base, usersFile)
        served = _resolve(base, values["path"])
        if os.path.commonpath([served, usersFile]) == served:
            raise ConfigurationError(
                section,
                "users_file",
                f"{usersFile} lies in the served path {served}: the service would "
                "publish its password hashes; keep it outside",
            )
    elif not values["anonymous"]:
        raise ConfigurationError(
            section, "users_file", "is required unless anonymous = yes: no one could log in"
        )
    return FTPSOptions(
        implicit=values["implicit"],
        usersFile=usersFile,
        anonymous=values["anonymous"],
        writable=values["writable"],
        passivePorts=values["passive_ports"],
        passiveAddress=values["passive_address"] or None,
        requireSessionReuse=values["require_session_reuse"],
        maxSessions=values["max_sessions"],
    )


def ftpsDefaults(options: FTPSOptions, written: set[str]) -> dict[str, Any]:
    """
    The service fields whose default differs for FTPS: the port, 21 for
    explicit and 990 for implicit FTPS, unless the section sets C{port} or
    C{endpoint}.
    """
    if "port" in written or "endpoint" in written:
        return {}
    return {"port": IMPLICIT_PORT if options.implicit else EXPLICIT_PORT}
