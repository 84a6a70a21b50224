"""
A fresh local pebble for one benchmark run, driven from synchronous code.

L{Pebble.start} runs this file as a child process, which starts pebble and
its DNS server through the product's own
L{letsencrypt_resource.pebble.startTestCA} (so C{PEBBLE_VA_NOSLEEP=1}) with
C{nonceReject=0}: no C{badNonce} fault injection, so that every contender
sees the same error-free CA.  The child prints one JSON line (directory URL,
listener CA file, issuer chain) and keeps pebble running until its standard
input closes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The checkout's package, as in common.py.
sys.path.insert(0, ROOT)

#: pebble's PEBBLE_WFE_NONCEREJECT for every benchmark run.
NONCE_REJECT = 0
#: How L{Pebble.start} tells the child its C{vaSleep}.
VA_SLEEP = "PEBBLECTL_VA_SLEEPTIME"


class Pebble:
    """
    A running pebble (in a child process).

    @ivar directoryURL: the ACME directory.
    @ivar caFile: the CA of pebble's own HTTPS listener (trust it for ACME).
    @ivar issuersFile: pebble's root then intermediate of this run (PEM);
        the root is what a TLS client trusts to verify issued certificates.
    @ivar rootFile: the root alone.
    @ivar challengePort: where pebble validates HTTP-01 (127.0.0.1).
    """

    def __init__(self, process: subprocess.Popen, info: dict, challengePort: int):
        self._process = process
        self.directoryURL: str = info["directoryURL"]
        self.caFile: str = info["caFile"]
        self.issuersFile: str = info["issuersFile"]
        self.rootFile: str = info["rootFile"]
        self.directory: str = info["directory"]
        self.challengePort = challengePort

    @classmethod
    def start(
        cls,
        directory: str,
        challengePort: int,
        validity: int | None = None,
        vaSleep: int | None = None,
    ) -> Pebble:
        """
        Start pebble in C{directory}, validating HTTP-01 on C{challengePort}.

        @param validity: the certificates' lifetime in seconds; C{None} for
            pebble's default (five years).
        @param vaSleep: when given, pebble waits a random time below this
            many seconds before each validation (C{PEBBLE_VA_SLEEPTIME}),
            so that orders last long enough to act while they run.
        """
        extra = [] if validity is None else [str(validity)]
        env = dict(os.environ)
        if vaSleep is not None:
            env[VA_SLEEP] = str(vaSleep)
        process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), directory, str(challengePort), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env=env,
            text=True,
        )
        line = process.stdout.readline()
        if not line:
            process.wait()
            raise RuntimeError(f"pebble did not start (exit {process.returncode})")
        info = json.loads(line)
        if "error" in info:
            process.wait()
            raise RuntimeError(info["error"])
        return cls(process, info, challengePort)

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Pebble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(directory: str, challengePort: int, validity: int | None) -> None:
    from twisted.internet import threads
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    from letsencrypt_resource.pebble import startTestCA

    async def main(reactor) -> None:
        try:
            extraConfig = {} if validity is None else {"certificateValidityPeriod": validity}
            sleep = os.environ.get(VA_SLEEP)
            extraEnv = (
                {} if sleep is None else {"PEBBLE_VA_NOSLEEP": "0", "PEBBLE_VA_SLEEPTIME": sleep}
            )
            testCA = await startTestCA(
                reactor,
                directory,
                challengePort,
                nonceReject=NONCE_REJECT,
                extraConfig=extraConfig,
                extraEnv=extraEnv,
            )
            issuers = await testCA.fetchIssuerPEM()
        except Exception as error:  # reported to the parent
            print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
            return
        issuersFile = os.path.join(directory, "issuers.pem")
        rootFile = os.path.join(directory, "root.pem")
        with open(issuersFile, "wb") as f:
            f.write(issuers)
        end = issuers.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")
        with open(rootFile, "wb") as f:
            f.write(issuers[:end])
        print(
            json.dumps(
                {
                    "directoryURL": testCA.directoryURL,
                    "caFile": testCA.caFile,
                    "issuersFile": issuersFile,
                    "rootFile": rootFile,
                    "directory": directory,
                }
            ),
            flush=True,
        )
        # Until the parent closes our standard input.
        await threads.deferToThread(sys.stdin.read)
        await testCA.stop()

    react(lambda r: Deferred.fromCoroutine(main(r)))


def pebbleVersion() -> str:
    """
    The Debian package version of the pebble on PATH, or "unknown".
    """
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", "pebble"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
