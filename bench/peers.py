"""Servers the benchmarks run side by side: haitatsu itself, Postfix and a minimal Twisted ESMTP
server (``bench/minimal_smtp.py``), each a throwaway instance on loopback ports in a temporary
directory; and a DNS server for haitatsu's filters (``NameServer``).

Postfix comes from Debian's ``postfix`` package (``apt-get install postfix``; as root the
benchmarks install it themselves). Its instance accepts mail for one virtual domain on a loopback
port into its queue and delivers it to a maildir, with no chroot, so it works in a container.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.dirname(sys.executable)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds}s")


def ensure_debian_packages(*packages: str) -> None:
    missing = [
        p
        for p in packages
        if subprocess.run(["dpkg", "-s", p], capture_output=True).returncode != 0
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit(f"please install the Debian packages: {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    selections = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selections.encode(), check=True)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", *missing],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


class ChildProcess:
    """A server run as one child process (``self.proc``) writing to ``self.log``; ``stop()``
    asks it to end (SIGTERM), kills it after ``stop_grace`` seconds, and closes the log."""

    proc: subprocess.Popen | None = None
    stop_grace = 30

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.log.close()
            self.proc = None


class Postfix:
    """A Postfix instance: SMTP on 127.0.0.1:<port>, mail for ``domain`` into a maildir."""

    name = "postfix"

    def __init__(self, workdir: str, domain: str = "bench.test"):
        self.workdir = os.path.abspath(workdir)
        self.domain = domain
        self.port = free_port()
        self.config_dir = os.path.join(self.workdir, "etc")
        self.maildir = os.path.join(self.workdir, "mail")

    def start(self) -> None:
        ensure_debian_packages("postfix")
        # Postfix's daemons run as the postfix user: it must reach the directories (mkdtemp
        # makes them 0700).
        os.chmod(self.workdir, 0o755)
        for sub in ("etc", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(os.path.join(self.workdir, "data"), postfix_user.pw_uid, postfix_user.pw_gid)
        os.chown(self.maildir, postfix_user.pw_uid, postfix_user.pw_gid)
        _allow_config_directory(self.config_dir)
        main = {
            "compatibility_level": "3.6",
            "queue_directory": os.path.join(self.workdir, "queue"),
            "data_directory": os.path.join(self.workdir, "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "myhostname": "postfix.bench.local",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject",
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.maildir,
            "virtual_mailbox_maps": "static:box/",
            "virtual_uid_maps": f"static:{postfix_user.pw_uid}",
            "virtual_gid_maps": f"static:{postfix_user.pw_gid}",
            "virtual_mailbox_limit": "0",
            "message_size_limit": "0",
            "maillog_file": os.path.join(self.workdir, "maillog"),
            "maillog_file_prefixes": self.workdir,
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "default_process_limit": "200",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
        }
        with open(os.path.join(self.config_dir, "main.cf"), "w") as f:
            f.writelines(f"{k} = {v}\n" for k, v in main.items())
        with open("/etc/postfix/master.cf") as f:
            master = f.read()
        lines = []
        for line in master.splitlines():
            fields = line.split()
            if fields and not line[0].isspace() and not line.startswith("#") and len(fields) > 4:
                if fields[0] == "smtp" and fields[1] == "inet":
                    fields[0] = f"127.0.0.1:{self.port}"
                fields[4] = "n"  # no chroot
                line = "  ".join(fields)
            lines.append(line)
        lines.append("postlog   unix-dgram n  -       n       -       1       postlogd")
        with open(os.path.join(self.config_dir, "master.cf"), "w") as f:
            f.write("\n".join(_dedupe_services(lines)) + "\n")
        _postfix("-c", self.config_dir, "check")
        _postfix("-c", self.config_dir, "start")
        wait_for_port(self.port)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", self.config_dir, "stop"], capture_output=True)
        time.sleep(0.5)

    def delivered(self) -> int:
        new = os.path.join(self.maildir, "box", "new")
        return len(os.listdir(new)) if os.path.isdir(new) else 0


def _allow_config_directory(config_dir: str) -> None:
    """``postfix -c DIR`` needs DIR in ``alternate_config_directories`` of the default main.cf:
    one line, listing the instances' directories that still exist plus this one."""
    default_main = "/etc/postfix/main.cf"
    lines = open(default_main).read().splitlines() if os.path.exists(default_main) else []
    keep, dirs = [], []
    for line in lines:
        if line.startswith("alternate_config_directories"):
            dirs += [d for d in line.split("=", 1)[1].replace(",", " ").split() if os.path.isdir(d)]
        else:
            keep.append(line)
    dirs = sorted(set(dirs) | {config_dir})
    keep.append("alternate_config_directories = " + " ".join(dirs))
    with open(default_main, "w") as f:
        f.write("\n".join(keep) + "\n")


def _postfix(*args):
    """Run the postfix command; it reports fatal errors only to a terminal or its log, so on
    failure run it again under ``script`` to show why."""
    if subprocess.run(["postfix", *args], capture_output=True).returncode == 0:
        return
    shown = subprocess.run(
        ["script", "-qc", " ".join(["postfix", *args]), "/dev/null"],
        capture_output=True,
        text=True,
    )
    raise RuntimeError(f"postfix {' '.join(args)} failed: {shown.stdout.strip()}")


def _dedupe_services(lines):
    seen = set()
    for line in lines:
        fields = line.split()
        key = tuple(fields[:2]) if fields and not line[0].isspace() else None
        if key and key in seen:
            continue
        if key:
            seen.add(key)
        yield line


class MinimalSMTP(ChildProcess):
    """``bench/minimal_smtp.py``: Twisted's ESMTP writing and fsyncing each message to a file,
    nothing else; the ceiling of an SMTP server on our stack."""

    name = "minimal twisted"

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.port = free_port()
        self.maildir = os.path.join(self.workdir, "mail")
        self.proc = None

    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        self.log = open(os.path.join(self.workdir, "minimal.log"), "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                os.path.join(ROOT, "bench", "minimal_smtp.py"),
                str(self.port),
                self.maildir,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)

    def delivered(self) -> int:
        return len(os.listdir(self.maildir)) if os.path.isdir(self.maildir) else 0


class Dovecot(ChildProcess):
    """A Dovecot 2.3 IMAP server (Debian ``dovecot-imapd``) started by root with its own config
    file: plaintext IMAP on 127.0.0.1:<port>, one passwd-file user whose mail is a maildir
    under the temporary directory, owned by ``nobody``; no SSL, log to a file."""

    name = "dovecot"
    stop_grace = 60
    user = "box@bench.test"
    password = "bench-password"

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.port = free_port()
        self.config = os.path.join(self.workdir, "dovecot.conf")
        self.maildir = os.path.join(self.workdir, "mail", "box")
        self.proc = None

    def configure(self) -> None:
        ensure_debian_packages("dovecot-imapd")
        if os.geteuid() != 0:
            raise SystemExit("the Dovecot peer is started by root (it drops to nobody)")
        nobody = pwd.getpwnam("nobody")
        # mkdtemp makes 0700 directories: the mail processes run as nobody.
        os.chmod(self.workdir, 0o755)
        for sub in ("run", "state", "home", "mail", "mail/box"):
            os.makedirs(os.path.join(self.workdir, sub), exist_ok=True)
        for sub in ("home", "mail", "mail/box"):
            os.chown(os.path.join(self.workdir, sub), nobody.pw_uid, nobody.pw_gid)
        passwd = os.path.join(self.workdir, "passwd")
        with open(passwd, "w") as f:
            f.write(f"{self.user}:{{PLAIN}}{self.password}::::::\n")
        w = self.workdir
        with open(self.config, "w") as f:
            f.write(
                f"""
base_dir = {w}/run
state_dir = {w}/state
instance_name = dovecot-bench-{self.port}
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
log_path = {w}/dovecot.log
info_log_path = {w}/dovecot.log
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = {nobody.pw_uid}
first_valid_gid = {nobody.pw_gid}
mail_max_userip_connections = 10000
default_process_limit = 5000
default_client_limit = 20000
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd}
}}
userdb {{
  driver = static
  args = uid={nobody.pw_uid} gid={nobody.pw_gid} home={w}/home mail=maildir:{self.maildir}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 5000
}}
"""
            )

    def start(self) -> None:
        if not os.path.exists(self.config):
            self.configure()
        self.log = open(os.path.join(self.workdir, "dovecot.stderr"), "wb")
        self.proc = subprocess.Popen(
            ["dovecot", "-F", "-c", self.config], stdout=self.log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.stop()
            log = os.path.join(self.workdir, "dovecot.log")
            shown = open(log).read()[-2000:] if os.path.exists(log) else ""
            raise RuntimeError("dovecot did not start: " + shown) from None

    def pids(self) -> list[int]:
        """The master and every process below it (login, auth, imap, ...)."""
        return process_tree(self.proc.pid) if self.proc else []


def process_tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids) -> float:
    """User plus system CPU time of ``pids`` so far, in seconds."""
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def memory_kib(pids) -> tuple[int, int]:
    """``(RSS, PSS)`` summed over ``pids`` in KiB. PSS divides each shared page among the
    processes mapping it, so it is the fair total for a server of many processes."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss


class Haitatsu(ChildProcess):
    """``twistd -n haitatsu`` from this checkout with a temporary config and data directory."""

    name = "haitatsu"
    token = "bench-token"

    def __init__(
        self,
        workdir: str,
        domain: str = "bench.test",
        extra_config: str = "",
        label: str = "haitatsu",
        submission: bool = False,
        imap: bool = False,
    ):
        self.workdir = os.path.abspath(workdir)
        self.domain = domain
        self.extra_config = extra_config
        self.name = label
        self.port = free_port()
        self.http_port = free_port()
        #: A plaintext submission listener (TLS is off in the benchmark), when asked for.
        self.submission_port = free_port() if submission else None
        #: A plaintext IMAP listener (TLS is off in the benchmark), when asked for.
        self.imap_port = free_port() if imap else None
        self.proc = None
        self.mailbox_id = None

    def write_config(self) -> str:
        """Write the instance's ``haitatsu.pkl`` and return its path: a benchmark that fills
        the store in-process before ``start`` opens the store this config names."""
        config = os.path.join(self.workdir, "haitatsu.pkl")
        os.makedirs(self.workdir, exist_ok=True)
        submission = f"127.0.0.1:{self.submission_port}" if self.submission_port else ""
        imap = f"127.0.0.1:{self.imap_port}" if self.imap_port else ""
        with open(config, "w") as f:
            f.write(
                f"""
server {{
  api_addr = "127.0.0.1:{self.http_port}"
  public_hostname = "haitatsu.bench.local"
  instance_name = "bench"
  data_dir = "data"
}}
smtp {{ inbound_addr = "127.0.0.1:{self.port}" }}
imap {{ addr = "{imap}" max_connections_per_ip = 0 }}  // 2,000 IDLE sessions from 127.0.0.1
submission {{ starttls_addr = "{submission}" tls_addr = "" }}
tls {{ mode = "off" }}
api {{ service_token = "{self.token}" }}
limits {{
  max_message_size_bytes = 104857600 max_inbound_recipients = 1000
  // Postfix exempts loopback (mynetworks) from its per-client limits; so do we here.
  max_connections_per_ip = 0 inbound_messages_per_minute_per_ip = 0
}}
logging {{ level = "warn" }}
{self.extra_config}
"""
            )
        return config

    def start(self) -> None:
        """Start the server, and create the benchmark mailbox unless ``mailbox_id`` is set
        (a mailbox loaded before the start)."""
        self.config_path = self.write_config()
        self._spawn()
        if self.mailbox_id is not None:
            return
        status, body = self.http(
            "POST", "/api/v1/mailboxes", {"primary_address": f"box@{self.domain}"}
        )
        if status != 201:
            raise RuntimeError(f"cannot create the mailbox: {status} {body!r}")
        self.mailbox_id = json.loads(body)["data"]["id"]

    def restart(self) -> None:
        """Stop and start the process again on the same data (a fresh process)."""
        self.stop()
        self._spawn()

    def env(self) -> dict:
        env = dict(os.environ, PYTHONPATH=ROOT)
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
        return env

    def _spawn(self) -> None:
        self.log = open(os.path.join(self.workdir, "twistd.log"), "ab")
        self.proc = subprocess.Popen(
            [
                os.path.join(VENV_BIN, "twistd"),
                "--pidfile=",
                "-n",
                "haitatsu",
                "--config",
                self.config_path,
            ],
            cwd=self.workdir,
            env=self.env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haitatsu exited; see {self.workdir}/twistd.log")
            try:
                if self.http("GET", "/ready", auth=False)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("haitatsu did not become ready")

    def app_password(self, scopes=("smtp",), dkim: bool = True) -> str:
        """A new app password for the benchmark mailbox with ``scopes``, and (``dkim``) a DKIM
        key for its domain (submission signs every message)."""
        if dkim:
            status, body = self.http(
                "POST", "/api/v1/dkim", {"domain": self.domain, "selector": "bench"}
            )
            if status != 201:
                raise RuntimeError(f"cannot create a DKIM key: {status} {body!r}")
        status, body = self.http(
            "POST",
            f"/api/v1/mailboxes/{self.mailbox_id}/passwords",
            {"name": "bench", "scopes": list(scopes)},
        )
        if status != 201:
            raise RuntimeError(f"cannot create an app password: {status} {body!r}")
        return json.loads(body)["data"]["password"]

    def http(self, method, path, body=None, auth=True):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}", data=data, method=method
        )
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()

    def stored_bytes(self) -> int:
        """What the mailbox holds (``used_bytes``): the benchmark checks nothing was lost."""
        status, body = self.http("GET", f"/api/v1/mailboxes/{self.mailbox_id}")
        return json.loads(body)["data"].get("used_bytes", 0)


def process_cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (Linux ``/proc``). On a machine
    shared with other work, CPU per message moves much less than messages per second."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def remove(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def postgres_s3_config(workdir: str) -> str:
    """Config for haitatsu on PostgreSQL and S3: a fresh database on the local server
    (``HAITATSU_BENCH_POSTGRES_DSN``) and a ``moto_server`` with a bucket, both removed at exit.

    moto is a Python S3 emulator, so it bounds the figures: on MinIO or AWS the blob side is
    faster. The same fixture as the tests (``tests.support.MotoServer``) starts it.
    """
    import atexit
    import secrets

    import psycopg2
    from psycopg2.extensions import make_dsn, parse_dsn

    sys.path.insert(0, ROOT)
    from tests.support import MotoServer

    admin_dsn = os.environ.get(
        "HAITATSU_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"
    )
    name = f"haitatsu_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    atexit.register(drop)
    moto = MotoServer().start()
    atexit.register(moto.stop)
    bucket = moto.create_bucket()
    params = parse_dsn(admin_dsn)
    params["dbname"] = name
    return f"""
database {{ driver = "postgres" dsn = "{make_dsn(**params)}" max_connections = 10 }}
s3 {{
  endpoint = "{moto.endpoint}"
  bucket = "{bucket}"
  access_key_id = "{moto.access_key_id}"
  secret_access_key = "{moto.secret_access_key}"
  region = "us-east-1"
}}
"""


class NameServer(ChildProcess):
    """An authoritative DNS server on 127.0.0.1 (``twistd -n dns`` from Twisted, no recursion)
    serving ``zones`` (Python zone syntax, as ``twisted.names.authority.PySourceAuthority``
    reads), so filters that look things up (SPF, DMARC, DKIM keys) get quick answers instead
    of the network's; ``haitatsu_config()`` points haitatsu's resolver at it."""

    def __init__(self, workdir: str, zones: str):
        self.workdir = os.path.abspath(workdir)
        self.zones = zones
        self.port = free_port()
        self.proc = None

    def start(self) -> None:
        os.makedirs(self.workdir, exist_ok=True)
        zone_file = os.path.join(self.workdir, "zones.py")
        with open(zone_file, "w") as f:
            f.write(self.zones)
        self.log = open(os.path.join(self.workdir, "dns.log"), "wb")
        self.proc = subprocess.Popen(
            [
                os.path.join(VENV_BIN, "twistd"),
                "--pidfile=",
                "-n",
                "dns",
                "--interface",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--pyzone",
                zone_file,
            ],
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port)  # TCP; the UDP side opens with it

    def haitatsu_config(self) -> str:
        return f'dns {{ nameservers = new Listing {{ "127.0.0.1:{self.port}" }} }}\n'
