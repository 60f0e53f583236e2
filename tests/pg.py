"""A real PostgreSQL for the tests: the Debian cluster, a fresh role and database per session.

The cluster is started if it is down (``pg_ctlcluster`` switches to the ``postgres`` user when
run as root) and left running; the role and database are dropped at the end of the session.
Anything missing is an error, never a skip: the PostgreSQL store must be tested.
"""
from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time
from dataclasses import dataclass

import asyncpg

HOST = "127.0.0.1"
_READY_TIMEOUT = 60.0


def _cluster() -> tuple[str, str, int]:
    """The Debian cluster to use (version, name, port): 15/main where the package made it,
    else the first one ``pg_lsclusters`` lists."""
    done = _run(["pg_lsclusters", "-h"], timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"PostgreSQL is not installed (pg_lsclusters: {done.stderr.strip() or done.returncode})")
    clusters = [(f[0], f[1], int(f[2])) for f in (line.split() for line in done.stdout.splitlines()) if len(f) >= 3]
    if not clusters:
        raise RuntimeError("no PostgreSQL cluster (pg_createcluster 15 main)")
    return next((c for c in clusters if c[:2] == ("15", "main")), clusters[0])


def _run(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _psql(sql: str, port: int) -> None:
    """Run one statement as the superuser ``postgres`` (peer authentication over the socket)."""
    done = _run(["su", "postgres", "-c", f"psql -p {port} -v ON_ERROR_STOP=1 -q -c " + shlex.quote(sql)])
    if done.returncode != 0:
        raise RuntimeError(f"psql failed ({sql.split()[0]} …): {done.stderr.strip()}")


def _ready(port: int) -> bool:
    return _run(["pg_isready", "-q", "-h", HOST, "-p", str(port)], timeout=10).returncode == 0


def ensure_running() -> int:
    """Start the cluster if it is down; its port."""
    version, name, port = _cluster()
    if _ready(port):
        return port
    done = _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, name, "start"], timeout=120)
    # "already running" (another session started it meanwhile) is fine; anything else is not.
    if done.returncode != 0 and not _ready(port):
        raise RuntimeError(f"cannot start PostgreSQL {version}/{name}: {(done.stderr or done.stdout).strip()}")
    deadline = time.monotonic() + _READY_TIMEOUT
    while not _ready(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not accept connections on {HOST}:{port} within {_READY_TIMEOUT:.0f}s")
        time.sleep(0.2)
    return port


@dataclass
class Database:
    role: str
    password: str
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}:{self.password}@{HOST}:{self.port}/{self.name}"

    async def reset(self) -> None:
        """Empty the database (every table, the schema version too): each test starts on a new one."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()


def _drop_stale(port: int) -> None:
    """Drop what sessions killed before their end left (named after their pid, now gone)."""
    done = _run(["su", "postgres", "-c",
                 f"psql -p {port} -Atc \"SELECT datname FROM pg_database WHERE datname LIKE 'sg\\_test\\_%'\""])
    for name in done.stdout.split():
        pid = name.split("_")[2]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            drop_database(Database(role=name, password="", name=name, port=port))


def create_database() -> Database:
    port = ensure_running()
    _drop_stale(port)
    suffix = f"{os.getpid()}_{secrets.token_hex(4)}"
    db = Database(role=f"sg_test_{suffix}", password=secrets.token_hex(16), name=f"sg_test_{suffix}", port=port)
    _psql(f"CREATE ROLE {db.role} LOGIN PASSWORD '{db.password}'", port)
    _psql(f"CREATE DATABASE {db.name} OWNER {db.role}", port)
    return db


def drop_database(db: Database) -> None:
    _psql(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)", db.port)
    _psql(f"DROP ROLE IF EXISTS {db.role}", db.port)
