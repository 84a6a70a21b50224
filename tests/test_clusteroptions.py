"""
The cluster options of the C{lets-encrypt} resource (C{cluster_database},
C{cluster_key_file}, C{node_name}), the check of the key file, and the
sealing of values with the key made from it.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from unittest import mock

from twisted.internet.defer import Deferred
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from letsencrypt_resource.cli import run
from letsencrypt_resource.clusteroptions import MAX_NODE_NAME, defaultNodeName
from letsencrypt_resource.config import ConfigurationError, parseConfiguration
from letsencrypt_resource.host import checkCluster
from letsencrypt_resource.storage.sealing import (
    MAGIC,
    KeyFileError,
    Sealer,
    Unsealable,
    deriveKey,
    readKeyFile,
)
from tests.helpers.configuration import BASE, resource, service

SECTION = "resources/r1"


def parse(**overrides: str | None):  # type: ignore[no-untyped-def]
    """
    Parse a resource with C{overrides} beside a service.
    """
    return parseConfiguration(resource(**overrides) + service(), BASE)


class ClusterOptionTests(SynchronousTestCase):
    """
    The three options, as the configuration file gives them.
    """

    def assertRefused(self, option: str, fragment: str, **overrides: str) -> ConfigurationError:
        """
        Assert that parsing with C{overrides} fails at C{option}, with a
        message holding C{fragment}.
        """
        error = self.assertRaises(ConfigurationError, parse, **overrides)
        self.assertEqual((error.section, error.option), (SECTION, option))
        self.assertIn(fragment, error.message)
        return error

    def test_defaults(self) -> None:
        """
        Without the options, the resource is a single node named after
        the host.
        """
        options = parse().resource
        assert options is not None
        self.assertIsNone(options.clusterDatabase)
        self.assertIsNone(options.clusterKeyFile)
        self.assertEqual(options.nodeName, defaultNodeName())

    def test_cluster(self) -> None:
        """
        A connection string, a key file (relative to the configuration's
        folder) and a node name are taken as given.
        """
        options = parse(
            cluster_database="host=/run/postgresql dbname=certificates",
            cluster_key_file="cluster.key",
            node_name="node-2",
        ).resource
        assert options is not None
        self.assertEqual(options.clusterDatabase, "host=/run/postgresql dbname=certificates")
        self.assertEqual(options.clusterKeyFile, os.path.join(BASE, "cluster.key"))
        self.assertEqual(options.nodeName, "node-2")

    def test_uri(self) -> None:
        """
        A URI without a password is a connection string too.
        """
        options = parse(
            cluster_database="postgresql://le@db.example.com/certificates",
            cluster_key_file="/etc/k",
        ).resource
        assert options is not None
        self.assertEqual(options.clusterDatabase, "postgresql://le@db.example.com/certificates")

    def test_passwordRefused(self) -> None:
        """
        A password in a connection string or a URI is refused, naming
        C{cluster_database} and where passwords go, without quoting it.
        """
        for text in (
            "host=db password=hunter2",
            "postgresql://le:hunter2@db/certificates",
            "postgresql://le@db/certificates?password=hunter2",
        ):
            error = self.assertRefused(
                "cluster_database", "PGPASSFILE", cluster_database=text, cluster_key_file="/k"
            )
            self.assertNotIn("hunter2", str(error))

    def test_invalidRefused(self) -> None:
        """
        Text libpq cannot parse is refused without being quoted.
        """
        error = self.assertRefused(
            "cluster_database",
            "is not a valid libpq connection string",
            cluster_database="host='secret",
            cluster_key_file="/k",
        )
        self.assertNotIn("secret", str(error))

    def test_keyFileRequired(self) -> None:
        """
        A cluster database without a key file is refused, naming
        C{cluster_key_file}.
        """
        self.assertRefused("cluster_key_file", "is required", cluster_database="host=db")

    def test_nodeNames(self) -> None:
        """
        A node name with a space, a control character, or too long, is
        refused.
        """
        for name in ("a b", "a\x1bb", "-a", "n" * (MAX_NODE_NAME + 1)):
            self.assertRefused("node_name", "letters, digits", node_name=name)

    def test_defaultNodeName(self) -> None:
        """
        A host name with characters a node name may not hold gives a valid
        node name all the same.
        """
        with mock.patch("socket.gethostname", return_value="é" + "h" * 100):
            name = defaultNodeName()
        self.assertEqual(name, "h" * MAX_NODE_NAME)
        with mock.patch("socket.gethostname", return_value="é"):
            self.assertEqual(defaultNodeName(), "node")

    def test_keyFileNotServed(self) -> None:
        """
        A service may not serve the folder holding the key file.
        """
        error = self.assertRaises(
            ConfigurationError,
            parse,
            cluster_database="host=db",
            cluster_key_file="/srv/files/cluster.key",
        )
        self.assertEqual((error.section, error.option), ("services/s1", "path"))
        self.assertIn("cluster_key_file", error.message)


class KeyFileTests(SynchronousTestCase):
    """
    L{readKeyFile} and L{checkCluster} refuse a key file that is short,
    open to others, or not a file.
    """

    def keyFile(self, data: bytes | None = None, mode: int = 0o600) -> str:
        """
        A key file holding C{data} (32 random bytes by default), with
        C{mode}.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as stream:
            stream.write(os.urandom(32) if data is None else data)
        os.chmod(path, mode)
        return path

    def test_read(self) -> None:
        """
        A file of 32 bytes or more, for its owner only, is read whole.
        """
        data = os.urandom(48)
        self.assertEqual(readKeyFile(self.keyFile(data)), data)

    def test_short(self) -> None:
        """
        A file of fewer than 32 bytes is refused, saying how to make one.
        """
        path = self.keyFile(b"k" * 31)
        error = self.assertRaises(KeyFileError, readKeyFile, path)
        self.assertEqual(error.path, path)
        self.assertIn("head -c 32 /dev/urandom", str(error))

    def test_openToOthers(self) -> None:
        """
        A file its group or others may read (or write) is refused.
        """
        for mode in (0o640, 0o604, 0o620, 0o644):
            error = self.assertRaises(KeyFileError, readKeyFile, self.keyFile(mode=mode))
            self.assertIn("chmod 600", str(error))

    def test_otherOwner(self) -> None:
        """
        A file of another user (who could replace it) is refused.
        """
        if os.geteuid() != 0:
            raise SkipTest("only root can give a file to another user")
        path = self.keyFile()
        os.chown(path, 65534, 65534)
        error = self.assertRaises(KeyFileError, readKeyFile, path)
        self.assertIn("belongs to user 65534", str(error))

    def test_notAFile(self) -> None:
        """
        A folder, or nothing, is refused.
        """
        folder = self.mktemp()
        os.mkdir(folder, 0o700)
        self.assertIn(
            "not a regular file", str(self.assertRaises(KeyFileError, readKeyFile, folder))
        )
        missing = self.assertRaises(KeyFileError, readKeyFile, folder + "/none")
        self.assertIn("cannot be read", str(missing))

    def test_fifo(self) -> None:
        """
        A FIFO planted at the key file's path, with no writer, is refused
        at once instead of waited on for ever.
        """
        path = os.path.abspath(self.mktemp())
        os.mkfifo(path, 0o600)
        found: list[str] = []
        reader = threading.Thread(
            target=lambda: found.append(str(self.assertRaises(KeyFileError, readKeyFile, path))),
            daemon=True,
        )
        reader.start()
        reader.join(10)
        if reader.is_alive():
            # Free the reader: a writer that opens, then closes, ends its wait.
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            reader.join()
            self.fail("readKeyFile waited on a FIFO")
        [message] = found
        self.assertIn("not a regular file", message)

    def test_notRandom(self) -> None:
        """
        A file of one byte repeated, of a short pattern, or a passphrase
        (text shorter than base64 of 32 bytes) is refused, saying how to
        make a good one; the base64 or hex of 32 random bytes, and random
        bytes, pass.
        """
        for data in (
            b"\0" * 32,
            b"k" * 64,
            b"0123456789" * 4,
            b"correct horse battery staple 42\n",
        ):
            error = self.assertRaises(KeyFileError, readKeyFile, self.keyFile(data))
            self.assertIn("head -c 32 /dev/urandom", str(error))
        for data in (
            base64.b64encode(os.urandom(32)) + b"\n",
            os.urandom(32).hex().encode(),
            os.urandom(32),
            # The hex of random bytes may lack several of the 16 digits
            # (one in four lacks at least one): 8 different ones pass.
            b"0123456789abcdef0123456789abcdef01234567012345670123456701234567",
        ):
            self.assertEqual(readKeyFile(self.keyFile(data)), data)

    def test_checkCluster(self) -> None:
        """
        The server's checks refuse a bad key file naming
        C{cluster_key_file} and the file; a good one passes.
        """
        bad = self.keyFile(mode=0o644)
        configuration = parseConfiguration(
            resource(cluster_database="host=db", cluster_key_file=bad) + service(), BASE
        )
        error = self.assertRaises(ConfigurationError, checkCluster, configuration)
        self.assertEqual((error.section, error.option), (SECTION, "cluster_key_file"))
        self.assertIn(bad, error.message)
        os.chmod(bad, 0o600)
        checkCluster(configuration)


class SealerTests(SynchronousTestCase):
    """
    L{Sealer} hides values, and opens only what it sealed for the same
    storage key.
    """

    sealer = Sealer(deriveKey(b"k" * 32), "node-1")

    def test_roundTrip(self) -> None:
        """
        A sealed value opens to the value and the node that sealed it.
        """
        sealed = self.sealer.seal("certificates/a.pem", b"secret value")
        self.assertTrue(sealed.startswith(MAGIC))
        self.assertNotIn(b"secret value", sealed)
        self.assertEqual(
            self.sealer.unseal("certificates/a.pem", sealed), ("node-1", b"secret value")
        )

    def test_randomNonce(self) -> None:
        """
        The same value sealed twice gives two different sealed values.
        """
        self.assertNotEqual(self.sealer.seal("k", b"v"), self.sealer.seal("k", b"v"))

    def test_otherKeyFile(self) -> None:
        """
        A value sealed with another key file does not open.
        """
        other = Sealer(deriveKey(b"j" * 32), "node-2")
        error = self.assertRaises(Unsealable, self.sealer.unseal, "k", other.seal("k", b"v"))
        self.assertIn("cluster_key_file", str(error))

    def test_moved(self) -> None:
        """
        A value moved to another storage key does not open.
        """
        sealed = self.sealer.seal("certificates/a.pem", b"v")
        self.assertRaises(Unsealable, self.sealer.unseal, "certificates/b.pem", sealed)

    def test_nodeNameBound(self) -> None:
        """
        The node name a value carries cannot be changed.
        """
        sealed = self.sealer.seal("k", b"v")
        forged = sealed.replace(b"node-1", b"node-9", 1)
        self.assertRaises(Unsealable, self.sealer.unseal, "k", forged)

    def test_tampered(self) -> None:
        """
        A value with one bit changed, cut short, or not sealed at all,
        does not open.
        """
        sealed = bytearray(self.sealer.seal("k", b"value"))
        sealed[-1] ^= 1
        for data in (bytes(sealed), bytes(sealed[:12]), b"plain", MAGIC, b""):
            self.assertRaises(Unsealable, self.sealer.unseal, "k", data)

    def test_fromKeyFile(self) -> None:
        """
        The sealer of a key file is that of the key derived from its bytes.
        """
        path = self.mktemp()
        material = os.urandom(32)
        with open(path, "wb") as stream:
            stream.write(material)
        os.chmod(path, 0o600)
        made = Sealer.fromKeyFile(path, "node-1")
        sealer = Sealer(deriveKey(material), "node-2")
        self.assertEqual(made.unseal("k", sealer.seal("k", b"v")), ("node-2", b"v"))


class CommandKeyFileTests(SynchronousTestCase):
    """
    The operations command checks the key file as the server does.
    """

    def test_refused(self) -> None:
        """
        C{status} and C{renew} with a key file open to others end with
        status 2 and an error naming C{cluster_key_file}, before anything
        is built.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        key = os.path.join(folder, "cluster.key")
        with open(key, "wb") as stream:
            stream.write(b"k" * 32)
        os.chmod(key, 0o644)
        path = os.path.join(folder, "server.ini")
        with open(path, "w") as stream:
            stream.write(
                resource(
                    cluster_database="host=/nonexistent", cluster_key_file=key, state_directory="s"
                )
            )
        for argv in (["status"], ["renew"]):
            err = io.StringIO()
            ran = run(MemoryReactorClock(), [*argv, "--config", path], io.StringIO(), err)
            self.assertEqual(self.successResultOf(Deferred.fromCoroutine(ran)), 2)
            self.assertIn("option 'cluster_key_file'", err.getvalue())
