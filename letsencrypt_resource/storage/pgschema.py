"""
The tables of the PostgreSQL store, created and migrated by the product.

Every table's name starts with C{letsencrypt_}, so that the store can share
a schema with others.  A key or a lease name is C{bytea}: the key rule
(L{checkKey}) lets a part hold bytes that are not UTF-8, which C{text}
cannot; as bytes, keys also sort and range-scan the same whatever the
database's collation.

Migration runs in one transaction under a transaction-level advisory lock,
so that nodes starting together migrate once: the others wait for the lock,
then find the schema current.  A node whose schema is already current
needs no C{CREATE} privilege (the check reads the version table only).
"""

from __future__ import annotations

from typing import Any

from .interface import StorageError

#: The advisory lock that migrations take (any constant bigint works, as
#: long as every node uses the same): "letsenc" in ASCII.
MIGRATION_LOCK = 0x6C657473656E63

#: The statements of each schema version, from the first.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE letsencrypt_values (
            key bytea PRIMARY KEY,
            value bytea NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE letsencrypt_leases (
            name bytea PRIMARY KEY,
            holder text,
            token bigint NOT NULL,
            expires_at timestamptz)""",
        """CREATE TABLE letsencrypt_counter (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            change bigint NOT NULL)""",
        "INSERT INTO letsencrypt_counter (change) VALUES (0)",
        """CREATE TABLE letsencrypt_changes (
            id bigint PRIMARY KEY,
            key bytea NOT NULL,
            origin text NOT NULL,
            at timestamptz NOT NULL DEFAULT now())""",
        "CREATE INDEX letsencrypt_changes_at ON letsencrypt_changes (at)",
    ],
]


def schemaVersion(connection: Any) -> int:
    """
    The schema version of the database C{connection} is on: 0 when it has
    no table of the store yet.
    """
    # pg_tables is read with the statement's snapshot, which sees the
    # table another node has just created (to_regclass's cache may not).
    row = connection.execute(
        "SELECT count(*) FROM pg_catalog.pg_tables "
        "WHERE schemaname = current_schema() AND tablename = 'letsencrypt_schema'"
    ).fetchone()
    if not row[0]:
        return 0
    row = connection.execute("SELECT coalesce(max(version), 0) FROM letsencrypt_schema").fetchone()
    return int(row[0])


def migrate(connection: Any) -> int:
    """
    Bring the schema to the newest version, under L{MIGRATION_LOCK}, in
    one transaction that C{connection} (a psycopg connection not in a
    transaction) commits.

    @return: How many versions were applied: 0 when it was current.
    @raise StorageError: when the schema is newer than this code knows.
    """
    with connection.transaction():
        if schemaVersion(connection) == len(MIGRATIONS):
            return 0
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        current = schemaVersion(connection)
        if current > len(MIGRATIONS):
            raise StorageError(
                "schema",
                f"the database's schema is version {current}, newer than this "
                f"program's {len(MIGRATIONS)}",
            )
        if current == 0:
            connection.execute(
                "CREATE TABLE letsencrypt_schema ("
                " version integer PRIMARY KEY,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                connection.execute(statement)
            connection.execute("INSERT INTO letsencrypt_schema (version) VALUES (%s)", (version,))
        return len(MIGRATIONS) - current
