"""
The records each node of a cluster keeps in the cluster's storage, under
C{nodes/<node_name>/}: C{seen}, when it was last seen, rewritten by every
heartbeat (see L{letsencrypt_resource.heartbeat}), and C{serving}, what it
serves for each domain set, rewritten when that changes.  Each is one
write of one key, whatever the number of sets; the heartbeat of a node
whose certificates did not change writes a few bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from .clusteroptions import parseNodeName

#: The prefix of the node records' keys.
NODES = "nodes/"
#: Seconds between two heartbeats of a node when nothing changes.
BEAT_INTERVAL = 60.0
#: Seconds without a heartbeat after which a node is stale.
STALE_AFTER = 3 * BEAT_INTERVAL
#: What a record says a node serves when it serves a provisional
#: certificate.
PROVISIONAL = "provisional"
#: What a C{serving} record may say a node serves: a serial, or that.
_SERVED = re.compile(f"[0-9A-F]{{1,64}}|{PROVISIONAL}")


def seenKey(node: str) -> str:
    """
    The key of the record of when the node named C{node} was last seen.
    """
    return f"{NODES}{node}/seen"


def servingKey(node: str) -> str:
    """
    The key of the record of what the node named C{node} serves.
    """
    return f"{NODES}{node}/serving"


def seenJSON(node: str, seen: float) -> bytes:
    """
    The record, as stored, that C{node} was seen at C{seen}.
    """
    return _dumps({"node": node, "seen": seen})


def servingJSON(node: str, serving: Mapping[str, str]) -> bytes:
    """
    The record, as stored, that C{node} serves C{serving} (see
    L{NodeRecord.serving}).
    """
    return _dumps({"node": node, "serving": dict(serving)})


def _dumps(record: dict[str, Any]) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode("utf-8")


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
    What one node told the cluster of itself, as its records say.

    @ivar node: Its name.
    @ivar seen: When it last wrote its C{seen} record, in seconds since the
        epoch by its own clock.
    @ivar serving: By domain set (as C{domainsLabel} shows it), the serial
        of the certificate it serves (see L{serialHex}), or L{PROVISIONAL}.
    """

    node: str
    seen: float
    serving: Mapping[str, str]


def _field(data: bytes | None, node: str, name: str, kind: type | tuple[type, ...]) -> Any:
    """
    The field C{name} of the record C{data} stored for C{node}.

    @raise ValueError: when C{data} is not a record of C{node} with that
        field of that C{kind}.
    """
    if data is None:
        raise ValueError("missing")
    try:
        record = json.loads(data)
        value = record[name]
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"not a node record: {error}") from None
    if record.get("node") != node or not isinstance(value, kind):
        raise ValueError(f"not a record of node {node}")
    return value


def readRecords(values: Mapping[str, bytes | None]) -> list[NodeRecord]:
    """
    The records of the nodes found in C{values} (the node records' keys
    and values), sorted by name: a node needs a C{seen} record that names
    it; one whose C{serving} record is missing or does not name it serves
    nothing known.
    """
    records = []
    nodes = sorted({key[len(NODES) :].rpartition("/")[0] for key in values})
    for node in nodes:
        try:
            parseNodeName(node)
            seen = _field(values.get(seenKey(node)), node, "seen", (int, float))
        except ValueError:
            continue
        try:
            serving = _field(values.get(servingKey(node)), node, "serving", dict)
        except ValueError:
            serving = {}
        # Shown to people as they are: serials and the provisional mark only.
        serving = {k: v for k, v in serving.items() if isinstance(v, str) and _SERVED.fullmatch(v)}
        records.append(NodeRecord(node, float(seen), serving))
    return records
