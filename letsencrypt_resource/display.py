"""
What the operations command prints for people: the status table and what
a renewal did.  Both read the JSON-ready rows of
L{letsencrypt_resource.operations.Operations}.
"""

from __future__ import annotations

from typing import Any

#: Why a set renews at its planned time, as "renews at ... because ...",
#: for the renewal rules whose event text reads as the present.
_BECAUSE = {
    "lifetime": "most of its lifetime will have passed",
    "ari": "the CA suggests it (ARI renewal window)",
    "emergency": "it will be close to expiry",
}

#: What a service serves, by the C{serving} values of a row.
_SERVED = {"ca": "CA", "provisional": "provisional"}


def printableText(text: str) -> str:
    """
    C{text} with every character that is not printable (a line break, an
    escape sequence a terminal would act on) escaped, as Python escapes
    it: what the status prints may come from a certificate (its issuer),
    a CA or the storage.
    """
    if text.isprintable():
        return text
    return "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )


def _nextAction(row: dict[str, Any]) -> str:
    """
    What the resource will do next for the set of C{row}, and why.
    """
    kept = " (a forced renewal kept until it can start)" if row.get("forced") else ""
    if row["retry"]:
        return f"retry at {row['next_check']} after {row['failures']} failed attempts{kept}"
    because = _BECAUSE.get(row["reason"], row["why"])
    return f"renews at {row['next_check']} because {because}{kept}"


def serving(row: dict[str, Any]) -> str:
    """
    What each service of C{row} serves, or that no server runs.
    """
    if not row["server_running"]:
        return "no server running"
    return ", ".join(f"{service}: {_SERVED[served]}" for service, served in row["serving"].items())


def formatStatus(rows: list[dict[str, Any]], serverRunning: bool, stateDirectory: str) -> str:
    """
    The status rows as a table for people, after a line saying so when no
    server runs on C{stateDirectory}.
    """
    headers = ["names", "serving", "issuer", "CA", "not after", "days left", "next", "last error"]
    table = [headers]
    for row in rows:
        table.append(
            [
                ", ".join(row["names"]),
                serving(row),
                "provisional" if row["provisional"] else row["issuer"] or "",
                row.get("ca") or "",
                row["not_after"] or "",
                "" if row["days_left"] is None else f"{row['days_left']:.1f}",
                _nextAction(row),
                row["last_error"] or "",
            ]
        )
    lines = _aligned(table)
    if not serverRunning:
        lines.insert(
            0,
            f"No server is running on the state directory {stateDirectory}: this "
            "is the state it stored, and no service is serving it.",
        )
    if rows and "cluster" in rows[0]:
        lines += ["", *formatCluster(rows)]
    return "\n".join(lines)


def _aligned(table: list[list[str]]) -> list[str]:
    """
    The lines of C{table}, its columns aligned, a rule under its headers,
    each cell made printable (L{printableText}).
    """
    table = [[printableText(cell) for cell in line] for line in table]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def formatCluster(rows: list[dict[str, Any]]) -> list[str]:
    """
    The cluster view of the status rows, for people: each node and when it
    was last seen, then a table of each set's order lease and what each
    node serves for it.
    """
    view = rows[0]["cluster"]
    if "error" in view:
        return [f"Cluster: the database cannot be read: {printableText(view['error'])}"]
    nodes = view["nodes"]
    lines = ["Cluster nodes:"]
    for name, node in nodes.items():
        stale = ", STALE" if node["stale"] else ""
        lines.append(f"  {printableText(name)}: last seen {node['last_seen']}{stale}")
    if not nodes:
        lines.append("  none has written its record yet")
    table = [["names", "order lease", *nodes]]
    for row in rows:
        lease = row["cluster"]["lease"]
        table.append(
            [
                ", ".join(row["names"]),
                "none" if lease is None else f"{lease['node']} until {lease['until']}",
                *(node["serving"] or "-" for node in row["cluster"]["nodes"].values()),
            ]
        )
    return [*lines, "", *_aligned(table)]


def formatRenewal(rows: list[dict[str, Any]]) -> str:
    """
    What C{renew} did for each set: renewed, with the new expiry, or not
    due, with when it will be; each line made printable (L{printableText}).
    """
    lines = []
    for row in rows:
        names = ", ".join(row["names"])
        if row["outcome"] == "renewed":
            lines.append(f"{names}: renewed, valid until {row['not_after']}")
        else:
            lines.append(f"{names}: not due, {_nextAction(row)}")
    return "\n".join(printableText(line) for line in lines)
