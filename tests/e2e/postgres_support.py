"""A throw-away PostgreSQL server for the tests of the Responses store on PostgreSQL: Debian's ``postgresql``
package (CI installs it), a new cluster in a temporary directory, listening on 127.0.0.1 only on a free port,
its unix socket in that directory. A missing PostgreSQL fails the test: nothing is skipped.

PostgreSQL refuses to run as root, so under root the cluster belongs to the ``postgres`` system user and its
commands run through ``runuser``. Host connections need the password (scram-sha-256), so the tests also see
that the password never shows.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from typing import Iterator

import pytest
from e2e_support import free_port

PASSWORD = "s3cret-Pw"  # the superuser's; tests check it never shows in output
START_TIMEOUT_S = 30


def _bin_dir() -> str:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda path: int(path.split("/")[-3]))
    if found:
        return os.path.dirname(found[-1])
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql): the Responses store's "
                           "PostgreSQL tests need initdb and pg_ctl")
    return os.path.dirname(os.path.realpath(initdb))


class PostgresServer:
    """One cluster: ``start()``, ``stop()`` (and start again: same port and data), ``close()`` removes it."""

    def __init__(self) -> None:
        self.bin_dir = _bin_dir()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="e2e-postgres-")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "server.log")
        self._owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._owner is not None:
            os.chown(self.dir, self._owner.pw_uid, self._owner.pw_gid)
        password_file = os.path.join(self.dir, "password")
        with open(password_file, "w") as handle:
            handle.write(PASSWORD + "\n")
        self._run("initdb", "-D", self.data_dir, "-U", "postgres", "--pwfile", password_file, "-E", "UTF8",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "--no-sync")
        os.unlink(password_file)

    @property
    def url(self) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/postgres"

    def start(self) -> "PostgresServer":
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", self.data_dir, "-l", self.log_path, "-w", "-t", str(START_TIMEOUT_S),
                  "-o", options, "start")
        return self

    def stop(self) -> None:
        if os.path.exists(os.path.join(self.data_dir, "postmaster.pid")):
            self._run("pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop")

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_text(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()[-8000:]
        except OSError:
            return ""

    def _run(self, command: str, *args: str) -> None:
        argv = [os.path.join(self.bin_dir, command), *args]
        if self._owner is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=START_TIMEOUT_S + 10)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed ({done.returncode}): {done.stdout}{done.stderr}\n{self.log_text()}")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server running for the module's tests."""
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.close()
