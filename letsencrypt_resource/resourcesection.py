"""
What a C{[resources/...]} section of the configuration file says about
itself, known without the configuration module (L{letsencrypt_resource.config},
which takes it from here): its type, how C{enabled} reads, the default state
directory, and the names of its options, so that the operations command's
quick C{status} (L{letsencrypt_resource.quickstatus}) reads the section as
the configuration does.
"""

from __future__ import annotations

import configparser

#: The C{type} of the resource section.
RESOURCE_TYPE = "lets-encrypt"
#: C{enabled} when the section does not say.
ENABLED_DEFAULT = "yes"
#: The state directory, beside the configuration file, when the section
#: does not say.
DEFAULT_STATE_DIRECTORY = "lets-encrypt"

#: The options a resource section may set; C{tests.test_quickstatus}
#: checks them against the configuration's.  One missing here only makes
#: the quick C{status} leave a file that sets it to the full command.
RESOURCE_OPTION_NAMES = frozenset(
    {
        "type",
        "enabled",
        "name",
        "description",
        "debug",
        "address",
        "port",
        "endpoint",
        "challenge_site",
        "acme_url",
        "state_directory",
        "store_directory",
        "redirect_url",
        "acme_ca_file",
        "key_type",
        "check_interval",
        "profile",
        "challenge_types",
        "reuse_key",
        "agree_tos",
        "contact_email",
        "account_key",
        "eab_kid",
        "eab_hmac_key",
        "deploy_command",
        "deploy_timeout",
        "metrics_address",
        "metrics_port",
        "metrics_endpoint",
        "fallback_cas",
        "fallback_after",
        "fallback_after_time",
        "cluster_database",
        "cluster_key_file",
        "node_name",
    }
)


def parseBoolean(value: str) -> bool:
    """
    A yes-or-no option's value, as C{configparser} reads it (C{yes},
    C{on}, C{true}, C{1} and their opposites, in any case).

    @raise ValueError: when it is none of those.
    """
    try:
        return configparser.ConfigParser.BOOLEAN_STATES[value.strip().lower()]
    except KeyError:
        raise ValueError(f"{value!r} is not yes or no") from None
