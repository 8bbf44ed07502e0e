"""A real PostgreSQL server for the store's tests, started on loopback by the test itself."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A real PostgreSQL server on loopback, run as the `postgres` user (it refuses root)."""

    def __init__(self) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="voxfleet-pg-"))
        shutil.chown(self.data, "postgres", "postgres")
        self.port = _free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.as_postgres(str(PG_BIN / "initdb"), "-D", str(self.data / "db"), "--auth=trust", "-U", "postgres")
        self.start()

    @staticmethod
    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, cwd="/tmp")

    def start(self) -> None:
        self.as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data / "db"), "-l", str(self.data / "log"), "-w",
                         "-o", f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data}", "start")

    def stop(self, mode: str = "fast") -> None:
        self.as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data / "db"), "-m", mode, "-w", "stop")


@pytest.fixture(scope="session")
def postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 server binaries missing: scripts/setup.sh --test installs them")
    server = Postgres()
    try:
        yield server
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(server.data / "db"),
                        "-m", "immediate", "stop"], capture_output=True, cwd="/tmp")
        shutil.rmtree(server.data, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres):
    return postgres.url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/voxfleet.db"
    base = request.getfixturevalue("postgres_url")
    # a fresh database per test
    name = f"t{int(time.time() * 1e6)}_{os.getpid()}"
    import asyncio

    import asyncpg

    async def create() -> None:
        conn = await asyncpg.connect(base)
        await conn.execute(f'CREATE DATABASE "{name}"')
        await conn.close()

    asyncio.run(create())
    return base.rsplit("/", 1)[0] + f"/{name}"
