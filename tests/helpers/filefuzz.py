"""
A served folder laid out for attacks, and the property every answer of the
C{https} file service must have: never a 5xx, never a byte of what lies
outside the folder or is hidden, only its files, listings, redirects to
its folders, 404, 405 with C{Allow: GET, HEAD}, or Twisted's refusals.

The requests are those of L{tests.challengefuzz}, with this folder's names
among their path segments.
"""

from __future__ import annotations

import os

import attrs

from tests.helpers.challengefuzz import REFUSALS, Answer, FuzzRequest, commonProblems

#: The content outside the served folder that links point to.
SECRET = b"-----BEGIN PRIVATE KEY-----\nnot for the web\n"
#: The content of the hidden files inside it.
HIDDEN = b"hidden: not for the web\n"
#: The regular files served, by path in the folder.
FILES = {
    "hello.txt": b"Hello over HTTPS.\n",
    "sub/inner.txt": b"Inner file.\n",
    "site/index.html": b"<p>Index page.</p>\n",
}
#: Links that stay inside the folder: served.
LINKS_IN = {"inside": "hello.txt", "insideDir": "sub", "sub/up": ".."}
#: Links out of the folder, to hidden names, or to nothing: all 404.
LINKS_OUT = {
    "outFile": "../outside/secret.pem",
    "outDir": "../outside",
    "absOut": "{outside}/secret.pem",
    "sub/escape": "../../outside/secret.pem",
    "toHidden": ".hidden.txt",
    "loop": "loop",
    "dangling": "missing",
}
#: Hidden files, 404 unless C{hidden_files = yes}.
HIDDEN_FILES = (".hidden.txt", ".git/config")
#: Path segments worth trying in this folder.
NAMES = tuple(
    sorted(
        {
            part
            for path in [*FILES, *LINKS_IN, *LINKS_OUT, *HIDDEN_FILES, "fifo"]
            for part in path.split("/")
        }
        | {"outside", "secret.pem"}
    )
)


@attrs.frozen
class Tree:
    """
    A folder to serve, beside an C{outside} folder holding L{SECRET}.

    @ivar served: The folder to serve.
    @ivar outside: The folder beside it.
    """

    served: str
    outside: str


def makeTree(base: str) -> Tree:
    """
    Lay out, in the new folder C{base}, a served folder with L{FILES},
    L{LINKS_IN}, L{LINKS_OUT}, L{HIDDEN_FILES} and a FIFO, and the folder
    outside it. Its paths are absolute, so that links to them lead there
    from anywhere.
    """
    base = os.path.abspath(base)
    served, outside = os.path.join(base, "served"), os.path.join(base, "outside")
    os.makedirs(outside)
    with open(os.path.join(outside, "secret.pem"), "wb") as stream:
        stream.write(SECRET)
    for name, content in [*FILES.items(), *((h, HIDDEN) for h in HIDDEN_FILES)]:
        path = os.path.join(served, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(content)
    for name, target in [*LINKS_IN.items(), *LINKS_OUT.items()]:
        os.symlink(target.format(outside=outside), os.path.join(served, name))
    os.mkfifo(os.path.join(served, "fifo"))
    return Tree(served, outside)


def problems(request: FuzzRequest, answer: Answer) -> list[str]:
    """
    Everything wrong with C{answer} to C{request} from a file service on a
    L{makeTree} folder without hidden files; empty when all is well.
    """
    found = commonProblems(answer)
    if answer.code is None:
        return found
    if SECRET in answer.raw or HIDDEN in answer.raw:
        found.append("content from outside the folder or hidden")
    code = answer.code
    body = b"" if request.method == b"HEAD" else answer.body
    if code == 200:
        if body and body not in FILES.values() and not body.startswith(b"<!DOCTYPE html>"):
            found.append(f"200 with an unknown body {body[:60]!r}")
    elif code == 301:
        location = answer.headers.get(b"location", b"")
        if not location.endswith(b"/") or b"/" in location[:-1] or b":" in location:
            found.append(f"redirect elsewhere than to a folder: {location!r}")
    elif code == 404:
        if body not in (b"Not found.", b""):
            found.append(f"404 with body {body[:60]!r}")
    elif code == 405:
        if answer.headers.get(b"allow") != b"GET, HEAD":
            found.append(f"405 without Allow: GET, HEAD: {answer.raw[:200]!r}")
    elif code not in {206, 304, 412, 416} | REFUSALS:
        found.append(f"unexpected status {code}")
    return found
