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


@pytest.fixture(scope="session")
def postgres_url():
    """initdb + pg_ctl as the `postgres` user (the server refuses root), trust auth on loopback."""
    if not (PG_BIN / "initdb").exists():
        pytest.fail("PostgreSQL 15 server binaries missing: scripts/setup.sh --test installs them")
    data = Path(tempfile.mkdtemp(prefix="voxfleet-pg-"))
    shutil.chown(data, "postgres", "postgres")
    port = _free_port()

    def as_postgres(*argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, cwd="/tmp")

    as_postgres(str(PG_BIN / "initdb"), "-D", str(data / "db"), "--auth=trust", "-U", "postgres")
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "log"), "-w", "-o",
                f"-p {port} -c listen_addresses=127.0.0.1 -k {data}", "start")
    try:
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        yield url
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data / "db"),
                        "-m", "immediate", "stop"], capture_output=True, cwd="/tmp")
        shutil.rmtree(data, ignore_errors=True)


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
