"""
The parts of a status row (L{letsencrypt_resource.statusrows}) made once
for many sets, or faster: the time, and the issuer's text
(L{letsencrypt_resource.certificates.rfc4514Issuer}).
"""

from __future__ import annotations

import datetime
import gc
import json
import weakref
from collections.abc import Callable
from json import encoder
from types import SimpleNamespace
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import Clock, Cooperator
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from letsencrypt_resource import certificates, rowjson, statusrows
from letsencrypt_resource.certificates import CertifiedKey, issuerDER, rfc4514Issuer
from letsencrypt_resource.keygen import generateKey
from letsencrypt_resource.managed import ManagedCertificate
from letsencrypt_resource.operations import Operations
from letsencrypt_resource.statusrows import RowCache, isoTime, statusRow
from letsencrypt_resource.storage.cluster import ClusterStorage
from tests.helpers.resourcecase import DAY, resourceOptions


def named(*names: str) -> x509.Name:
    """
    The name of common names C{names}.
    """
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name) for name in names])


def certificate(issuer: x509.Name, serial: int, key: Any = None) -> x509.Certificate:
    """
    A certificate that C{issuer} signed, of serial number C{serial}, for
    C{key} (by default a new one).
    """
    key = key or generateKey("ecdsa-p256")
    now = datetime.datetime(2027, 1, 1, tzinfo=datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"s{serial}.test")]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=90))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"s{serial}.test")]), False)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )


class CountedIssuer:
    """
    A certificate that counts the readings of its issuer.
    """

    def __init__(self, wrapped: x509.Certificate):
        self._wrapped = wrapped
        self.readings = 0

    @property
    def tbs_certificate_bytes(self) -> bytes:
        return self._wrapped.tbs_certificate_bytes

    @property
    def issuer(self) -> x509.Name:
        self.readings += 1
        return self._wrapped.issuer


class RowPartsTests(SynchronousTestCase):
    """
    The parts of a status row made once for many sets, or faster.
    """

    def test_issuerDER(self) -> None:
        """
        L{issuerDER} finds the issuer's DER in the certificate's, short
        and long (a length over 127 bytes, a long serial number).
        """
        for issuer, serial in (
            (named("Test CA"), 1),
            (named(*["Test CA " + "x" * 50] * 4), 2**150),
        ):
            signed = certificate(issuer, serial)
            self.assertEqual(issuerDER(signed.tbs_certificate_bytes), signed.issuer.public_bytes())

    def test_issuerTextOncePerIssuer(self) -> None:
        """
        The issuer's text is made once for the many certificates of one
        issuer, and again for another issuer.
        """
        self.patch(certificates, "_issuers", {})
        first, second = (
            CountedIssuer(certificate(named("Test CA, one"), 1)),
            CountedIssuer(certificate(named("Test CA, one"), 2)),
        )
        other = CountedIssuer(certificate(named("Test CA, two"), 3))
        results: list[Any] = [rfc4514Issuer(c) for c in (first, second, other)]  # type: ignore[arg-type]
        self.assertEqual(results, ["CN=Test CA\\, one", "CN=Test CA\\, one", "CN=Test CA\\, two"])
        self.assertEqual([c.readings for c in (first, second, other)], [1, 0, 1])

    def test_issuerTextOncePerCertificate(self) -> None:
        """
        A certificate in service has its issuer's text made once: a server
        asked for its status again and again makes it at the first.
        """
        made: list[object] = []
        self.patch(certificates, "rfc4514Issuer", lambda c: made.append(c) or "CN=Test CA")
        key = generateKey("ecdsa-p256")
        signed = certificate(named("Test CA"), 1, key)
        certifiedKey = CertifiedKey(key, signed)
        self.assertEqual([certifiedKey.issuerText, certifiedKey.issuerText], ["CN=Test CA"] * 2)
        self.assertEqual(made, [signed])

    def test_isoAsDatetime(self) -> None:
        """
        Times are written as C{datetime.isoformat} writes them, to the
        second.
        """
        for seconds in (0.0, 1.999, 1700000000.5, 4102444800.25):
            expected = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc).isoformat(
                timespec="seconds"
            )
            self.assertEqual(isoTime(seconds), expected)


class DumpsTests(SynchronousTestCase):
    """
    L{rowjson.dumps} is C{json.dumps} with its default arguments, by an
    encoder made once.
    """

    def test_asJSONDumps(self) -> None:
        """
        The values a row holds give C{json.dumps}'s text: text beyond ASCII
        and with quotes, lines and backslashes, floats, ints, booleans,
        C{None}, lists and dictionaries, nested.
        """
        values: list[Any] = [
            {"a": 1, "b": [1.5, 0.1, -3.0, 1e300], "c": None, "d": True, "e": False},
            ['quote " line\n\u00e9\u2603 \\ end', [], {}, {"x": {"y": ["z"]}}],
            round(59.95, 1),
            "",
        ]
        for value in values:
            self.assertEqual(rowjson.dumps(value), json.dumps(value))

    def test_refusesAsJSONDumps(self) -> None:
        """
        A value C{json.dumps} cannot encode is refused with its error.
        """
        with self.assertRaises(TypeError) as dumped:
            json.dumps({"a": object()})
        with self.assertRaises(TypeError) as ours:
            rowjson.dumps({"a": object()})
        self.assertEqual(str(ours.exception), str(dumped.exception))

    def countEncoders(self) -> list[object]:
        """
        Count the C encoders made from now on (C{json.dumps} makes one at
        each call): one item in the list returned for each.
        """
        make = encoder.c_make_encoder
        if make is None:
            raise SkipTest("no C encoder in this Python")
        made: list[object] = []

        def counted(*args: object) -> Any:
            made.append(args)
            return make(*args)

        self.patch(encoder, "c_make_encoder", counted)
        return made

    def test_encoderMadeOnce(self) -> None:
        """
        L{rowjson.makeDumps} makes one C encoder, and encodes any number
        of values with it.
        """
        made = self.countEncoders()
        dumps = rowjson.makeDumps()
        values: list[Any] = [{"a": [1, 2.5, None]}, ["text"], [True, False]]
        texts = [dumps(value) for value in values]
        self.assertEqual(len(made), 1)
        self.assertEqual(texts, [json.dumps(value) for value in values])

    def test_rowsMakeNoEncoder(self) -> None:
        """
        Rows are encoded without making an encoder (as C{json.dumps} would,
        a quarter of a row's time): their texts are the same.
        """
        key = generateKey("ecdsa-p256")
        managed = ManagedCertificate(("s1.test",))
        managed.current = CertifiedKey(key, certificate(named("Test CA"), 1, key))
        options, now = resourceOptions(), managed.current.validity[0] + DAY
        expected = json.dumps([statusRow(managed, options, now, True)])
        made = self.countEncoders()
        cache = RowCache()
        self.assertEqual(cache.encoded([managed], options, now, True), expected)
        self.assertEqual(cache.encoded([managed], options, now, True), expected)
        self.assertEqual(made, [])

    def test_withoutCEncoder(self) -> None:
        """
        Where there is no C encoder, L{rowjson.makeDumps} gives
        C{json.dumps}, which gives the same texts.
        """
        self.patch(encoder, "c_make_encoder", None)
        dumps = rowjson.makeDumps()
        self.assertIs(dumps, json.dumps)
        value = {"a": ['quote " \u00e9', 1.5, None, True]}
        self.assertEqual(dumps(value), '{"a": ["quote \\" \\u00e9", 1.5, null, true]}')


class RowCacheTests(SynchronousTestCase):
    """
    L{RowCache} keeps the part of a row that the time does not change
    until the set changes.
    """

    def setUp(self) -> None:
        key = generateKey("ecdsa-p256")
        self.certifiedKey = CertifiedKey(key, certificate(named("Test CA"), 1, key))
        self.certificate = ManagedCertificate(("s1.test",))
        self.certificate.current = self.certifiedKey
        self.certificate.consumers.append(SimpleNamespace(name="files"))  # type: ignore[arg-type]
        self.options = resourceOptions()
        self.now = self.certifiedKey.validity[0] + DAY
        self.cache = RowCache()
        self.made: list[object] = []
        made, base = self.made, statusrows.RowBase

        class Counted(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                made.append(args)
                super().__init__(*args)

        self.patch(statusrows, "RowBase", Counted)

    def assertFresh(self, now: float) -> dict[str, Any]:
        """
        The cache's row at C{now} is the row made anew.
        """
        row = self.cache.row(self.certificate, self.options, now, True)
        self.assertEqual(
            json.dumps(row), json.dumps(statusRow(self.certificate, self.options, now, True))
        )
        return row

    def test_keptUntilChanged(self) -> None:
        """
        The set unchanged, its row is made once, at any time; then again
        after each change of a field it shows, in place or not.
        """
        for now in (self.now, self.now + 0.3 * DAY, self.now + 70 * DAY, self.now + 100 * DAY):
            self.assertFresh(now)
        # One for the cache, one for each row made anew to compare.
        self.assertEqual(len(self.made), 1 + 4)
        changes = [
            lambda c: setattr(c, "failures", 2),
            lambda c: setattr(c, "lastError", "refused"),
            lambda c: setattr(c, "nextAttempt", self.now + 3600),
            lambda c: setattr(c, "lastFailure", self.now - 60),
            lambda c: setattr(c, "holdUntil", self.now + 7200),
            lambda c: setattr(c, "ariWindow", (self.now + DAY, self.now + 2 * DAY)),
            lambda c: setattr(c, "ariPick", 0.9),
            lambda c: setattr(c, "orderedBy", ("id", "https://other.test/directory", "acct")),
            lambda c: c.compromisedKeys.add("0" * 64),
            lambda c: c.consumers.append(SimpleNamespace(name="more")),
            lambda c: setattr(c, "current", None),
        ]
        for change in changes:
            before = len(self.made)
            change(self.certificate)
            self.assertFresh(self.now)
            self.assertEqual(len(self.made), before + 2)

    def test_oldCertificateFreed(self) -> None:
        """
        A kept row does not keep the set's certificate (and its private
        key) alive: renewed, then revoked, without a status call between,
        the old certificate is freed; the row is made again for the new one,
        for none, and for one again, even when the old one is gone.
        """
        list(self.cache.keep([self.certificate], self.options, True, self.fail))
        old = weakref.ref(self.certificate.current)  # type: ignore[arg-type]
        self.certifiedKey = self.certificate.current = None  # type: ignore[assignment]
        key = generateKey("ecdsa-p256")
        self.certificate.current = CertifiedKey(key, certificate(named("New CA"), 2, key))
        gc.collect()
        self.assertIsNone(old())
        self.assertEqual(self.assertFresh(self.now)["issuer"], "CN=New CA")
        self.certificate.current = None
        gc.collect()
        self.assertIsNone(self.assertFresh(self.now)["issuer"])
        self.certificate.current = CertifiedKey(key, certificate(named("Third CA"), 3, key))
        self.assertEqual(self.assertFresh(self.now)["issuer"], "CN=Third CA")
        made = len(self.made)
        self.assertFresh(self.now)
        self.assertEqual(len(self.made), made + 1)

    def test_unshownKept(self) -> None:
        """
        A change of a field the row does not show keeps the row.
        """
        self.assertFresh(self.now)
        self.certificate.deployPending = True
        self.certificate.announced = self.certificate.plan()
        made = len(self.made)
        self.cache.row(self.certificate, self.options, self.now, True)
        self.assertEqual(len(self.made), made)


class EncodedTests(SynchronousTestCase):
    """
    L{RowCache.encoded} gives the text C{json.dumps} gives for the rows,
    from the kept rows' texts (L{letsencrypt_resource.rowjson.RowJSON}).
    """

    def setUp(self) -> None:
        key = generateKey("ecdsa-p256")
        self.certifiedKey = CertifiedKey(key, certificate(named("Test CA"), 1, key))
        self.options = resourceOptions()
        self.start = self.certifiedKey.validity[0]

    def managed(self, *names: str) -> ManagedCertificate:
        """
        A set of C{names} on the test certificate, served by three
        services, one whose name holds the text around C{days_left}.
        """
        managed = ManagedCertificate(names or ("s1.test",))
        managed.current = self.certifiedKey
        for name in ("services/a", 'services/"b"', 'services/c", "days_left": null, "d'):
            managed.consumers.append(SimpleNamespace(name=name))  # type: ignore[arg-type]
        return managed

    def assertAsDumps(self, cache: RowCache, sets: list[ManagedCertificate], now: float) -> None:
        """
        The encoded rows of C{sets} at C{now}, the server running or not,
        are the text of the rows made anew.
        """
        for running in (True, False):
            rows = [statusRow(c, self.options, now, running) for c in sets]
            self.assertEqual(cache.encoded(sets, self.options, now, running), json.dumps(rows))

    def test_collectionPaused(self) -> None:
        """
        Automatic collections are paused while the rows are made and
        encoded, and on again after, as before; a row that fails to be made
        resumes them all the same.
        """
        enabled: list[bool] = []
        base = RowCache._base

        def watched(cache: RowCache, *args: Any) -> Any:
            enabled.append(gc.isenabled())
            if len(enabled) == 3:
                raise ValueError("unreadable")
            return base(cache, *args)

        self.patch(RowCache, "_base", watched)
        self.assertTrue(gc.isenabled())
        sets = [self.managed(f"s{i}.test") for i in range(2)]
        RowCache().encoded(sets, self.options, self.start, True)
        self.assertEqual(enabled, [False, False])
        self.assertTrue(gc.isenabled())
        self.assertRaises(ValueError, RowCache().encoded, sets, self.options, self.start, True)
        self.assertTrue(gc.isenabled())

    def countedTexts(self) -> list[object]:
        """
        The arguments of every row text made from now on, in order.
        """
        texts: list[object] = []
        rowJSON = statusrows.RowJSON

        def counted(*args: Any) -> object:
            texts.append(args)
            return rowJSON(*args)

        self.patch(statusrows, "RowJSON", counted)
        return texts

    def test_textsKeptAtFirstCall(self) -> None:
        """
        The first call makes the texts of the rows and keeps them; the next
        one makes none, and a set changed since has its text made anew
        between the kept texts; the text is C{json.dumps}'s each time.
        """
        texts = self.countedTexts()
        sets = [self.managed(f"s{i}.test") for i in range(4)]
        cache, now = RowCache(), self.start + DAY

        def encoded() -> str:
            text = cache.encoded(sets, self.options, now, True)
            rows = [statusRow(c, self.options, now, True) for c in sets]
            self.assertEqual(text, json.dumps(rows))
            return text

        encoded()
        self.assertEqual(len(texts), 4)
        encoded()
        self.assertEqual(len(texts), 4)
        sets[1].failures = sets[2].failures = 1
        sets[2].lastError = 'a "quoted" error'
        encoded()
        self.assertEqual(len(texts), 6)
        encoded()
        self.assertEqual(len(texts), 6)

    def test_keepMakesMissingTexts(self) -> None:
        """
        L{RowCache.keep} makes the texts of the rows that have none, not
        again those a status call made; the next call makes none.
        """
        texts = self.countedTexts()
        sets = [self.managed(f"s{i}.test") for i in range(4)]
        cache, now = RowCache(), self.start + DAY
        cache.encoded(sets[:2], self.options, now, True)
        self.assertEqual(len(texts), 2)
        list(cache.keep(sets, self.options, True, self.fail))
        self.assertEqual(len(texts), 4)
        rows = [statusRow(c, self.options, now, True) for c in sets]
        self.assertEqual(cache.encoded(sets, self.options, now, True), json.dumps(rows))
        self.assertEqual(len(texts), 4)

    def test_asDumps(self) -> None:
        """
        Planned, overdue, retrying, failing with an error of quotes, lines
        and letters beyond ASCII, forced, without a certificate and on a
        provisional one, at times before, in and after validity: the text
        is C{json.dumps}'s, and again from the kept rows.
        """
        failing = self.managed("f.test", "www.f.test")
        failing.failures, failing.lastError = 3, 'refused: "no"\n\u00e9\u2603 \\ end'
        failing.nextAttempt = self.start + 89 * DAY
        forced = self.managed("forced.test")
        forced.forcedReason = "forced"
        bare = self.managed("bare.test")
        bare.current = None
        provisional = self.managed("provisional.test")
        provisional.current = CertifiedKey(
            generateKey("ecdsa-p256"),
            self.certifiedKey.certificate,
            provisional=True,
        )
        sets = [self.managed(), failing, forced, bare, provisional]
        cache = RowCache()
        for days in (-1, 0, 0.25, 1, 59.95, 60, 88.5, 89.5, 100):
            now = self.start + days * DAY
            self.assertAsDumps(cache, sets, now)
            self.assertAsDumps(cache, sets, now)

    def test_changeShown(self) -> None:
        """
        A set changed since the last call shows the change in the text,
        made again for it alone; the other sets' texts are kept.
        """
        sets = [self.managed("a.test"), self.managed("b.test")]
        cache = RowCache()
        now = self.start + DAY
        made: list[object] = []
        base = statusrows.RowBase

        class Counted(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                made.append(args[0])
                super().__init__(*args)

        self.patch(statusrows, "RowBase", Counted)
        cache.encoded(sets, self.options, now, True)
        self.assertEqual(made, sets)
        sets[1].lastError = "refused"
        sets[1].failures = 1
        text = cache.encoded(sets, self.options, now, True)
        self.assertEqual(made, [*sets, sets[1]])
        self.assertEqual(json.loads(text)[1]["last_error"], "refused")
        self.patch(statusrows, "RowBase", base)
        self.assertAsDumps(cache, sets, now)


class KeepRowsTests(SynchronousTestCase):
    """
    L{Operations.keepRows} makes the kept rows ahead, a set at a step: from
    the end of the load, those of the sets on a certificate; once the
    resource has settled, those missing or changed.
    """

    def setUp(self) -> None:
        key = generateKey("ecdsa-p256")
        certifiedKey = CertifiedKey(key, certificate(named("Test CA"), 1, key))
        self.sets = [ManagedCertificate((f"s{i}.test",)) for i in range(3)]
        for managed in self.sets:
            managed.current = certifiedKey
        self.loaded: Deferred[None] = Deferred()
        self.settled: Deferred[None] = Deferred()
        resource = SimpleNamespace(
            managed={m.domains: m for m in self.sets},
            options=resourceOptions(),
            storage=None,
            whenLoaded=lambda: self.loaded,
            whenSettled=lambda: self.settled,
        )
        self.clock = Clock()
        self.clock.advance(certifiedKey.validity[0] + DAY)
        self.operations = Operations(resource, self.clock)  # type: ignore[arg-type]
        self.steps: list[Callable[[], object]] = []
        # One set a step, each step run by the test.
        self.cooperator = Cooperator(lambda: lambda: True, self.steps.append)
        self.made: list[object] = []
        made, base = self.made, statusrows.RowBase

        class Counted(base):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any) -> None:
                made.append(args[0])
                super().__init__(*args)

        self.patch(statusrows, "RowBase", Counted)

    def runSteps(self) -> None:
        """
        Run the cooperator's steps until none is left.
        """
        while self.steps:
            self.steps.pop(0)()

    def test_madeAhead(self) -> None:
        """
        Nothing is made before the sets are loaded; then one set's row at
        each step, and a status right after is answered from them alone,
        before the resource settles; once it has, nothing is made again.
        """
        keeping = self.operations.keepRows(self.cooperator.cooperate)
        self.assertEqual((self.steps, self.made), ([], []))
        self.loaded.callback(None)
        for count in range(1, 4):
            self.steps.pop(0)()
            self.assertEqual(self.made, self.sets[:count])
        self.runSteps()
        text = self.successResultOf(self.operations.encodedStatus())
        self.assertEqual(self.made, self.sets)
        self.assertEqual(json.loads(text), self.successResultOf(self.operations.fullStatus()))
        self.assertNoResult(keeping)
        self.settled.callback(None)
        self.runSteps()
        self.successResultOf(keeping)
        self.assertEqual(self.made, self.sets)

    def test_changedMadeOnceSettled(self) -> None:
        """
        A set without a certificate at the end of the load (it is put on a
        provisional one then) is not made until the resource has settled;
        then it is, with the sets that changed since the load (their first
        check's attempt failed), and only those.
        """
        first, changed, waiting = self.sets
        current, waiting.current = waiting.current, None
        keeping = self.operations.keepRows(self.cooperator.cooperate)
        self.loaded.callback(None)
        self.runSteps()
        self.assertEqual(self.made, [first, changed])
        waiting.current = current
        changed.failures = 1
        self.settled.callback(None)
        self.runSteps()
        self.successResultOf(keeping)
        self.assertEqual(self.made, [first, changed, changed, waiting])

    def test_badSetLoggedOthersMade(self) -> None:
        """
        A set whose row cannot be made is logged once, as an unexpected
        error, and the sets after it are made all the same; a status call
        fails for it as it did.
        """
        broken = self.sets[1]
        broken.plan = lambda: 1 / 0  # type: ignore[method-assign]
        keeping = self.operations.keepRows(self.cooperator.cooperate)
        self.loaded.callback(None)
        self.settled.callback(None)
        self.runSteps()
        self.successResultOf(keeping)
        self.assertEqual(self.made, self.sets)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.failureResultOf(self.operations.encodedStatus(), ZeroDivisionError)

    def test_noneOnClusterNode(self) -> None:
        """
        On a cluster node, whose status is not made of the kept rows'
        texts, nothing is made: it is done at once.
        """
        self.operations._resource.storage = object.__new__(ClusterStorage)
        keeping = self.operations.keepRows(self.cooperator.cooperate)
        self.successResultOf(keeping)
        self.assertEqual((self.steps, self.made), ([], []))

    def test_cancelled(self) -> None:
        """
        Cancelled, it stops making rows.
        """
        keeping = self.operations.keepRows(self.cooperator.cooperate)
        self.loaded.callback(None)
        self.steps.pop(0)()
        keeping.cancel()
        self.failureResultOf(keeping, CancelledError)
        while self.steps:
            self.steps.pop(0)()
        self.assertEqual(self.made, self.sets[:1])
