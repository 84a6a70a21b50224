"""
A set's status row as the JSON text C{json.dumps} gives it, made from the
parts that the time does not change, encoded once: the running server
answers C{status} for thousands of sets by joining texts, without making
and encoding a dictionary per set at each call.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder
from json.encoder import encode_basestring_ascii
from typing import Any

DAY = 86400.0


def _cEncoder() -> Callable[[Any], str] | None:
    """
    C{json.dumps} with its default arguments, by the C encoder made once
    (C{json.dumps} makes one at each call, a quarter of a row's time),
    where there is one.
    """
    make = getattr(encoder, "c_make_encoder", None)
    if make is None:
        return None
    # No check for cycles: a row has none.
    default = json.JSONEncoder().default
    chunks = make(None, default, encode_basestring_ascii, None, ": ", ", ", False, False, True)
    return lambda value: "".join(chunks(value, 0))


def makeDumps() -> Callable[[Any], str]:
    """
    The same text as C{json.dumps} with its default arguments: by the C
    encoder made once (L{_cEncoder}), or, where there is none,
    C{json.dumps} itself.
    """
    return _cEncoder() or json.dumps


#: The same text as C{json.dumps} with its default arguments, for the
#: rows' values, which need no C{default}: ints, floats, text, C{None},
#: booleans, lists and dictionaries with text keys (see L{makeDumps}).
dumps = makeDumps()

#: Where the row's time-dependent C{days_left} is, in the text of its
#: fields that the time does not change: the one place where this text
#: can be (in a string, the quotes would be escaped).
_DAYS_LEFT = ', "days_left": null, '


class RowJSON:
    """
    The JSON text of one set's status row at any time (see L{at}), the
    fields in the order of L{timedRow
    <letsencrypt_resource.statusrows.timedRow>}: the same text as
    C{json.dumps} of that row.
    """

    __slots__ = ("_head", "_middle", "_notAfter", "_planAt", "_retryAt", "_texts")
    _texts: tuple[str, str, str, str, int]

    def __init__(
        self,
        row: dict[str, Any],
        notAfter: float | None,
        planAt: float,
        retryAt: float,
        texts: tuple[str, str, str, str],
    ):
        """
        @param row: The row's fields that the time does not change, with
            C{days_left} among them, C{None}, neither first nor last.
        @param texts: The reason, the planned time's text, why, and the
            retry time's text (see L{RowBase
            <letsencrypt_resource.statusrows.RowBase>}).
        """
        head, middle = dumps(row)[:-1].split(_DAYS_LEFT, 1)
        self._head = head + ', "days_left": '
        self._middle = ", " + middle + ', "retry": '
        self._notAfter, self._planAt, self._retryAt = notAfter, planAt, retryAt
        # Shared with the row's other parts: encoded at each call, in less
        # time than keeping them encoded costs memory.
        self._texts = (*texts, row["failures"])

    def at(self, now: float, nowJSON: str) -> str:
        """
        The row's text at C{now}, whose time as C{next_check} would show it
        is C{nowJSON} (a JSON string, made once for all rows).
        """
        daysLeft = (
            "null" if self._notAfter is None else repr(round((self._notAfter - now) / DAY, 1))
        )
        reason, plan, why, retry, failures = self._texts
        if self._retryAt > max(self._planAt, now):
            retrying, next = "true", encode_basestring_ascii(retry)
            why = f'"retry after {failures} failed attempts"'
        else:
            # Overdue: the time of the call is the next check.
            retrying, next = "false", nowJSON
            if self._planAt >= now:
                next = encode_basestring_ascii(plan)
            why = encode_basestring_ascii(why)
        return (
            f'{self._head}{daysLeft}{self._middle}{retrying}, "reason": '
            f'{encode_basestring_ascii(reason)}, "next_check": {next}, "why": {why}}}'
        )
