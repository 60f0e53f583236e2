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

CLUSTER = ("15", "main")
HOST, PORT = "127.0.0.1", 5432
_READY_TIMEOUT = 60.0


def _run(cmd: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _psql(sql: str) -> None:
    """Run one statement as the superuser ``postgres`` (peer authentication over the socket)."""
    done = _run(["su", "postgres", "-c", "psql -v ON_ERROR_STOP=1 -q -c " + shlex.quote(sql)])
    if done.returncode != 0:
        raise RuntimeError(f"psql failed ({sql.split()[0]} …): {done.stderr.strip()}")


def _ready() -> bool:
    return _run(["pg_isready", "-q", "-h", HOST, "-p", str(PORT)], timeout=10).returncode == 0


def ensure_running() -> None:
    if _ready():
        return
    done = _run(["pg_ctlcluster", "--skip-systemctl-redirect", *CLUSTER, "start"], timeout=120)
    # "already running" (another session started it meanwhile) is fine; anything else is not.
    if done.returncode != 0 and not _ready():
        raise RuntimeError(f"cannot start PostgreSQL {'/'.join(CLUSTER)}: {(done.stderr or done.stdout).strip()}")
    deadline = time.monotonic() + _READY_TIMEOUT
    while not _ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL did not accept connections on {HOST}:{PORT} within {_READY_TIMEOUT:.0f}s")
        time.sleep(0.2)


@dataclass
class Database:
    role: str
    password: str
    name: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.role}:{self.password}@{HOST}:{PORT}/{self.name}"

    async def reset(self) -> None:
        """Empty the database (every table, the schema version too): each test starts on a new one."""
        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute("DROP SCHEMA IF EXISTS public CASCADE; CREATE SCHEMA public")
        finally:
            await conn.close()


def create_database() -> Database:
    ensure_running()
    suffix = f"{os.getpid()}_{secrets.token_hex(4)}"
    db = Database(role=f"sg_test_{suffix}", password=secrets.token_hex(16), name=f"sg_test_{suffix}")
    _psql(f"CREATE ROLE {db.role} LOGIN PASSWORD '{db.password}'")
    _psql(f"CREATE DATABASE {db.name} OWNER {db.role}")
    return db


def drop_database(db: Database) -> None:
    _psql(f"DROP DATABASE IF EXISTS {db.name} WITH (FORCE)")
    _psql(f"DROP ROLE IF EXISTS {db.role}")
