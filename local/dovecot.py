"""Debian's Dovecot as a real IMAP and POP3 server for the tests of the IMAP and POP3 sources.

Each instance has its own configuration file, base_dir, state and log files and maildirs under one
data directory, so it never touches the system's Dovecot (`/etc/dovecot`, `/run/dovecot`). It
listens on free loopback ports only:

    with Dovecot(tmp_path / "dovecot", ca) as server:
        server.add_user("ap@example.org", "secret")
        server.deliver("ap@example.org", mime_bytes)
        server.ports["imaps"]

`tls=True` (the default) serves IMAPS and POP3S and offers STARTTLS/STLS on the plain ports, with a
certificate from the given trustme CA; plaintext logins are refused until TLS is up. `tls=False`
serves plain IMAP and POP3 without STARTTLS: the server a client must refuse.

Running as root (CI), Dovecot refuses uid 0 for mail: the mail processes run as `nobody`, and its
maildirs, configuration and sockets live in a folder of the system's temporary directory that
`nobody` can traverse (a test's own tmp_path is private, 0700), removed again on stop; the log stays
in the data directory. Running as another user, every service runs as that user, all in data_dir.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

DOVECOT = "/usr/sbin/dovecot"
DH_PARAMETERS = Path("/usr/share/dovecot/dh.pem")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _end_group(master: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGKILL the master's whole process group, reap the master, and wait until the rest is gone too
    (its children are reaped by init, not by us)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(master.pid, signal.SIGKILL)
    master.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        while time.monotonic() < deadline:
            os.killpg(master.pid, 0)
            time.sleep(0.02)


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """One Dovecot master process and its children; `stop()` (or leaving the `with`) ends them all."""

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        ca: Any = None,  # a trustme.CA; required when tls is on
        *,
        tls: bool = True,
        extra_config: str = "",
        startup_timeout: float = 20.0,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.tls = tls
        self._ca = ca
        self._extra = extra_config
        self.startup_timeout = startup_timeout
        self._root = os.getuid() == 0
        if self._root:
            nobody = pwd.getpwnam("nobody")
            self._uid, self._gid = nobody.pw_uid, nobody.pw_gid
        else:
            self._uid, self._gid = os.getuid(), os.getgid()
        self.home = self.data_dir  # where it all lives; as root, a traversable folder made by start()
        self.log_file = self.data_dir / "dovecot.log"
        names = ("imap", "imaps", "pop3", "pop3s") if tls else ("imap", "pop3")
        self.ports: dict[str, int] = {name: 0 for name in names}
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_file(self) -> Path:
        return self.home / "dovecot.conf"

    @property
    def users_dir(self) -> Path:
        """One passwd file per user: Dovecot checks a passwd file for changes at most once a second, but opens
        a file it has not seen at once, so a user added by a test can log in right away."""
        return self.home / "users"

    @property
    def mail_dir(self) -> Path:
        return self.home / "mail"

    # -- users and mail ------------------------------------------------------------------------
    def add_user(self, user: str, password: str) -> None:
        """A passwd-file entry (`{PLAIN}` scheme, the test process's uid) and an empty maildir."""
        home = self.mail_dir / user
        self.create_folder(user, "INBOX")
        with (self.users_dir / user).open("w", encoding="utf-8") as users:
            users.write(f"{user}:{{PLAIN}}{password}:{self._uid}:{self._gid}::{home}::\n")

    def folder_path(self, user: str, folder: str = "INBOX") -> Path:
        """The maildir of a folder (`LAYOUT=fs`: `Archive/2026` is the directory `Archive/2026`)."""
        home = self.mail_dir / user
        return home if folder.upper() == "INBOX" else home / folder

    def create_folder(self, user: str, folder: str) -> None:
        path = self.folder_path(user, folder)
        for sub in ("cur", "new", "tmp"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        if self._root:
            # Every directory from the user's home down belongs to the mail user, as Dovecot would make them.
            top = self.mail_dir / user
            for directory in (path, *(p for p in path.rglob("*") if p.is_dir()), *path.parents):
                if directory == top or top in directory.parents:
                    os.chown(directory, self._uid, self._gid)

    def remove_folder(self, user: str, folder: str) -> None:
        """The folder and its UID list gone: created again, it has a new UIDVALIDITY. Renamed aside first, so it
        is gone for the server at once; a session still open on it (the app keeps signed-in connections) may
        write an index file into the renamed copy while it is deleted, so that is retried a few times."""
        path = self.folder_path(user, folder)
        aside = path.with_name(f".removed-{uuid.uuid4().hex}")
        os.replace(path, aside)
        for _ in range(20):
            try:
                shutil.rmtree(aside)
                return
            except OSError:
                time.sleep(0.05)
        shutil.rmtree(aside)

    def deliver(self, user: str, message: bytes, folder: str = "INBOX") -> Path:
        """Put a message in the folder's `new/` as a delivery agent does (write in tmp/, rename)."""
        return self.deliver_file(user, iter((message,)), folder)

    def deliver_file(self, user: str, chunks: Iterator[bytes], folder: str = "INBOX") -> Path:
        """As `deliver`, from chunks, for messages too big to build in memory."""
        base = self.folder_path(user, folder)
        if not (base / "new").is_dir():
            self.create_folder(user, folder)
        name = f"{time.time_ns()}.{uuid.uuid4().hex}.test"
        temporary = base / "tmp" / name
        with temporary.open("wb") as out:
            for chunk in chunks:
                out.write(chunk)
        if self._root:
            os.chown(temporary, self._uid, self._gid)
        final = base / "new" / name
        os.replace(temporary, final)
        return final

    # -- configuration -------------------------------------------------------------------------
    def _users(self) -> tuple[str, str]:
        if not self._root:
            me = pwd.getpwuid(self._uid).pw_name
            return me, me
        return "dovecot", "dovenull"

    def _config(self) -> str:
        internal, login = self._users()
        run = self.home / "run"
        # As root, the auth processes stay root: the passwd file lies under the test's private (0700) folder.
        auth_user = "service auth {\n  user = root\n}\nservice auth-worker {\n  user = root\n}\n"
        listeners_imap = f"inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.ports['imap']}\n  }}\n"
        listeners_pop3 = f"inet_listener pop3 {{\n    address = 127.0.0.1\n    port = {self.ports['pop3']}\n  }}\n"
        if self.tls:
            listeners_imap += (
                f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.ports['imaps']}\n"
                "    ssl = yes\n  }\n"
            )
            listeners_pop3 += (
                f"  inet_listener pop3s {{\n    address = 127.0.0.1\n    port = {self.ports['pop3s']}\n"
                "    ssl = yes\n  }\n"
            )
            tls = (
                "ssl = required\n"
                f"ssl_cert = <{self.home / 'server.pem'}\n"
                f"ssl_key = <{self.home / 'server.key'}\n"
                "ssl_min_protocol = TLSv1.2\n"
                "disable_plaintext_auth = yes\n"
            )
            if DH_PARAMETERS.is_file():
                tls += f"ssl_dh = <{DH_PARAMETERS}\n"
        else:
            # The server to refuse: no TLS at all, so it offers neither STARTTLS nor STLS.
            tls = "ssl = no\ndisable_plaintext_auth = no\n"
        return f"""# Written by local/dovecot.py for one test run.
base_dir = {run}
state_dir = {self.home / "state"}
instance_name = test-{uuid.uuid4().hex[:8]}
log_path = {self.log_file}
info_log_path = {self.log_file}
protocols = imap pop3
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = {self._uid}
last_valid_uid = {self._uid}
first_valid_gid = {self._gid}
{tls}
auth_mechanisms = plain login
# Refused logins answer at once: the tests try many on purpose (the per-address penalty for repeated failures
# still applies, as on a real server).
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.users_dir}/%u
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.users_dir}/%u
}}
mail_location = maildir:~:LAYOUT=fs
namespace inbox {{
  inbox = yes
  separator = /
}}
pop3_uidl_format = %08Xu%08Xv
service imap-login {{
  {listeners_imap}}}
service pop3-login {{
  {listeners_pop3}}}
# No listeners that would reach beyond the data directory.
service stats {{
  unix_listener stats-reader {{
    mode = 0600
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{auth_user if self._root else ""}{self._extra}
"""

    # -- lifecycle -----------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Dovecot:
        if self._process is not None:
            return self
        if not Path(DOVECOT).exists():
            raise DovecotError(f"{DOVECOT} not found: `make setup` installs dovecot-imapd and dovecot-pop3d")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._root:
            self.home = Path(tempfile.mkdtemp(prefix="dovecot-"))
            self.home.chmod(0o711)
        self.mail_dir.mkdir(exist_ok=True)
        self.users_dir.mkdir(exist_ok=True)
        if self.tls:
            if self._ca is None:
                raise DovecotError("a TLS Dovecot needs the test CA")
            cert = self._ca.issue_cert("127.0.0.1", "localhost")
            cert.cert_chain_pems[0].write_to_path(str(self.home / "server.pem"))
            for extra in cert.cert_chain_pems[1:]:
                extra.write_to_path(str(self.home / "server.pem"), append=True)
            cert.private_key_pem.write_to_path(str(self.home / "server.key"))
        for name in self.ports:
            self.ports[name] = _free_port()
        self.config_file.write_text(self._config(), encoding="utf-8")
        log = self.log_file.open("ab")
        try:
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own group: teardown can end every child with it
            )
        finally:
            log.close()
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        for port in self.ports.values():
            while True:
                if self._process is not None and self._process.poll() is not None:
                    tail = self.log_file.read_text(errors="replace")[-2000:]
                    raise DovecotError(f"dovecot exited with {self._process.returncode}:\n{tail}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise DovecotError(f"dovecot did not listen on {port}; see {self.log_file}") from None
                    time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGKILL to the whole process group: a test server keeps nothing worth a clean shutdown, and
        Dovecot's own SIGTERM handling takes seconds."""
        process, self._process = self._process, None
        try:
            if process is not None:
                _end_group(process, timeout)
        finally:
            if self.home != self.data_dir:
                shutil.rmtree(self.home, ignore_errors=True)
                self.home = self.data_dir

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
