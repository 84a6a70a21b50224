"""
Tests for L{letsencrypt_resource.startupcollection} and how C{twistd
lets-encrypt} uses it.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import json
import os
import subprocess
import sys

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from letsencrypt_resource import startupcollection, tap
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.setloading import SetLoader
from letsencrypt_resource.startupcollection import (
    ResumeCollection,
    frozeStartUp,
    pauseCollection,
    pausedCollection,
    resumeCollection,
)
from tests.helpers.configuration import OFFLINE_SERVER
from tests.helpers.processcase import ROOT, environment


class Cycle:
    """
    An object in a reference cycle: only the collector frees it.
    """

    def __init__(self) -> None:
        self.me = self


def resetCollector(case: SynchronousTestCase) -> None:
    """
    Turn automatic collection on and unfreeze everything, before C{case}
    and again after it.
    """
    gc.enable()
    gc.unfreeze()
    case.addCleanup(gc.unfreeze)
    case.addCleanup(gc.enable)
    case.patch(startupcollection, "_frozeStartUp", False)


class CollectionCase(SynchronousTestCase):
    """
    Leaves the collector as the test found it: on, nothing frozen.
    """

    def setUp(self) -> None:
        resetCollector(self)


class PauseTests(CollectionCase):
    """
    L{pauseCollection}.
    """

    def test_pauses(self) -> None:
        """
        Automatic collection stops, and L{pauseCollection} says it was on.
        """
        self.assertTrue(pauseCollection())
        self.assertFalse(gc.isenabled())

    def test_alreadyOff(self) -> None:
        """
        When automatic collection is already off, L{pauseCollection} says
        so: what turned it off is to turn it on again.
        """
        gc.disable()
        self.assertFalse(pauseCollection())
        self.assertFalse(gc.isenabled())


class ResumeTests(CollectionCase):
    """
    L{ResumeCollection}.
    """

    def test_freezesWithoutCollecting(self) -> None:
        """
        Once started, what start-up made is out of the collector's reach,
        frozen without a collection first (which would go through all of
        it); and automatic collection is on again.
        """
        pauseCollection()
        collections: list[str] = []

        def watch(phase: str, info: dict[str, int]) -> None:
            collections.append(phase)

        gc.callbacks.append(watch)
        self.addCleanup(gc.callbacks.remove, watch)
        kept = [Cycle()]
        self.assertFalse(frozeStartUp())
        ResumeCollection().startService()
        self.assertEqual(collections, [])
        self.assertTrue(gc.is_tracked(kept))
        self.assertNotIn(kept, gc.get_objects())
        self.assertTrue(gc.isenabled())
        self.assertTrue(frozeStartUp())

    def test_leftOff(self) -> None:
        """
        When L{pauseCollection} found automatic collection off, it stays
        off: whoever turned it off decides.
        """
        gc.disable()
        self.assertFalse(pauseCollection())
        ResumeCollection().startService()
        self.assertFalse(gc.isenabled())


class NestedTests(CollectionCase):
    """
    L{pausedCollection} within L{pauseCollection}'s pause, and within
    another.
    """

    def test_resumedAfterLoading(self) -> None:
        """
        L{resumeCollection} while a L{pausedCollection} goes on leaves
        automatic collection off until it ends.
        """
        pauseCollection()
        with pausedCollection():
            resumeCollection()
            within = gc.isenabled()
        self.assertEqual((within, gc.isenabled()), (False, True))

    def test_nested(self) -> None:
        """
        The last of two L{pausedCollection}s to end resumes collection.
        """
        with pausedCollection():
            with pausedCollection():
                pass
            within = gc.isenabled()
        self.assertEqual((within, gc.isenabled()), (False, True))

    def test_pausedFirst(self) -> None:
        """
        A L{pausedCollection} within a pause that is not L{pauseCollection}'s
        leaves collection off: whoever turned it off decides.
        """
        gc.disable()
        with pausedCollection():
            resumeCollection()
        self.assertFalse(gc.isenabled())


class TwistdTests(TestCase):
    """
    C{twistd lets-encrypt} pauses automatic collection from reading the
    configuration until its services have started.
    """

    def setUp(self) -> None:
        resetCollector(self)

    def configuration(self) -> str:
        """
        The path of a usable configuration of one service.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "public"))
        path = os.path.join(directory, "server.ini")
        with open(path, "w") as stream:
            stream.write(OFFLINE_SERVER.format(port=freeTCPPort(), extra=""))
        return path

    async def test_pausedWhileBuilding(self) -> None:
        """
        Reading the configuration pauses automatic collection; starting
        the server freezes what building it made, and resumes automatic
        collection once its domain sets have loaded.
        """
        path = self.configuration()
        options = tap.Options()
        options.parseOptions(["--config", path])
        self.assertFalse(gc.isenabled())
        server = tap.makeService(options)
        kept = [Cycle()]
        self.assertFalse(gc.isenabled())
        server.startService()
        self.addCleanup(server.stopService)
        self.assertNotIn(kept, gc.get_objects())
        await server.resource.whenLoaded()
        self.assertTrue(gc.isenabled())

    async def test_pausedWhileLoading(self) -> None:
        """
        In twistd's order (options parsed, the server made and started,
        then the reactor runs while the domain sets load), every batch of
        sets is taken back with automatic collection off, though the
        server's start has ended; it is on once they have loaded.
        """
        seen = []
        original = SetLoader._loadBatch

        async def loadBatch(loader: SetLoader, batch: list[ManagedCertificate]) -> None:
            await original(loader, batch)
            seen.append(gc.isenabled())

        self.patch(SetLoader, "_loadBatch", loadBatch)
        options = tap.Options()
        options.parseOptions(["--config", self.configuration()])
        server = tap.makeService(options)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenLoaded()
        self.assertEqual((seen, gc.isenabled()), ([False], True))

    async def test_parsedTwice(self) -> None:
        """
        Options parsed twice before the server starts (the second parse
        finds collection already off): starting it still turns automatic
        collection on again.
        """
        path = self.configuration()
        first = tap.Options()
        first.parseOptions(["--config", path])
        first["lock"].release()
        options = tap.Options()
        options.parseOptions(["--config", path])
        server = tap.makeService(options)
        server.startService()
        self.addCleanup(server.stopService)
        await server.resource.whenLoaded()
        self.assertTrue(gc.isenabled())

    def test_refusedResumes(self) -> None:
        """
        A configuration that cannot be used, or is missing, stops twistd,
        and automatic collection is on again for a host that catches the
        exit.
        """
        path = self.configuration()
        with open(path, "a") as stream:
            stream.write("unknown_option = 1\n")
        for arguments in (["--config", path], ["--config", path + ".missing"]):
            self.assertRaises(SystemExit, tap.Options().parseOptions, arguments)
            self.assertTrue(gc.isenabled())

    def test_usageRefusedResumes(self) -> None:
        """
        Options that twistd refuses before the configuration is read (an
        unknown one, C{--help}) turn automatic collection on again.
        """
        self.patch(sys, "stdout", io.StringIO())
        for arguments in (["--unknown"], ["--help"]):
            self.assertRaises((SystemExit, usage.UsageError), tap.Options().parseOptions, arguments)
            self.assertTrue(gc.isenabled())


#: Loads this checkout's plugin file (not the copy an installation may
#: hold), records whether automatic collection is on when the server's
#: options module starts being imported, then after the plugin's options
#: attribute is read, and after they are made; prints it all as JSON.
ORDER = """\
import gc, importlib.util, json, sys

seen = {}


class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "letsencrypt_resource.tap":
            seen["import"] = gc.isenabled()
        return None


sys.meta_path.insert(0, Watch())
spec = importlib.util.spec_from_file_location("plugin_under_test", sys.argv[1])
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
make = plugin.letsEncrypt.options
seen["read"] = [gc.isenabled(), "letsencrypt_resource.tap" in sys.modules]
options = make()
seen["made"] = [gc.isenabled(), type(options).__module__, type(options).__name__]
tap = sys.modules["letsencrypt_resource.tap"]
seen["frozen"] = [tap.__dict__ not in gc.get_objects(), gc.get_count()[0] < 100]
print(json.dumps(seen))
"""


class PluginTests(SynchronousTestCase):
    """
    The plugin of C{twistd lets-encrypt} pauses automatic collection while
    the server's modules are imported, only when its options are made.
    """

    def setUp(self) -> None:
        resetCollector(self)
        self.path = os.path.join(ROOT, "twisted", "plugins", "letsencrypt_resource_plugin.py")
        # This checkout's plugin, not the copy an installation may hold.
        spec = importlib.util.spec_from_file_location("preboot_plugin_under_test", self.path)
        assert spec is not None and spec.loader is not None
        self.plugin = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.plugin)

    def test_pausedForTheImport(self) -> None:
        """
        In a fresh interpreter: reading the plugin's options attribute
        pauses and imports nothing; making the options (as twistd does just
        before parsing them) imports the server's options module with
        automatic collection paused, freezes what the import made (no
        young collection goes over it once collection resumes), and
        resumes it before it returns the module's options.
        """
        output = subprocess.run(
            [sys.executable, "-c", ORDER, self.path],
            check=True,
            capture_output=True,
            env=environment(),
        ).stdout
        self.assertEqual(
            json.loads(output.splitlines()[-1]),
            {
                "read": [True, False],
                "import": False,
                "made": [True, "letsencrypt_resource.tap", "Options"],
                "frozen": [True, True],
            },
        )

    def test_usageLeavesCollectionOn(self) -> None:
        """
        Options made and never parsed (a tool that prints every plugin's
        usage) leave automatic collection on.
        """
        self.plugin.letsEncrypt.options().getUsage()
        self.assertTrue(gc.isenabled())

    def test_resumedOnError(self) -> None:
        """
        When the import fails (C{namedAny} finds no such module), automatic collection is on again.
        """
        self.patch(self.plugin.letsEncrypt, "module", "letsencrypt_resource.nonexistent")
        self.assertRaises(AttributeError, self.plugin.letsEncrypt.options)
        self.assertTrue(gc.isenabled())

    def test_refusedResumes(self) -> None:
        """
        Options that twistd's plugin gave, then refused, turn automatic
        collection on again.
        """
        options = self.plugin.letsEncrypt.options()
        self.assertRaises(usage.UsageError, options.parseOptions, [])
        self.assertTrue(gc.isenabled())
