"""
A paced HTTP/1.1 load client for the challenge site, run as a separate
process: C{--connections} kept-alive connections, each sending a GET every
C{connections / rate} seconds, until its standard input closes.

Latency is measured from the moment each request was due to be sent
(open-loop, so a stall of the server shows in every request it delayed,
not only in the one in flight), and also from the moment it was actually
sent.  Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time

PATH = "/.well-known/acme-challenge/test.txt"


def readResponse(sock: socket.socket, buffer: bytearray) -> bytes:
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            head = bytes(buffer[:end]).decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            total = end + 4 + length
            if len(buffer) >= total:
                status = head.split(" ", 2)[1]
                del buffer[:total]
                return status.encode()
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


def worker(port: int, period: float, offset: float, stop: threading.Event, out: dict) -> None:
    request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sock = None
    buffer = bytearray()
    due = time.perf_counter() + offset
    while not stop.is_set():
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer = bytearray()
            sent = time.perf_counter()
            sock.sendall(request)
            status = readResponse(sock, buffer)
            done = time.perf_counter()
            if status != b"200":
                out["errors"] += 1
            out["from_due"].append(done - due)
            out["from_send"].append(done - sent)
        except OSError:
            out["errors"] += 1
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
        due += period
        # Requests that fell far behind are still counted (from their due
        # time) but not sent in a burst: skip ahead to now.
        lag = time.perf_counter() - due
        if lag > 1.0:
            skipped = int(lag / period)
            out["skipped"] += skipped
            due += skipped * period
    if sock is not None:
        sock.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s, total")
    parser.add_argument("--connections", type=int, default=2)
    args = parser.parse_args()
    stop = threading.Event()
    results = []
    threads = []
    period = args.connections / args.rate
    for i in range(args.connections):
        out = {"from_due": [], "from_send": [], "errors": 0, "skipped": 0}
        results.append(out)
        t = threading.Thread(
            target=worker,
            args=(args.port, period, i * period / args.connections, stop, out),
            daemon=True,
        )
        threads.append(t)
    started = time.perf_counter()
    for t in threads:
        t.start()
    sys.stdin.read()
    stop.set()
    for t in threads:
        t.join(timeout=15)
    seconds = time.perf_counter() - started
    fromDue = [x for r in results for x in r["from_due"]]
    fromSend = [x for r in results for x in r["from_send"]]
    print(
        json.dumps(
            {
                "requests": len(fromDue),
                "seconds": seconds,
                "errors": sum(r["errors"] for r in results),
                "skipped": sum(r["skipped"] for r in results),
                "p50_ms": pct(fromDue, 0.50) * 1000,
                "p99_ms": pct(fromDue, 0.99) * 1000,
                "p999_ms": pct(fromDue, 0.999) * 1000,
                "max_ms": max(fromDue, default=float("nan")) * 1000,
                "p50_from_send_ms": pct(fromSend, 0.50) * 1000,
                "p99_from_send_ms": pct(fromSend, 0.99) * 1000,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
