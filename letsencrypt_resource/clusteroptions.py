"""
The values of the cluster options of the C{lets-encrypt} resource:
C{cluster_database} (a libpq connection string, never holding a password)
and C{node_name} (this node's label in events).  The key file, which the
file system decides about, is checked by
L{letsencrypt_resource.storage.sealing.readKeyFile}.
"""

from __future__ import annotations

import re
import socket

#: The longest node name: it travels in every sealed value (one byte of
#: length), and in events.
MAX_NODE_NAME = 64
_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")


def parseClusterDatabase(value: str) -> str:
    """
    Check that C{value} is a libpq connection string or URI without a
    password: libpq takes one from a password file (C{PGPASSFILE},
    C{~/.pgpass}) or a service file, which the configuration file, read by
    more people and copied to every node, should not replace.

    @return: C{value}, stripped.
    @raise ValueError: when it is not one, holds a password, or psycopg
        (the C{cluster} extra) is not installed; the message never quotes
        the value, which may hold a secret.
    """
    try:
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ValueError(
            "needs psycopg 3: install the 'cluster' extra of letsencrypt-resource"
        ) from None
    try:
        parameters = conninfo_to_dict(value.strip())
    except ProgrammingError:
        raise ValueError("is not a valid libpq connection string or URI") from None
    if "password" in parameters:
        raise ValueError(
            "holds a password: give it in a password file (PGPASSFILE, "
            "~/.pgpass) or a service file instead, never in the configuration"
        )
    return value.strip()


def parseNodeName(value: str) -> str:
    """
    Check that C{value} can name a node: letters, digits, C{.}, C{_},
    C{:} and C{-}, starting with a letter or digit, at most
    L{MAX_NODE_NAME} characters.

    @return: C{value}.
    @raise ValueError: when it cannot.
    """
    if len(value) > MAX_NODE_NAME or not _NODE_NAME.fullmatch(value):
        raise ValueError(
            f"must be at most {MAX_NODE_NAME} letters, digits, '.', '_', ':' "
            "or '-', starting with a letter or digit"
        )
    return value


def defaultNodeName() -> str:
    """
    This host's name, cut to a valid node name (see L{parseNodeName}).
    """
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname()).lstrip("._:-")
    return name[:MAX_NODE_NAME] or "node"
