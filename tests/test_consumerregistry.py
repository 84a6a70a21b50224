"""
Tests for L{letsencrypt_resource.consumerregistry}.
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import Interface, implementer
from zope.interface.registry import Components

from letsencrypt_resource.consumerregistry import (
    ConsumerRegistry,
    LinearAdapterRegistry,
    SubscriberLeaf,
)
from letsencrypt_resource.statusrows import NoConsumer
from letsencrypt_resource.testing.fakes import RecordingConsumer
from letsencrypt_resource.tls import TLSCertificateConsumer


class IThing(Interface):
    """
    What the utilities of these tests provide.
    """


@implementer(IThing)
class Thing:
    """
    A utility, equal only to itself.
    """


@implementer(IThing)
class Unhashable:
    """
    A utility that cannot be hashed, equal only to itself.
    """

    __hash__ = None  # type: ignore[assignment]


@implementer(IThing)
class Same:
    """
    A utility equal to every other L{Same}.
    """

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Same)

    def __hash__(self) -> int:
        return 1


@implementer(IThing)
class Rehashed:
    """
    A utility equal only to itself, whose hash is its C{key}, which may
    change after it was registered.
    """

    def __init__(self, key: int):
        self.key = key

    def __hash__(self) -> int:
        return self.key


def leafOf(registry: Components, provided: Any = IThing) -> Any:
    """
    The subscriber leaf of C{provided} in C{registry}'s utilities.
    """
    return registry.utilities._subscribers[0][provided][""]


def answers(registry: Components) -> tuple[list[tuple[str, Any]], list[Any], list[Any]]:
    """
    What C{registry} says of its L{IThing} utilities: by name, all of them,
    and all registrations.
    """
    return (
        sorted(registry.getUtilitiesFor(IThing), key=lambda pair: pair[0]),
        list(registry.getAllUtilitiesRegisteredFor(IThing)),
        sorted(
            ((r.name, r.component) for r in registry.registeredUtilities()),
            key=lambda pair: pair[0],
        ),
    )


class SameAnswersTests(SynchronousTestCase):
    """
    L{ConsumerRegistry} answers as a plain C{Components} does, after the
    same registrations and removals.
    """

    def assertSameAfter(self, steps: list[tuple[str, Any, str]]) -> None:
        """
        Apply C{steps} (C{"add"} or C{"remove"}, a component, a name) to a
        L{ConsumerRegistry} and a C{Components}, checking after each that
        both answer the same, and the removals return the same.
        """
        ours, theirs = ConsumerRegistry("ours"), Components("theirs")
        for action, component, name in steps:
            if action == "add":
                ours.registerUtility(component, IThing, name=name)
                theirs.registerUtility(component, IThing, name=name)
            else:
                self.assertEqual(
                    ours.unregisterUtility(component, IThing, name=name),
                    theirs.unregisterUtility(component, IThing, name=name),
                )
            self.assertEqual(answers(ours), answers(theirs))

    def test_addAndRemove(self) -> None:
        """
        Utilities added under names, replaced under a name, one component
        under two names, and removed in another order than added, a
        removal of what is not there included.
        """
        a, b, c, d = Thing(), Thing(), Thing(), Thing()
        self.assertSameAfter(
            [
                ("add", a, "a"),
                ("add", b, "b"),
                ("add", c, "c"),
                ("add", d, "b"),
                ("add", a, "a2"),
                ("remove", a, "a"),
                ("remove", c, "c"),
                ("remove", c, "c"),
                ("remove", a, "a2"),
                ("add", c, "c"),
                ("remove", d, "b"),
                ("remove", c, "c"),
            ]
        )

    def test_unhashable(self) -> None:
        """
        Components that cannot be hashed are kept, answered and removed as
        C{zope.interface} does.
        """
        a, b, c = Thing(), Unhashable(), Thing()
        self.assertSameAfter(
            [
                ("add", a, "a"),
                ("add", b, "b"),
                ("add", c, "c"),
                ("remove", b, "b"),
                ("add", b, "b"),
                ("remove", a, "a"),
                ("remove", c, "c"),
                ("remove", b, "b"),
            ]
        )

    def test_equalComponents(self) -> None:
        """
        Distinct components equal to each other are kept and removed as
        C{zope.interface} does.
        """
        a, b = Same(), Same()
        self.assertSameAfter(
            [("add", a, "a"), ("add", b, "b"), ("remove", a, "a"), ("remove", b, "b")]
        )

    def test_subscribedTwice(self) -> None:
        """
        A value subscribed twice directly to the adapter registry is there
        twice, as in C{zope.interface}'s tuple, and removing it removes both.
        """
        ours, theirs = LinearAdapterRegistry(), Components().utilities
        value = Thing()
        for registry in (ours, theirs):
            registry.subscribe((), IThing, value)
            registry.subscribe((), IThing, value)
        self.assertEqual(ours.subscriptions((), IThing), [value, value])
        self.assertEqual(ours.subscriptions((), IThing), theirs.subscriptions((), IThing))
        ours.unsubscribe((), IThing, value)
        self.assertEqual(ours.subscriptions((), IThing), [])


class ChangingTests(SynchronousTestCase):
    """
    What L{SubscriberLeaf}, changed in place, must do as C{zope.interface}'s
    tuples did: be iterated while it changes, and find a value whose hash
    changed.
    """

    def test_registerWhileIterating(self) -> None:
        """
        Utilities may be registered and removed while the registry's
        C{allSubscriptions()} goes through them: it gives those of the
        moment it began, as a plain C{Components} does.
        """
        for registry in (ConsumerRegistry("ours"), Components("theirs")):
            first, second = Thing(), Thing()
            registry.registerUtility(first, IThing, name="first")
            registry.registerUtility(second, IThing, name="second")
            seen = []
            for _, _, value in registry.utilities.allSubscriptions():
                seen.append(value)
                registry.registerUtility(Thing(), IThing, name=f"more{len(seen)}")
                registry.unregisterUtility(second, IThing, name="second")
            self.assertEqual(seen, [first, second])
            self.assertEqual(len(list(registry.utilities.allSubscriptions())), 3)

    def test_hashChanged(self) -> None:
        """
        A utility whose hash changed after it was registered is removed
        when it is unregistered, as from a plain C{Components}; the others
        stay, and can be removed too.
        """
        ours, theirs = ConsumerRegistry("ours"), Components("theirs")
        moving, other = Rehashed(1), Rehashed(2)
        for registry in (ours, theirs):
            registry.registerUtility(moving, IThing, name="moving")
            registry.registerUtility(other, IThing, name="other")
        moving.key = 3
        for registry in (ours, theirs):
            self.assertTrue(registry.unregisterUtility(moving, IThing, name="moving"))
        self.assertEqual(answers(ours), answers(theirs))
        self.assertEqual(list(ours.getAllUtilitiesRegisteredFor(IThing)), [other])
        self.assertIsInstance(leafOf(ours), SubscriberLeaf)
        for registry in (ours, theirs):
            self.assertTrue(registry.unregisterUtility(other, IThing, name="other"))
        self.assertEqual(answers(ours), answers(theirs))

    def test_consumersHashByIdentity(self) -> None:
        """
        The package's certificate consumers hash and compare by identity:
        their hash cannot change while they are registered.
        """
        for consumer in (TLSCertificateConsumer, NoConsumer, RecordingConsumer):
            self.assertIs(consumer.__hash__, object.__hash__, consumer)
            self.assertIs(consumer.__eq__, object.__eq__, consumer)


class InPlaceTests(SynchronousTestCase):
    """
    The subscribers of an interface are changed in place, not copied at
    each registration and removal.
    """

    def test_oneLeaf(self) -> None:
        """
        Registering and removing utilities keeps the same leaf, holding
        the subscribers in the order they came.
        """
        registry = ConsumerRegistry("test")
        things = [Thing() for _ in range(5)]
        registry.registerUtility(things[0], IThing, name="0")
        leaf = leafOf(registry)
        for index, thing in enumerate(things[1:], 1):
            registry.registerUtility(thing, IThing, name=str(index))
        registry.unregisterUtility(things[2], IThing, name="2")
        self.assertIsInstance(leaf, SubscriberLeaf)
        self.assertIs(leafOf(registry), leaf)
        self.assertEqual(list(leaf), [things[0], things[1], things[3], things[4]])

    def test_plainComponentsCopies(self) -> None:
        """
        A plain C{Components}, which the host no longer uses, makes a new
        leaf at each registration: what L{test_oneLeaf} rules out.
        """
        registry = Components("test")
        registry.registerUtility(Thing(), IThing, name="0")
        leaf = leafOf(registry)
        registry.registerUtility(Thing(), IThing, name="1")
        self.assertIsNot(leafOf(registry), leaf)


class ChangedTests(SynchronousTestCase):
    """
    What L{LinearAdapterRegistry} does at each change.
    """

    def test_noSubregistriesWalked(self) -> None:
        """
        Without sub-registries, a registration does not walk the weak
        dictionary of them.
        """
        walks: list[None] = []

        class Counting(weakref.WeakKeyDictionary[Any, int]):
            def keys(self) -> Any:
                walks.append(None)
                return super().keys()

        registry = ConsumerRegistry("test")
        registry.utilities._v_subregistries = Counting()
        registry.registerUtility(Thing(), IThing, name="a")
        registry.unregisterUtility(provided=IThing, name="a")
        self.assertEqual(walks, [])

    def test_subregistriesTold(self) -> None:
        """
        A registry built on a L{ConsumerRegistry} sees what is registered
        in it after it looked: its cache is cleared as in C{zope.interface}.
        """
        base = ConsumerRegistry("base")
        above = Components("above", bases=(base,))
        self.assertIsNone(above.queryUtility(IThing, name="a"))
        thing = Thing()
        base.registerUtility(thing, IThing, name="a")
        self.assertIs(above.queryUtility(IThing, name="a"), thing)
        base.unregisterUtility(thing, IThing, name="a")
        self.assertIsNone(above.queryUtility(IThing, name="a"))


class RegisteringTests(SynchronousTestCase):
    """
    L{ConsumerRegistry.registering}: many registrations, one change.
    """

    def test_changedOnce(self) -> None:
        """
        Registrations within clear the lookups' caches once, at the end:
        what was looked up before is found afterwards as in a plain
        C{Components}.
        """
        registry = ConsumerRegistry("test")
        self.assertIsNone(registry.queryUtility(IThing, name="a"))
        self.assertEqual(list(registry.getAllUtilitiesRegisteredFor(IThing)), [])
        lookup = registry.utilities._v_lookup  # type: ignore[attr-defined]
        cleared: list[None] = []
        original = lookup.changed

        def counting(changed: object) -> None:
            cleared.append(None)
            original(changed)

        self.patch(lookup, "changed", counting)
        things = [Thing() for _ in range(3)]
        with registry.registering():
            for name, thing in zip("abc", things, strict=True):
                registry.registerUtility(thing, IThing, name=name)
        self.assertEqual(len(cleared), 1)
        self.assertIs(registry.queryUtility(IThing, name="a"), things[0])
        self.assertEqual(list(registry.getAllUtilitiesRegisteredFor(IThing)), things)

    def test_subregistriesTold(self) -> None:
        """
        A registry built on it sees, at the end, what was registered
        within, though it looked before.
        """
        base = ConsumerRegistry("base")
        above = Components("above", bases=(base,))
        self.assertIsNone(above.queryUtility(IThing, name="a"))
        thing = Thing()
        with base.registering():
            base.registerUtility(thing, IThing, name="a")
        self.assertIs(above.queryUtility(IThing, name="a"), thing)

    def test_endsOnError(self) -> None:
        """
        A registration that fails within ends the holding: later changes
        clear the caches at once again.
        """
        registry = ConsumerRegistry("test")
        thing = Thing()
        with self.assertRaises(RuntimeError), registry.registering():
            registry.registerUtility(thing, IThing, name="a")
            raise RuntimeError("failed")
        self.assertIs(registry.queryUtility(IThing, name="a"), thing)
        registry.unregisterUtility(thing, IThing, name="a")
        self.assertIsNone(registry.queryUtility(IThing, name="a"))
