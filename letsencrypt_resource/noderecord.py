"""
The record each node of a cluster keeps in the cluster's storage, at
C{nodes/<node_name>}: when it was last seen, and what it serves for each
domain set.  A node rewrites its one record whole (see
L{letsencrypt_resource.heartbeat}): one write, whatever the number of sets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import attrs

#: The prefix of the node records' keys.
NODES = "nodes/"
#: What a record says a node serves when it serves a provisional
#: certificate.
PROVISIONAL = "provisional"


def nodeKey(node: str) -> str:
    """
    The key of the record of the node named C{node}.
    """
    return NODES + node


def serialHex(serial: int) -> str:
    """
    A certificate serial number as C{openssl x509 -serial} shows it:
    upper-case hex, an even number of digits.
    """
    digits = f"{serial:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


@attrs.frozen
class NodeRecord:
    """
    What one node told the cluster of itself.

    @ivar node: Its name.
    @ivar seen: When it wrote the record, in seconds since the epoch by its
        own clock.
    @ivar serving: By domain set (as C{domainsLabel} shows it), the serial
        of the certificate it serves (see L{serialHex}), or L{PROVISIONAL}.
    """

    node: str
    seen: float
    serving: Mapping[str, str]

    def toJSON(self) -> bytes:
        """
        The record as stored.
        """
        record = {"node": self.node, "seen": self.seen, "serving": dict(self.serving)}
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")

    @classmethod
    def fromJSON(cls, data: bytes) -> NodeRecord:
        """
        The record stored as C{data}.

        @raise ValueError: when it is not one.
        """
        try:
            record = json.loads(data)
            node, seen, serving = record["node"], record["seen"], record["serving"]
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"not a node record: {error}") from None
        if not (
            isinstance(node, str)
            and isinstance(seen, int | float)
            and isinstance(serving, dict)
            and all(isinstance(v, str) for v in serving.values())
        ):
            raise ValueError("not a node record: a field has the wrong type")
        return cls(node, float(seen), serving)
