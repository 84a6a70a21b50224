"""
A TLS client hammering handshakes against one service in a loop, as a
separate process, until its standard input closes.

Every handshake is a full one (new connection, no session reuse), verifies
the chain to pebble's root and the name, and records when it started and
ended (wall clock, time.time()), and the serial number of the certificate
presented, or the error.  Prints one JSON line at the end: the number of
handshakes and failures, the failures' errors, and for each serial the end
time of the first and last handshake that presented it.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import sys
import threading
import time

from cryptography import x509


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--root-file", required=True)
    args = parser.parse_args()
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    context = ssl.create_default_context(cafile=args.root_file)
    handshakes = 0
    failures: list[str] = []
    seen: dict[str, dict[str, float]] = {}
    while not stop.is_set():
        started = time.time()
        try:
            with socket.create_connection(("127.0.0.1", args.port), timeout=5) as raw:
                with context.wrap_socket(raw, server_hostname=args.name) as tls:
                    der = tls.getpeercert(binary_form=True)
        except (OSError, ssl.SSLError) as error:
            failures.append(f"{time.time():.3f} {type(error).__name__}: {error}")
            handshakes += 1
            continue
        ended = time.time()
        handshakes += 1
        serial = format(x509.load_der_x509_certificate(der).serial_number, "x")
        entry = seen.setdefault(serial, {"first_start": started, "first_end": ended})
        entry["last_start"] = started
        entry["last_end"] = ended
    print(
        json.dumps(
            {
                "handshakes": handshakes,
                "failed": len(failures),
                "failures": failures[:20],
                "serials": seen,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
