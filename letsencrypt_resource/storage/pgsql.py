"""
The queries of the PostgreSQL store, each a function of a psycopg
connection, run in a worker thread inside a transaction that the caller
commits.

Keys and lease names reach the database only as bound parameters, as
bytes (see L{keyBytes}): a folder's keys are found with a range scan of the
primary key, never with C{LIKE}.  Leases are timed by the database's
C{now()}, never the node's clock; every write first takes the one row of
C{letsencrypt_counter}, which numbers the change and orders the writes of
every node (so that the value-or-folder check cannot race, and changes
commit in the order of their numbers), then checks its fence in the same
transaction, against the lease row it locks with C{FOR SHARE}.
"""

from __future__ import annotations

from typing import Any

from .interface import MAX_VALUE, StaleFence, StorageError, ValueTooLarge

#: The channel every write notifies at commit.
CHANNEL = "letsencrypt_changes"
#: How long the changes are kept, for the nodes that reconnect to catch up.
RETENTION = "1 day"

#: The database's time, moved by C{%(skew)s} seconds (0 but in tests).
_NOW = "(now() + %(skew)s * interval '1 second')"


def keyBytes(key: str) -> bytes:
    """
    C{key} as the database keeps it: its UTF-8 bytes, a part's non-UTF-8
    bytes given back as they were read (C{surrogateescape}).
    """
    return key.encode("utf-8", "surrogateescape")


def keyText(data: bytes) -> str:
    """
    The key whose L{keyBytes} are C{data}.
    """
    return bytes(data).decode("utf-8", "surrogateescape")


def prefixRange(prefix: bytes) -> tuple[bytes, bytes | None]:
    """
    The bounds of the keys that start with C{prefix}: from C{prefix}
    included to the second bound excluded (C{None}: no end).
    """
    end = prefix.rstrip(b"\xff")
    if not end:
        return prefix, None
    return prefix, end[:-1] + bytes([end[-1] + 1])


def _inRange(column: str, prefix: bytes) -> tuple[str, dict[str, bytes]]:
    start, end = prefixRange(prefix)
    if end is None:
        return f"{column} >= %(start)s", {"start": start}
    return f"{column} >= %(start)s AND {column} < %(end)s", {"start": start, "end": end}


def checkPlace(connection: Any, key: str) -> None:
    """
    Check that C{key} is neither below a value nor a folder of other keys.

    @raise StorageError: when it is.
    """
    parts = key.split("/")
    above = [keyBytes("/".join(parts[:end])) for end in range(1, len(parts))]
    if above:
        row = connection.execute(
            "SELECT key FROM letsencrypt_values WHERE key = ANY(%s) LIMIT 1", (above,)
        ).fetchone()
        if row is not None:
            raise StorageError(key, f"{keyText(row[0])} is a value, not a folder")
    condition, params = _inRange("key", keyBytes(key + "/"))
    if connection.execute(
        f"SELECT 1 FROM letsencrypt_values WHERE {condition} LIMIT 1", params
    ).fetchone():
        raise StorageError(key, "is a folder of other keys")


#: A value, or C{NULL} in its place when it is larger than the bound
#: given as the first parameter: the database does not send it.
_BOUNDED = "CASE WHEN octet_length(value) <= %s THEN value END"


def _bounded(key: str, value: bytes | None) -> bytes | ValueTooLarge:
    """
    The C{value} of L{_BOUNDED} at C{key}, as bytes, or a L{ValueTooLarge}
    when it was left out for its size (a value is never C{NULL}).
    """
    if value is None:
        return ValueTooLarge(key)
    return bytes(value)


def load(connection: Any, key: str) -> bytes | None:
    """
    The value at C{key}, or C{None} (after checking that C{key} is not a
    folder nor below a value: a row found is neither).

    @raise StorageError: when the value is larger than L{MAX_VALUE} bytes
        (it is not fetched).
    """
    row = connection.execute(
        f"SELECT {_BOUNDED} FROM letsencrypt_values WHERE key = %s", (MAX_VALUE, keyBytes(key))
    ).fetchone()
    if row is not None:
        value = _bounded(key, row[0])
        if isinstance(value, ValueTooLarge):
            raise value
        return value
    checkPlace(connection, key)
    return None


def loadMany(connection: Any, keys: list[str]) -> dict[str, bytes | StorageError | None]:
    """
    The values at C{keys}, found by one query; C{None} for each key missing
    (after checking, as L{load} does, that it is not a folder nor below a
    value); a L{ValueTooLarge} for each value larger than L{MAX_VALUE}
    bytes (it is not fetched; the others are).
    """
    rows = connection.execute(
        f"SELECT key, {_BOUNDED} FROM letsencrypt_values WHERE key = ANY(%s)",
        (MAX_VALUE, [keyBytes(key) for key in keys]),
    )
    found = {}
    for row in rows:
        key = keyText(row[0])
        found[key] = _bounded(key, row[1])
    values: dict[str, bytes | StorageError | None] = {}
    for key in keys:
        values[key] = found.get(key)
        if values[key] is None:
            checkPlace(connection, key)
    return values


def listKeys(connection: Any, prefix: str) -> list[str]:
    """
    The keys that start with C{prefix}, sorted as C{str}.
    """
    condition, params = _inRange("key", keyBytes(prefix))
    rows = connection.execute(f"SELECT key FROM letsencrypt_values WHERE {condition}", params)
    return sorted(keyText(row[0]) for row in rows)


def write(connection: Any, key: str, value: bytes | None, fence: Any, origin: str) -> int:
    """
    Store C{value} at C{key} (or delete it, for C{None}) under C{fence}
    (an L{ILease} or C{None}), record the change in C{letsencrypt_changes}
    and notify its number at commit.

    @param origin: Who writes: the watches of the same origin are told by
        their process, and skip the change.
    @return: The change's number.
    @raise StaleFence: when C{fence}'s lease has a newer token.
    """
    change = connection.execute(
        "UPDATE letsencrypt_counter SET change = change + 1 RETURNING change"
    ).fetchone()[0]
    checkPlace(connection, key)
    if fence is not None:
        row = connection.execute(
            "SELECT token FROM letsencrypt_leases WHERE name = %s FOR SHARE",
            (keyBytes(fence.name),),
        ).fetchone()
        newest = 0 if row is None else row[0]
        if fence.token < newest:
            raise StaleFence(key, fence.name, fence.token, newest)
    if value is None:
        connection.execute("DELETE FROM letsencrypt_values WHERE key = %s", (keyBytes(key),))
    else:
        connection.execute(
            "INSERT INTO letsencrypt_values (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = now()",
            (keyBytes(key), value),
        )
    connection.execute(
        "INSERT INTO letsencrypt_changes (id, key, origin) VALUES (%s, %s, %s)",
        (change, keyBytes(key), origin),
    )
    connection.execute(f"DELETE FROM letsencrypt_changes WHERE at < now() - interval '{RETENTION}'")
    connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(change)))
    return int(change)


def changesSince(connection: Any, last: int) -> list[tuple[int, str, str]]:
    """
    The changes numbered after C{last} that are still kept, in order, as
    C{(number, origin, key)}.
    """
    rows = connection.execute(
        "SELECT id, origin, key FROM letsencrypt_changes WHERE id > %s ORDER BY id", (last,)
    ).fetchall()
    return [(int(n), origin, keyText(key)) for n, origin, key in rows]


def newestChange(connection: Any) -> int:
    """
    The number of the newest change.
    """
    return int(connection.execute("SELECT change FROM letsencrypt_counter").fetchone()[0])


def takeLease(
    connection: Any, name: str, seconds: float, holder: str, skew: float, reclaim: bool = False
) -> int | None:
    """
    Give the lease C{name} to C{holder} for C{seconds} unless it is held
    and has not expired, with a token one larger than its last.

    @param reclaim: Whether C{holder} may take it while it holds it
        itself: it abandoned it (its release failed), and the new token
        fences the abandoned one's writes.
    @return: The token, or C{None}.
    """
    row = connection.execute(
        "INSERT INTO letsencrypt_leases AS l (name, holder, token, expires_at) "
        f"VALUES (%(name)s, %(holder)s, 1, {_NOW} + %(seconds)s * interval '1 second') "
        "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
        "token = l.token + 1, expires_at = excluded.expires_at "
        f"WHERE l.expires_at IS NULL OR l.expires_at <= {_NOW} "
        "OR (%(reclaim)s AND l.holder = excluded.holder) "
        "RETURNING token",
        {
            "name": keyBytes(name),
            "holder": holder,
            "seconds": seconds,
            "skew": skew,
            "reclaim": reclaim,
        },
    ).fetchone()
    return None if row is None else int(row[0])


def renewLease(connection: Any, name: str, token: int, seconds: float, skew: float) -> bool:
    """
    Keep the lease C{name} with C{token} for C{seconds} from now.

    @return: Whether it was still that token's, and not released: one that
        expired is kept while nobody took it over.
    """
    row = connection.execute(
        f"UPDATE letsencrypt_leases SET expires_at = {_NOW} + %(seconds)s * interval '1 second' "
        "WHERE name = %(name)s AND token = %(token)s AND expires_at IS NOT NULL RETURNING 1",
        {"name": keyBytes(name), "token": token, "seconds": seconds, "skew": skew},
    ).fetchone()
    return row is not None


def releaseLease(connection: Any, name: str, token: int) -> None:
    """
    Let the lease C{name} go, if C{token} still holds it.
    """
    connection.execute(
        "UPDATE letsencrypt_leases SET expires_at = NULL, holder = NULL "
        "WHERE name = %s AND token = %s",
        (keyBytes(name), token),
    )


def releaseAll(connection: Any, holder: str) -> None:
    """
    Let every lease of C{holder} go.
    """
    connection.execute(
        "UPDATE letsencrypt_leases SET expires_at = NULL, holder = NULL WHERE holder = %s",
        (holder,),
    )


def liveLeases(connection: Any, prefix: str, skew: float) -> dict[str, tuple[str, float]]:
    """
    The leases held now whose names start with C{prefix}, by one query: for
    each, its holder and when it expires, in seconds since the epoch by the
    database's clock.
    """
    condition, params = _inRange("name", keyBytes(prefix))
    rows = connection.execute(
        "SELECT name, holder, extract(epoch FROM expires_at) FROM letsencrypt_leases "
        f"WHERE {condition} AND holder IS NOT NULL AND expires_at > {_NOW}",
        {**params, "skew": skew},
    )
    return {keyText(name): (str(holder), float(until)) for name, holder, until in rows}


def holderNode(holder: str) -> str:
    """
    The node (or host) name in a lease's C{holder}: what comes before its
    process id and random part (see C{PostgresStorage.holder}).
    """
    return holder.rsplit(":", 2)[0]
