"""Debian's ``pebble`` ACME test server and ``pebble-challtestsrv`` (its DNS) on loopback.

``Pebble`` starts both on free 127.0.0.1 ports: challtestsrv answers every A query with
127.0.0.1 (and no AAAA), so pebble validates any name against our listeners, on the ports
given as ``http_port`` (HTTP-01) and ``tls_port`` (TLS-ALPN-01). Pebble's own HTTPS
certificate comes from a ``TestCA`` (``ca_file`` is what an ACME client must trust). Real
validation, no sleeps, no rejected nonces; every start is a fresh CA (new root, intermediate
and accounts).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

from cryptography import x509

from tests.tls.ca import TestCA

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
CHALLTESTSRV = shutil.which("pebble-challtestsrv") or "/usr/bin/pebble-challtestsrv"


def pebble_missing() -> str | None:
    """Why the pebble tests cannot run here, or None."""
    for tool in (PEBBLE, CHALLTESTSRV):
        if not os.access(tool, os.X_OK):
            return f"{os.path.basename(tool)} is not installed (apt-get install pebble)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, process: subprocess.Popen, name: str, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port} within {seconds}s")


class Pebble:
    """One pebble + challtestsrv pair. ``start()`` and ``stop()`` block (use a thread)."""

    def __init__(self, directory: str, http_port: int, tls_port: int):
        self.directory = directory
        self.http_port = http_port
        self.tls_port = tls_port
        self.ca = TestCA(os.path.join(directory, "pebble-ca"))
        self.ca_file = self.ca.ca_file
        self.acme_port = free_port()
        self.management_port = free_port()
        self.dns_port = free_port()
        self.challtestsrv_port = free_port()
        self.processes: list[subprocess.Popen] = []

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.acme_port}/dir"

    def start(self) -> None:
        cert_file, key_file, _ = self.ca.issue("pebble", "127.0.0.1")
        config = os.path.join(self.directory, "pebble-config.json")
        with open(config, "w") as f:
            json.dump(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.acme_port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": cert_file,
                        "privateKey": key_file,
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                    }
                },
                f,
            )
        log = open(os.path.join(self.directory, "pebble.log"), "wb")
        self.processes.append(
            subprocess.Popen(
                [
                    CHALLTESTSRV,
                    "-dns01",
                    f"127.0.0.1:{self.dns_port}",
                    "-management",
                    f"127.0.0.1:{self.challtestsrv_port}",
                    "-defaultIPv4",
                    "127.0.0.1",
                    "-defaultIPv6",
                    "",
                    "-http01",
                    "",
                    "-https01",
                    "",
                    "-tlsalpn01",
                    "",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_for_port(self.challtestsrv_port, self.processes[-1], "pebble-challtestsrv")
        env = dict(
            os.environ,
            PEBBLE_VA_NOSLEEP="1",
            PEBBLE_VA_ALWAYS_VALID="0",
            PEBBLE_WFE_NONCEREJECT="0",
            PEBBLE_AUTHZREUSE="0",
        )
        self.processes.append(
            subprocess.Popen(
                [PEBBLE, "-config", config, "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.directory,
            )
        )
        log.close()
        _wait_for_port(self.acme_port, self.processes[-1], "pebble")
        _wait_for_port(self.management_port, self.processes[-1], "pebble")

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self.processes.clear()

    def log(self) -> str:
        try:
            with open(os.path.join(self.directory, "pebble.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def _management(self, path: str) -> bytes:
        context = ssl.create_default_context(cafile=self.ca_file)
        url = f"https://127.0.0.1:{self.management_port}{path}"
        with urllib.request.urlopen(url, context=context, timeout=10) as answer:
            return answer.read()

    def root(self) -> x509.Certificate:
        """The root pebble signs with in this run (blocking)."""
        return x509.load_pem_x509_certificate(self._management("/roots/0"))

    def intermediate(self) -> x509.Certificate:
        """The intermediate that issued this run's certificates (blocking)."""
        return x509.load_pem_x509_certificate(self._management("/intermediates/0"))
