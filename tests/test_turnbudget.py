"""
Tests for L{letsencrypt_resource.turnbudget}: the one skeleton of the
per-turn bounds.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from letsencrypt_resource import turnbudget
from letsencrypt_resource.firsthandshakes import FirstHandshakes, firstHandshakesOf
from letsencrypt_resource.readturns import ReadTurns, readTurnsOf
from letsencrypt_resource.turnbudget import TurnBudget, sharedOf


class TurnBudgetTests(SynchronousTestCase):
    """
    Tests for L{TurnBudget}.
    """

    def test_waitingGoCounted(self) -> None:
        """
        Work that waited goes in a later turn, counted there: with a
        budget of one, nothing else may go in that turn.
        """
        clock = Clock()
        budget = TurnBudget(clock, perTurn=1)
        mayGoThen: list[bool] = []
        self.assertTrue(budget.mayGo())
        self.assertFalse(budget.mayGo())
        budget.later(lambda: mayGoThen.append(budget.mayGo()))
        clock.advance(0)
        self.assertEqual(mayGoThen, [False])
        self.assertTrue(budget.mayGo())

    def test_sharedPerKind(self) -> None:
        """
        Each kind of budget is shared on one reactor, and the kinds are
        apart: the contexts built do not count against the reads.
        """
        clock = Clock()
        self.assertIs(sharedOf(FirstHandshakes, clock), firstHandshakesOf(clock))
        self.assertIs(sharedOf(ReadTurns, clock), readTurnsOf(clock))

    def test_sharedLookedUp(self) -> None:
        """
        Once a kind has its budgets, asking for one again makes nothing:
        not even the dictionary of that kind's budgets.
        """
        clock = Clock()
        sharedOf(FirstHandshakes, clock)
        made: list[object] = []
        original = turnbudget.weakref.WeakKeyDictionary

        def counting() -> object:
            made.append(None)
            return original()

        self.patch(turnbudget.weakref, "WeakKeyDictionary", counting)
        self.assertIs(sharedOf(FirstHandshakes, clock), firstHandshakesOf(clock))
        self.assertEqual(made, [])
        self.assertIsInstance(firstHandshakesOf(clock), FirstHandshakes)
        self.assertIsInstance(readTurnsOf(clock), ReadTurns)
