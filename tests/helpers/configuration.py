"""
The configurations the tests share: the INI of the end-to-end tests
(L{CONFIGURATION}, serving L{HELLO}), and builders of the sections of
the configuration tests.
"""

from __future__ import annotations

from letsencrypt_resource.testing.pebble import RESOURCE_SECTION

HELLO = b"Hello over TLS.\n"


CONFIGURATION = (
    "[server]\nname = integration.example.test\n\n"
    + RESOURCE_SECTION
    + """\
store_directory = exported

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = {ports[0]}
path = public
ssl_domains = files.example.test, www.example.test

[services/files-again]
type = https
name = files-again-https
address = 127.0.0.1
port = {ports[1]}
path = public
ssl_domains = WWW.example.test, files.example.test

[services/reports]
type = https
name = reports-https
address = 127.0.0.1
port = {ports[2]}
path = public
ssl_domains = reports.example.test
"""
)


#: A server that starts without reaching a CA (its orders fail), serving
#: C{public} as C{files.example.test}: format it with C{port} and C{extra}
#: (more option lines of the resource, or nothing).
OFFLINE_SERVER = """\
[server]
name = offline test

[resources/le]
type = lets-encrypt
acme_url = https://127.0.0.1:9/directory
agree_tos = yes
challenge_site = no
{extra}state_directory = state

[services/files]
type = https
address = 127.0.0.1
port = {port}
path = public
ssl_domains = files.example.test
"""


#: A cluster node serving C{files.example.test} from C{public}: format it
#: as L{RESOURCE_SECTION} and with C{extra} (more option lines of the
#: resource, or nothing), C{database}, C{keyFile}, C{node} and C{port}.
CLUSTER_NODE = (
    RESOURCE_SECTION
    + """\
{extra}cluster_database = {database}
cluster_key_file = {keyFile}
node_name = {node}

[services/files]
type = https
name = files-https
address = 127.0.0.1
port = {port}
path = public
ssl_domains = files.example.test
"""
)

#: The folder relative paths are resolved against in these tests.
BASE = "/etc/files-server"


def section(header: str, options: dict[str, str | None]) -> str:
    """
    The INI text of section C{header}; options set to C{None} are left out.
    """
    lines = [f"[{header}]"]
    lines.extend(f"{key} = {value}" for key, value in options.items() if value is not None)
    return "\n".join(lines) + "\n\n"


def resource(ident: str = "r1", **overrides: str | None) -> str:
    """
    A valid C{lets-encrypt} resource section, with some options changed.
    """
    options: dict[str, str | None] = {"type": "lets-encrypt", "address": "0.0.0.0"}
    options.update(overrides)
    return section(f"resources/{ident}", options)


def service(ident: str = "s1", **overrides: str | None) -> str:
    """
    A valid C{https} service section, with some options changed.
    """
    options: dict[str, str | None] = {
        "type": "https",
        "address": "0.0.0.0",
        "ssl_domains": "files.example.com",
        "path": "/srv/files",
    }
    options.update(overrides)
    return section(f"services/{ident}", options)
