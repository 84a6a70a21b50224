"""
Part (a) of the FTPS benchmark: the transfer rate of one large file over
PROT P, this resource's FTPS service (a real C{twistd -n lets-encrypt})
against Debian's vsftpd, on loopback, with the same curl, ciphers,
certificate and key, and file.

Both servers serve the same folder (C{<work>/ftp/bench}): ours to the
account C{bench} (confined to that folder), vsftpd to C{anonymous} (its
C{anon_root}).  Uploads go to its C{up/} subfolder, owned by the C{ftp}
user (vsftpd's anonymous sessions write as that user).  The certificate
is the one the resource obtained from pebble (ECDSA P-256) and exported to
its C{store_directory}; vsftpd is given the same files.
"""

from __future__ import annotations

import os
import pwd
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import bcrypt
from common import BENCH, FTPS_SECTION, ROOT, freePort

#: The name on the certificate both servers present.
NAME = "ftp.example.test"
USER, PASSWORD = "bench", "bench-password"
VSFTPD = "/usr/sbin/vsftpd"
#: The TLS variants: curl's options for each.
CIPHERS = {
    "TLS 1.3 AES-256-GCM": ["--tlsv1.3", "--tls13-ciphers", "TLS_AES_256_GCM_SHA384"],
    "TLS 1.2 ECDHE-ECDSA-AES256-GCM": [
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        "--ciphers",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ],
}
#: The profiler of C{--profile} (bench/README.md, "Profiling").
PYSPY = os.path.join(BENCH, ".venv", "bin", "py-spy")
#: How many times vsftpd is started before giving up.
STARTS = 3
#: How long the server may take to issue the first certificate.
ISSUE_TIMEOUT = 120.0

#: The end of the resource section, then the server's FTPS service.
SERVICE_SECTION = "\nstore_directory = {store}\n" + FTPS_SECTION + "writable = yes\n"

VSFTPD_CONFIGURATION = """\
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
local_enable=NO
anon_root={root}
no_anon_password=YES
write_enable=YES
anon_upload_enable=YES
anon_other_write_enable=NO
anon_mkdir_write_enable=NO
allow_anon_ssl=YES
force_anon_data_ssl=YES
force_anon_logins_ssl=YES
ssl_enable=YES
ssl_sslv2=NO
ssl_sslv3=NO
ssl_tlsv1=NO
require_ssl_reuse=YES
ssl_ciphers=HIGH
rsa_cert_file={certificate}
rsa_private_key_file={key}
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port={pasvLow}
pasv_max_port={pasvHigh}
secure_chroot_dir={empty}
seccomp_sandbox=NO
xferlog_enable=NO
syslog_enable=NO
log_ftp_protocol=YES
dual_log_enable=YES
vsftpd_log_file={protocolLog}
"""


def vsftpdMissing() -> str | None:
    """
    Why vsftpd cannot run here, or C{None}.
    """
    if not os.access(VSFTPD, os.X_OK):
        return f"{VSFTPD} is not installed (apt-get install vsftpd; ./dev test installs it)"
    if os.geteuid() != 0:
        return "vsftpd must be started as root"
    return None


def makeTree(work: str, sizeMiB: int) -> str:
    """
    The served tree under C{work}, the users file beside it; return the
    account's folder (which holds C{file.bin} and C{up/}).
    """
    served = os.path.join(work, "ftp")
    account = os.path.join(served, USER)
    upload = os.path.join(account, "up")
    os.makedirs(upload)
    # vsftpd's anonymous sessions (the ftp user) must reach the account's
    # folder; nothing else of the work folder is listed or readable by
    # other users (the bench runs with umask 077).
    for folder in (work, served):
        os.chmod(folder, 0o711)
    os.chmod(account, 0o755)
    if os.geteuid() == 0:
        ftp = pwd.getpwnam("ftp")
        os.chown(upload, ftp.pw_uid, ftp.pw_gid)
    chunk = os.urandom(1 << 20)
    with open(os.path.join(account, "file.bin"), "wb") as stream:
        for _ in range(sizeMiB):
            stream.write(chunk)
    os.chmod(os.path.join(account, "file.bin"), 0o644)
    writeUsers(work)
    return account


def writeUsers(work: str) -> str:
    """
    Write C{<work>/ftp-users}, the benchmark's account (a bcrypt hash of
    the lowest cost, so that logins cost little), and return its path.
    """
    path = os.path.join(work, "ftp-users")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4))
    with open(path, "wb") as stream:
        stream.write(USER.encode() + b":" + hashed + b"\n")
    return path


def resourceSection(pebble: Any, work: str) -> str:
    """
    The server's resource on C{pebble}, its state in C{<work>/state},
    ECDSA P-256 keys.
    """
    from common import RESOURCE_SECTION, accountOptions

    return RESOURCE_SECTION.format(
        challengePort=pebble.challengePort,
        directoryURL=pebble.directoryURL,
        caFile=pebble.caFile,
        state=os.path.join(work, "state"),
        keyType="ecdsa-p256",
        accountOptions=accountOptions(),
    )


def cpuSeconds(stat: str) -> float:
    """
    The CPU time (user + system) of the process or thread whose C{stat}
    file (C{/proc/<pid>/stat}, C{/proc/self/task/<tid>/stat}) is given, in
    steps of 10 ms.
    """
    with open(stat) as stream:
        fields = stream.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class TreeCPU:
    """
    The CPU time a process and its descendants use while it is measured,
    sampled every L{INTERVAL} seconds in a thread: vsftpd's per-session
    processes are reaped without their time being added to the listener's
    (so C{cutime} misses them), and their last few milliseconds are missed
    here.
    """

    INTERVAL = 0.02

    def __init__(self, pid: int):
        self._pid = pid
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._sample()
        # What the processes there before the transfer had used already.
        self._first = dict(self._last)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        pending = [self._pid]
        while pending:
            pid = pending.pop()
            try:
                self._last[pid] = cpuSeconds(f"/proc/{pid}/stat")
                with open(f"/proc/{pid}/task/{pid}/children") as stream:
                    pending.extend(int(child) for child in stream.read().split())
            except (FileNotFoundError, ProcessLookupError):
                continue

    def _run(self) -> None:
        while not self._done.wait(self.INTERVAL):
            self._sample()

    def stop(self) -> float:
        """
        Stop sampling; the seconds of CPU used since the start.
        """
        self._done.set()
        self._thread.join()
        self._sample()
        return sum(last - self._first.get(pid, 0.0) for pid, last in self._last.items())


class Twistd:
    """
    This resource's FTPS service in C{twistd -n lets-encrypt}, logging to
    C{<work>/twistd.log}.
    """

    def __init__(self, configuration: str, work: str):
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.logFile = os.path.join(work, "twistd.log")
        self.process = subprocess.Popen(
            [twistd, "-n", "--pidfile=", f"--logfile={self.logFile}", "lets-encrypt"]
            + ["--config", configuration],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            cwd=work,
            env={**os.environ, "PYTHONPATH": ROOT},
            start_new_session=True,
        )

    def waitForCertificate(self) -> None:
        """
        Wait until the service uses a CA certificate (event 20016).
        """
        deadline = time.monotonic() + ISSUE_TIMEOUT
        while True:
            if os.path.exists(self.logFile):
                with open(self.logFile, "rb") as stream:
                    if b"] 20016 " in stream.read():
                        return
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"twistd put no certificate in service; see {self.logFile}")
            time.sleep(0.1)

    def stop(self) -> None:
        stopGroup(self.process, 30)


class Vsftpd:
    """
    Debian's vsftpd on the same folder, certificate and key.
    """

    def __init__(self, work: str, root: str, certificate: str, key: str):
        empty = os.path.join(work, "vsftpd-empty")
        os.makedirs(empty, mode=0o755)
        self.log = open(os.path.join(work, "vsftpd.log"), "wb")
        # A free port may be taken by another program before vsftpd binds
        # it (vsftpd then exits with 2): try again on other ports.
        for _attempt in range(STARTS):
            self.port = freePort()
            low = freePort()
            path = os.path.join(work, "vsftpd.conf")
            with open(path, "w") as stream:
                stream.write(
                    VSFTPD_CONFIGURATION.format(
                        port=self.port,
                        root=root,
                        certificate=certificate,
                        key=key,
                        empty=empty,
                        pasvLow=max(1024, low - 50),
                        pasvHigh=min(65535, low + 50),
                        protocolLog=os.path.join(work, "vsftpd-protocol.log"),
                    )
                )
            self.process = subprocess.Popen(
                [VSFTPD, path],
                stdout=self.log,
                stderr=subprocess.STDOUT,
                cwd=work,
                start_new_session=True,
            )
            try:
                waitForPort(self.port, self.process)
                return
            except RuntimeError as error:
                stopGroup(self.process, 0)
                failure = error
        self.log.close()
        with open(self.log.name, errors="replace") as stream:
            raise RuntimeError(f"vsftpd: {failure}: {stream.read()[-500:]}")

    def stop(self) -> None:
        try:
            stopGroup(self.process, 10)
        finally:
            self.log.close()


def stopGroup(process: subprocess.Popen[Any], grace: float) -> None:
    """
    Stop C{process}, started in a session of its own, and every process of
    its group (vsftpd's sessions): SIGTERM, then SIGKILL after C{grace}
    seconds.
    """
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def waitForPort(port: int, process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def checkBanner(port: int, expected: str = "220 FTPS service ready") -> None:
    """
    Check that our FTPS service answers on C{port}: on a machine where
    other programs start servers, another may take a port between
    L{freePort} and the service's listening (the service then logs that
    it cannot listen, and the clients would talk to the other program).

    @raise RuntimeError: when another greeting, or none, comes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.settimeout(10)
        try:
            greeting = connection.recv(100).decode("ascii", "replace").strip()
        except TimeoutError:
            greeting = "(nothing)"
    if not greeting.startswith(expected):
        raise RuntimeError(f"port {port} answers {greeting!r}, not our service: run again")


def curl(
    port: int, caFile: str, ciphers: list[str], path: str, upload: str | None, user: str
) -> dict[str, float]:
    """
    One transfer with curl (explicit FTPS, C{--ssl-reqd}, the name checked
    against C{caFile}): a download of C{path} to C{/dev/null}, or an upload
    of the file C{upload} to C{path}.

    @return: the bytes moved, the seconds from the end of the set-up
        (connection, AUTH TLS, login, PROT P) to the end, and curl's CPU time.
    @raise RuntimeError: when curl fails.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    direction = ["--upload-file", upload] if upload else ["--output", "/dev/null"]
    result = subprocess.run(
        [
            "curl",
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--cacert",
            caFile,
            "--resolve",
            f"{NAME}:{port}:127.0.0.1",
            "--user",
            user,
            *ciphers,
            *direction,
            "--write-out",
            "%{time_pretransfer} %{time_total} %{size_download} %{size_upload}",
            f"ftp://{NAME}:{port}/{path}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"curl exited {result.returncode}: {result.stderr.strip()}")
    pretransfer, total, down, up = (float(x) for x in result.stdout.split())
    return {
        "bytes": up if upload else down,
        "seconds": total - pretransfer,
        "client_cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    }


def writeConfiguration(pebble: Any, work: str, port: int, served: str) -> str:
    """
    The server's configuration: the resource on pebble, exporting to
    C{<work>/store}, and one FTPS service on C{served}.
    """
    store = os.path.join(work, "store")
    os.makedirs(store, mode=0o700)
    path = os.path.join(work, "server.ini")
    with open(path, "w") as stream:
        stream.write(
            resourceSection(pebble, work)
            + SERVICE_SECTION.format(
                store=store,
                port=port,
                path=served,
                usersFile=os.path.join(work, "ftp-users"),
                name=NAME,
            )
        )
    return path


def transfer(
    server: tuple[str, int, int, str], caFile: str, tls: str, upload: str | None, account: str
) -> dict[str, Any]:
    """
    One curl transfer with C{server} (name, port, process id, account):
    a download of C{file.bin}, or an upload of the file C{upload} to
    C{up/<name>.bin}, checked for its size then removed.

    @return: the bytes, seconds and CPU times; or the error.
    """
    name, port, pid, user = server
    target = f"up/{name}.bin" if upload else "file.bin"
    cpu = TreeCPU(pid)
    try:
        moved = curl(port, caFile, CIPHERS[tls], target, upload, user)
        if upload and os.path.getsize(os.path.join(account, target)) != moved["bytes"]:
            raise RuntimeError("the uploaded file's size differs")
        if moved["bytes"] != os.path.getsize(os.path.join(account, "file.bin")):
            raise RuntimeError(f"{moved['bytes']:.0f} bytes moved")
    except RuntimeError as error:
        return {"error": str(error)}
    finally:
        serverCPU = cpu.stop()
        if upload and os.path.exists(os.path.join(account, target)):
            os.remove(os.path.join(account, target))
    return {**moved, "server_cpu": serverCPU}


def measureRates(
    pebble: Any,
    work: str,
    sizeMiB: int,
    repeats: int,
    progress: Any,
    profile: tuple[str, str] | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """
    Each repeat: for each TLS variant, a download and an upload of the
    C{sizeMiB} file with each server, the order of the servers swapped
    from one repeat to the next.

    @param profile: the py-spy program and where it writes the raw stacks
        of twistd during the transfers, or C{None} for no profile.
    @return: one row per transfer, and why vsftpd did not run (or C{None}).
    """
    account = makeTree(work, sizeMiB)
    port = freePort()
    twistd = Twistd(writeConfiguration(pebble, work, port, os.path.dirname(account)), work)
    vsftpd = None
    rows = []
    try:
        twistd.waitForCertificate()
        exported = os.path.join(work, "store", NAME)
        missing = vsftpdMissing()
        if missing is None:
            vsftpd = Vsftpd(
                work,
                account,
                os.path.join(exported, "fullchain.pem"),
                os.path.join(exported, "privkey.pem"),
            )
        checkBanner(port)
        servers = [("ours", port, twistd.process.pid, f"{USER}:{PASSWORD}")]
        if vsftpd is not None:
            servers.append(("vsftpd", vsftpd.port, vsftpd.process.pid, "anonymous:"))
        spy = None if profile is None else PySpy(*profile, twistd.process.pid)
        source = os.path.join(account, "file.bin")
        for repeat in range(repeats):
            for tls in CIPHERS:
                for direction in ("download", "upload"):
                    for server in servers[:: 1 if repeat % 2 else -1]:
                        progress(f"repeat {repeat + 1}: {direction}, {tls}, {server[0]}")
                        upload = source if direction == "upload" else None
                        row = transfer(server, pebble.rootFile, tls, upload, account)
                        row.update(repeat=repeat, tls=tls, direction=direction, server=server[0])
                        rows.append(row)
        if spy is not None:
            spy.stop()
    finally:
        try:
            if vsftpd is not None:
                vsftpd.stop()
        finally:
            twistd.stop()
    return rows, missing


class PySpy:
    """
    py-spy recording a running process's stacks, raw, without pausing it.
    """

    def __init__(self, program: str, output: str, pid: int):
        self.process = subprocess.Popen(
            [program, "record", "--nonblocking", "--threads", "-r", "250", "-f", "raw"]
            + ["-o", output, "-p", str(pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # It takes a moment to attach.
        time.sleep(1.0)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
