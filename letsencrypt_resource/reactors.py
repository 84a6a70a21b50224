"""
The type of a whole reactor, for the services that use several of its
interfaces.

Where one interface is enough, the package types the reactor with it
(C{IReactorTime} for a clock, C{IReactorUNIX}, C{IReactorCore}, ...).  The
server and its commands use a reactor that provides C{IReactorCore},
C{IReactorTime}, C{IReactorTCP}, C{IReactorSSL}, C{IReactorUNIX} and
C{IReactorFromThreads} at once, and zope interfaces cannot be intersected in
a type: C{Reactor} says so, as C{Any}.
"""

from __future__ import annotations

from typing import Any, TypeAlias

#: A reactor providing the interfaces listed above.
Reactor: TypeAlias = Any
