"""
Tests for L{letsencrypt_resource.config.checkServedPaths}: no C{https}
service may publish a place that holds secrets, whether its C{path} names
it as written or reaches it through a symbolic link.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource.config import (
    ConfigurationError,
    loadConfiguration,
    parseConfiguration,
)
from letsencrypt_resource.host import checkFileSystem
from tests.helpers.configuration import BASE, resource, service

#: The configuration file the parse-time tests pretend to have read.
CONFIGURATION_FILE = os.path.join(BASE, "server.ini")


class WrittenPathTests(SynchronousTestCase):
    """
    At parse time, paths are compared as written, made absolute.
    """

    def assertRefused(self, text: str, *fragments: str) -> None:
        """
        Assert that C{text} is refused at the service's C{path}, with a
        message holding every one of C{fragments}.
        """
        error = self.assertRaises(
            ConfigurationError, parseConfiguration, text, BASE, CONFIGURATION_FILE
        )
        self.assertEqual((error.section, error.option), ("services/s1", "path"))
        for fragment in fragments:
            self.assertIn(fragment, error.message)
        self.assertIn("the service would publish its secrets", error.message)

    def test_pathIsStateDirectory(self) -> None:
        """
        A service serving the state directory itself is refused, naming the
        resource's option.
        """
        self.assertRefused(
            resource(state_directory="/var/lib/acme") + service(path="/var/lib/acme/"),
            "/var/lib/acme is [resources/r1] state_directory /var/lib/acme",
        )

    def test_pathContainsDefaultStateDirectory(self) -> None:
        """
        The default state directory sits beside the configuration file, so
        serving the configuration's folder is refused.
        """
        self.assertRefused(
            resource() + service(path="."),
            f"{BASE} contains [resources/r1] state_directory {BASE}/lets-encrypt",
        )

    def test_pathInsideStateDirectory(self) -> None:
        """
        A folder inside the state directory holds keys too.
        """
        self.assertRefused(
            resource(state_directory="/var/lib/acme") + service(path="/var/lib/acme/certificates"),
            "/var/lib/acme/certificates is inside [resources/r1] state_directory",
        )

    def test_pathContainsStoreDirectory(self) -> None:
        """
        The store directory holds exported private keys.
        """
        self.assertRefused(
            resource(state_directory="/var/lib/acme", store_directory="/srv/x/tls")
            + service(path="/srv/x"),
            "/srv/x contains [resources/r1] store_directory /srv/x/tls",
        )

    def test_pathInsideStoreDirectory(self) -> None:
        """
        A folder inside the store directory is one certificate's exported
        key and chain.
        """
        self.assertRefused(
            resource(store_directory="/etc/ssl/acme")
            + service(path="/etc/ssl/acme/files.example.com"),
            "is inside [resources/r1] store_directory /etc/ssl/acme",
        )

    def test_pathContainsAccountKey(self) -> None:
        """
        A folder holding the C{account_key} file is refused.
        """
        self.assertRefused(
            resource(account_key="/srv/files/keys/account.pem") + service(path="/srv/files"),
            "/srv/files contains [resources/r1] account_key /srv/files/keys/account.pem",
        )

    def test_pathContainsConfigurationFile(self) -> None:
        """
        The configuration file may hold the external account binding key: a
        folder holding it is refused even when the state is elsewhere.
        """
        self.assertRefused(
            resource(state_directory="/var/lib/acme", eab_kid="k", eab_hmac_key="c2Vj")
            + service(path="/etc"),
            f"/etc contains the configuration file {CONFIGURATION_FILE}",
        )

    def test_rootIsRefused(self) -> None:
        """
        Serving C{/} publishes everything.
        """
        self.assertRefused(
            resource(state_directory="/var/lib/acme") + service(path="/"),
            "/ contains [resources/r1] state_directory /var/lib/acme",
        )

    def test_relativeBaseMadeAbsolute(self) -> None:
        """
        With a relative base folder, paths are made absolute before they are
        compared.
        """
        error = self.assertRaises(
            ConfigurationError,
            parseConfiguration,
            resource(state_directory="state") + service(path=os.getcwd()),
            ".",
        )
        self.assertIn(
            f"{os.getcwd()} contains [resources/r1] state_directory state",
            error.message,
        )

    def test_siblingsWithACommonPrefix(self) -> None:
        """
        Paths are compared by whole components: C{/srv/files} does not
        contain C{/srv/files-state}, and an C{acme_ca_file} (public
        certificates only) may be served.
        """
        configuration = parseConfiguration(
            resource(
                state_directory="/srv/files-state",
                store_directory="/srv/filesexport",
                acme_ca_file="/srv/files/ca.pem",
            )
            + service(path="/srv/files"),
            BASE,
            CONFIGURATION_FILE,
        )
        self.assertEqual(configuration.services[0].path, "/srv/files")

    def test_loadedFileInServedFolder(self) -> None:
        """
        L{loadConfiguration} knows the file it read: a service serving the
        folder of a configuration whose state is elsewhere is refused.
        """
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        path = os.path.join(folder, "server.ini")
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(resource(state_directory="/var/lib/acme") + service(path=folder))
        error = self.assertRaises(ConfigurationError, loadConfiguration, path)
        self.assertEqual((error.section, error.option), ("services/s1", "path"))
        self.assertIn(f"contains the configuration file {path}", error.message)


class ResolvedPathTests(SynchronousTestCase):
    """
    At start, L{checkFileSystem} compares the paths once symbolic links are
    followed, so that an alias cannot slip past the parse-time check.
    """

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        self.files = os.path.join(self.root, "files")
        self.state = os.path.join(self.root, "state")
        os.makedirs(self.files)
        os.makedirs(self.state)
        self.configurationFile = os.path.join(self.root, "etc", "server.ini")

    def parse(self, text: str) -> ConfigurationError:
        """
        Parse C{text}, which must pass the parse-time check, then return the
        error L{checkFileSystem} raises.
        """
        configuration = parseConfiguration(
            text, os.path.dirname(self.configurationFile), self.configurationFile
        )
        error = self.assertRaises(ConfigurationError, checkFileSystem, configuration)
        self.assertEqual((error.section, error.option), ("services/s1", "path"))
        return error

    def test_servedLinkToStateDirectory(self) -> None:
        """
        A served C{path} that is a link to the state directory is refused,
        naming both paths as written and as resolved.
        """
        link = os.path.join(self.root, "public")
        os.symlink(self.state, link)
        error = self.parse(resource(state_directory=self.state) + service(path=link))
        self.assertIn(
            f"{link} is [resources/r1] state_directory {self.state} (once links "
            f"are followed, {self.state} and {self.state})",
            error.message,
        )

    def test_stateDirectoryThroughLinkInsideServedFolder(self) -> None:
        """
        A C{state_directory} written through a link that leads into the
        served folder is refused.
        """
        inside = os.path.join(self.files, "hidden-state")
        os.mkdir(inside)
        alias = os.path.join(self.root, "alias")
        os.symlink(inside, alias)
        error = self.parse(resource(state_directory=alias) + service(path=self.files))
        self.assertIn(
            f"{self.files} contains [resources/r1] state_directory {alias}",
            error.message,
        )

    def test_configurationFileLinkedFromServedParent(self) -> None:
        """
        A configuration file whose folder is a link into the served folder
        is refused.
        """
        os.mkdir(os.path.join(self.files, "etc"))
        os.symlink(os.path.join(self.files, "etc"), os.path.join(self.root, "etc"))
        error = self.parse(resource(state_directory=self.state) + service(path=self.files))
        self.assertIn("contains the configuration file", error.message)

    def test_separateFoldersPass(self) -> None:
        """
        A served folder apart from every secret passes the check.
        """
        configuration = parseConfiguration(
            resource(state_directory=self.state) + service(path=self.files),
            self.root,
            self.configurationFile,
        )
        checkFileSystem(configuration)
