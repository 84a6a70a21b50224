"""
Deploy hooks and metrics for real: a resource with a store directory, a
deploy command and a metrics listener gets its certificate from a local
pebble; the command (a small script) runs after the export with the paths
in its environment, and C{/metrics} answers with the certificate's expiry.
Also, on real processes: a command that outlives its time limit has its
whole process group killed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Callable

import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool
from zope.interface.registry import Components

from letsencrypt_resource.deploy import DeployHooks
from letsencrypt_resource.httpclient import loadCABundle, makeHTTPClient
from letsencrypt_resource.interfaces import ICertificateConsumer
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.pebble import freeTCPPort
from letsencrypt_resource.resource import LetsEncryptResource
from letsencrypt_resource.storage.directory import DirectoryStorage
from letsencrypt_resource.testing import RecordingConsumer
from tests.helpers import selfSigned
from tests.helpers.operationscase import OperationsCase
from tests.helpers.pebblecase import TestCACase
from tests.helpers.resourcecase import resourceOptions

#: A deploy command that writes its process ids and environment, as JSON,
#: to the file its first argument names.
RECORDER = """#!{python}
import json, os, sys
with open(sys.argv[1], "w") as stream:
    json.dump({{"pid": os.getpid(), "pgid": os.getpgid(0), "env": dict(os.environ)}}, stream)
print("recorded for", os.environ["LETSENCRYPT_DOMAINS"])
"""

#: A deploy command that starts a child that sleeps, writes the child's
#: process id to the file its first argument names, then sleeps too.
SLEEPER = """#!{python}
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as stream:
    stream.write(str(child.pid))
time.sleep(600)
"""


#: A deploy command that writes the signals it ignores (the C{SigIgn} line
#: of its status) to the file its first argument names, leaves a child
#: sleeping in the background, writes its process id to the file its
#: second argument names, and exits 0.
LEAVER = """#!/bin/sh
grep SigIgn /proc/self/status > "$1"
sleep 600 &
echo $! > "$2"
"""


#: A deploy command that takes a second, then appends the set's names to
#: the file its first argument names.
SLOW = """#!/bin/sh
sleep 1
echo "$LETSENCRYPT_DOMAINS" >> "$1"
"""


def writeScript(folder: str, name: str, template: str) -> str:
    """
    Write the script of C{template} to C{folder}, executable.
    """
    path = os.path.join(folder, name)
    with open(path, "w") as stream:
        stream.write(template.format(python=sys.executable))
    os.chmod(path, stat.S_IRWXU)
    return path


async def waitFor(condition: Callable[[], bool], seconds: float) -> bool:
    """
    Whether C{condition} holds within C{seconds}, looking every 50 ms.
    """
    end = reactor.seconds() + seconds
    while not condition():
        if reactor.seconds() > end:
            return False
        await deferLater(reactor, 0.05, lambda: None)
    return True


def alive(pid: int) -> bool:
    """
    Whether process C{pid} runs (a zombie waiting for its parent does not).
    """
    try:
        with open(f"/proc/{pid}/stat") as stream:
            return stream.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class DeployAndMetricsTests(TestCACase):
    """
    A resource with a deploy command and metrics, against pebble.
    """

    async def test_deployedAndMeasured(self) -> None:
        """
        After issuance, the deploy command runs in its own process group
        with the exported files' paths and no other variable than C{PATH}
        and C{LANG}; C{/metrics} shows the issued certificate's expiry and
        the issued state.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        script = writeScript(folder, "record", RECORDER)
        recorded = os.path.join(folder, "env.json")
        store = os.path.join(folder, "exported")
        os.mkdir(store)
        challengePort, metricsPort = freeTCPPort(), freeTCPPort()
        testCA = await self.startTestCA(challengePort)
        registry = Components()
        consumer = RecordingConsumer("reports-https", ("reports.example.test",))
        registry.registerUtility(consumer, ICertificateConsumer, name="reports")
        http, pool = makeHTTPClient(reactor, loadCABundle(testCA.caFile))
        self.addCleanup(pool.closeCachedConnections)
        options = resourceOptions(
            port=challengePort,
            acmeURL=testCA.directoryURL,
            stateDirectory=os.path.join(folder, "state"),
            storeDirectory=store,
            acmeCAFile=testCA.caFile,
            deployCommand=(script, recorded),
            metricsAddress="127.0.0.1",
            metricsPort=metricsPort,
        )
        resource = LetsEncryptResource(
            options,
            registry,
            DirectoryStorage(options.stateDirectory, reactor),
            reactor,
            http,
            closeStorage=True,
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        resource.startService()
        self.addCleanup(resource.stopService)
        await resource.whenSettled()
        ids = lambda: [e.get("event_id") for e in events]  # noqa: E731
        self.assertTrue(await waitFor(lambda: 20246 in ids() or 20247 in ids(), 20), ids())
        self.assertNotIn(20247, ids())
        served = consumer.received[-1]
        self.assertFalse(served.provisional)

        with open(recorded) as stream:
            run = json.load(stream)
        self.assertEqual(run["pid"], run["pgid"])
        env = run["env"]
        exported = os.path.join(store, "reports.example.test")
        self.assertEqual(env["LETSENCRYPT_DOMAINS"], "reports.example.test")
        self.assertEqual(env["LETSENCRYPT_DIRECTORY"], exported)
        self.assertEqual(env["LETSENCRYPT_KEY"], os.path.join(exported, "privkey.pem"))
        with open(env["LETSENCRYPT_CERTIFICATE"], "rb") as stream:
            self.assertEqual(stream.read(), served.certificatePEM)
        with open(env["LETSENCRYPT_FULLCHAIN"], "rb") as stream:
            self.assertEqual(stream.read(), served.fullchainPEM)
        self.assertEqual(env["LETSENCRYPT_NOT_AFTER"], served.notAfter.isoformat())
        passed = set(env) - {n for n in env if n.startswith("LETSENCRYPT_")}
        # The interpreter may add LC_CTYPE when it coerces the C locale.
        self.assertLessEqual(passed, {"PATH", "LANG", "LC_CTYPE"})
        lines = [e["line"] for e in events if e.get("event_id") == 20248]
        self.assertEqual(lines, ["recorded for reports.example.test"])

        scrapes = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(f"http://127.0.0.1:{metricsPort}/metrics", pool=scrapes)
        self.assertEqual(response.code, 200)
        text = (await response.content()).decode("utf-8")
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        domains = ("domains", "reports.example.test")
        self.assertEqual(
            samples[("letsencrypt_certificate_expiration_timestamp_seconds", (domains,))],
            served.notAfter.timestamp(),
        )
        state = ("state", "issued")
        self.assertEqual(samples[("letsencrypt_certificate_state", (domains, state))], 1.0)
        issued = (("ca", testCA.directoryURL), ("result", "issued"))
        self.assertEqual(samples[("letsencrypt_renewal_attempts_total", issued)], 1.0)
        posted = (
            "letsencrypt_acme_request_duration_seconds_count",
            (("ca", testCA.directoryURL), ("method", "POST")),
        )
        self.assertGreater(samples[posted], 0)
        answered = ("letsencrypt_challenge_requests_total", (("result", "answered"),))
        self.assertGreater(samples[answered], 0)
        refused = await treq.post(f"http://127.0.0.1:{metricsPort}/metrics", pool=scrapes)
        self.assertEqual(refused.code, 405)
        await refused.content()


class RealProcessTests(TestCase):
    """
    L{DeployHooks} on the real reactor, with real processes.
    """

    async def test_timeoutKillsGroup(self) -> None:
        """
        A command that runs past C{deploy_timeout} is killed with the child
        it started, and the run fails (20247).
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        script = writeScript(folder, "sleep", SLEEPER)
        childFile = os.path.join(folder, "child")
        hooks = DeployHooks(
            resourceOptions(deployCommand=(script, childFile), deployTimeout=1.0),
            reactor,
            Logger(),
        )
        hooks.startService()
        self.addCleanup(hooks.stopService)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        certificate = ManagedCertificate(("a.example",))
        worked = await hooks.deploy(certificate, selfSigned(("a.example",)), None)
        self.assertFalse(worked)
        [failed] = [e for e in events if e.get("event_id") == 20247]
        self.assertIn("its process group was killed", failed["details"])
        with open(childFile) as stream:
            child = int(stream.read())
        self.assertTrue(await waitFor(lambda: not alive(child), 5), f"{child} still runs")
        self.assertEqual(hooks.failed, {frozenset({"a.example"})})

    async def test_defaultSignalsAndNothingLeft(self) -> None:
        """
        The command ignores no signal (an interpreter in between would
        leave C{SIGPIPE} and C{SIGXFSZ} ignored, so that what it starts
        spins on a closed pipe instead of dying), and what it left running
        in its process group is killed once it exits, even successfully.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        script = writeScript(folder, "leaver", LEAVER)
        ignoredFile = os.path.join(folder, "ignored")
        childFile = os.path.join(folder, "child")
        hooks = DeployHooks(
            resourceOptions(deployCommand=(script, ignoredFile, childFile)), reactor, Logger()
        )
        hooks.startService()
        self.addCleanup(hooks.stopService)
        certificate = ManagedCertificate(("a.example",))
        worked = await hooks.deploy(certificate, selfSigned(("a.example",)), None)
        self.assertTrue(worked)
        with open(ignoredFile) as stream:
            self.assertEqual(stream.read().split(), ["SigIgn:", "0" * 16])
        with open(childFile) as stream:
            child = int(stream.read())
        self.assertTrue(await waitFor(lambda: not alive(child), 5), f"{child} still runs")


class CommandLineTests(OperationsCase):
    """
    The deploy command when the command line runs an operation alone.
    """

    async def test_renewWaitsForRuns(self) -> None:
        """
        C{renew} without a server runs the deploy command for each set it
        renewed, and waits for the runs (which take a second each) before
        it exits.
        """
        folder = os.path.abspath(self.mktemp())
        os.makedirs(folder)
        record = os.path.join(folder, "deployed")
        script = writeScript(folder, "deploy", SLOW)
        await self.setUpConfiguration(extra=f"deploy_command = {script} {record}\n")
        renewed = await self.command("renew", "--force", "--json")
        self.assertEqual([r["outcome"] for r in renewed], ["renewed"] * len(renewed))
        with open(record) as stream:
            deployed = stream.read().splitlines()
        self.assertEqual(sorted(deployed), sorted(" ".join(r["names"]) for r in renewed), renewed)
