"""
Reactor responsiveness probe.

L{StallProbe} runs a C{LoopingCall} every 5 ms on the reactor and records
how late each call is against the loop's own schedule.  A watchdog thread
samples the reactor thread's Python stack whenever the reactor has not
ticked for a while, so that each long stall comes with the code it was in.

The stack is read by C{faulthandler.dump_traceback}, in C, in one call that
holds the GIL: the reactor thread cannot push or pop a frame meanwhile.
Walking the frame objects of C{sys._current_frames()} from the watchdog
(C{traceback.extract_stack}), as this did before, races with the reactor
thread popping them on CPython 3.11 (python/cpython#99110, #111363): it
crashed the measured process with a segmentation fault now and then.
"""

from __future__ import annotations

import collections
import faulthandler
import os
import re
import threading
import time
from typing import Any

from twisted.internet.task import LoopingCall

INTERVAL = 0.005
#: The watchdog samples the reactor thread's stack once a stall is this long.
SAMPLE_AFTER = 0.02
PACKAGE = os.sep + "letsencrypt_resource" + os.sep
#: A thread's heading and a frame's line in what faulthandler writes.
_THREAD = re.compile(r"^(?:Current thread|Thread) (0x[0-9a-f]+) ")
_FRAME = re.compile(r'^  File "(.*)", line (\d+) in (.*)$')


class StallProbe:
    def __init__(self, reactor: Any, interval: float = INTERVAL):
        self._reactor = reactor
        self.interval = interval
        self.lateness: list[float] = []
        self._ticks = 0
        self._loop = LoopingCall.withCount(self._tick)
        self._loop.clock = reactor
        self._lastTick = time.perf_counter()
        self._mainThread = threading.get_ident()
        self._stop = threading.Event()
        #: each stall the watchdog saw: start, length, sampled stacks
        self.stalls: list[dict[str, Any]] = []
        self._watchdog = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> None:
        self._startPerf = time.perf_counter()
        self._loop.start(self.interval, now=True)
        self._watchdog.start()

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        self._stop.set()
        self._watchdog.join()

    def _tick(self, count: int) -> None:
        # This call is for the first tick due after the previous call; when
        # the reactor was late, `count` ticks were due and this is the
        # lateness of the earliest of them.
        now = self._reactor.seconds()
        intended = self._loop.starttime + self._ticks * self.interval
        self._ticks += count
        self.lateness.append(max(0.0, now - intended))
        self._lastTick = time.perf_counter()

    def _watch(self) -> None:
        # faulthandler writes to a descriptor: one in memory, reused.
        dump = os.memfd_create("stall-probe", os.MFD_CLOEXEC)
        try:
            self._sample(dump)
        finally:
            os.close(dump)

    def _sample(self, dump: int) -> None:
        current: dict[str, Any] | None = None
        while not self._stop.wait(0.002):
            lastTick = self._lastTick
            age = time.perf_counter() - lastTick
            if age < SAMPLE_AFTER:
                if current is not None:
                    current["length"] = lastTick - current["start"]
                    self.stalls.append(current)
                    current = None
                continue
            if current is None:
                current = {"start": lastTick, "samples": []}
            stack = _stackOf(dump, self._mainThread)
            if stack:
                current["samples"].append(stack)

    def report(self, top: int = 8) -> dict[str, Any]:
        """
        The longest stall, percentiles of lateness, and where the reactor
        thread was during the longest stalls: the innermost frame of our
        package and the innermost frame overall, by number of 2 ms samples
        (taken from the 20th ms of a stall on).
        """
        lateness = sorted(self.lateness)
        n = len(lateness)

        def pct(q: float) -> float:
            return lateness[min(n - 1, int(q * n))] if n else float("nan")

        longest = []
        for stall in sorted(self.stalls, key=lambda s: -s["length"])[:top]:
            ours: collections.Counter[str] = collections.Counter()
            inner: collections.Counter[str] = collections.Counter()
            for stack in stall["samples"]:
                inner[stack[-1]] += 1
                mine = [f for f in stack if f.startswith("letsencrypt_resource/")]
                ours[mine[-1] if mine else "(not in letsencrypt_resource)"] += 1
            longest.append(
                {
                    "at_s": round(stall["start"] - self._startPerf, 3),
                    "length_ms": round(stall["length"] * 1000, 1),
                    "ours": ours.most_common(3),
                    "innermost": inner.most_common(2),
                }
            )
        return {
            "ticks": n,
            "max_stall_ms": (lateness[-1] * 1000) if n else float("nan"),
            "p99_lateness_ms": pct(0.99) * 1000,
            "p999_lateness_ms": pct(0.999) * 1000,
            "stalls_over_50ms": sum(1 for x in lateness if x > 0.05),
            "stalls_over_20ms": sum(1 for x in lateness if x > 0.02),
            "longest": longest,
        }


def _stackOf(dump: int, thread: int) -> list[str]:
    """
    The Python stack of C{thread}, outermost frame first, read through
    faulthandler into the descriptor C{dump} (at most its 100 innermost
    frames).
    """
    os.lseek(dump, 0, os.SEEK_SET)
    os.ftruncate(dump, 0)
    faulthandler.dump_traceback(dump, all_threads=True)
    size = os.lseek(dump, 0, os.SEEK_CUR)
    text = os.pread(dump, size, 0).decode("utf-8", "replace")
    stack: list[str] = []
    inThread = False
    for line in text.splitlines():
        heading = _THREAD.match(line)
        if heading is not None:
            if inThread:
                break
            inThread = int(heading.group(1), 16) == thread
            continue
        frame = _FRAME.match(line) if inThread else None
        if frame is not None:
            filename, lineno, name = frame.groups()
            stack.append(f"{_short(filename)}:{lineno} {name}")
    stack.reverse()
    return stack


def _short(path: str) -> str:
    index = path.find(PACKAGE)
    if index >= 0:
        return path[index + 1 :]
    parts = path.split(os.sep)
    if "site-packages" in parts:
        return "/".join(parts[parts.index("site-packages") + 1 :])
    return "/".join(parts[-2:])
