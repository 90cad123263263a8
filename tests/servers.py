"""Real PostgreSQL and Redis servers for the test session, from the Debian packages.

PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
`postgres` system user (created by Debian's package) on a data directory it owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bindir() -> str:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return os.path.dirname(found[-1])


class PostgresServer:
    def __init__(self, base: str):
        self.base = base
        self.data = os.path.join(base, "data")
        self.sock = os.path.join(base, "sock")
        self.port = free_port()
        self.bindir = pg_bindir()
        self.proc: subprocess.Popen | None = None
        self.user = None
        if os.geteuid() == 0:
            self.user = "postgres"

    def _demote(self):
        return {"user": self.user} if self.user else {}

    def start(self) -> None:
        os.makedirs(self.sock, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            for path in (self.base, self.sock):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        subprocess.run(
            [
                os.path.join(self.bindir, "initdb"),
                "-D",
                self.data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            capture_output=True,
            **self._demote(),
        )
        self._launch()

    def _launch(self) -> None:
        self.proc = subprocess.Popen(
            [
                os.path.join(self.bindir, "postgres"),
                "-D",
                self.data,
                "-p",
                str(self.port),
                "-k",
                self.sock,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.base, "postgres.log"), "a"),
            **self._demote(),
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            ready = subprocess.run(
                [os.path.join(self.bindir, "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
            )
            if ready.returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(
            "PostgreSQL did not start: "
            + open(os.path.join(self.base, "postgres.log")).read()[-2000:]
        )

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def halt(self) -> None:
        """Stop the server (fast shutdown: clients are disconnected), keeping its data, so
        that `resume` starts it again on the same port: an outage, not a new server."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def resume(self) -> None:
        self._launch()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)


class RedisServer:
    def __init__(self, base: str):
        self.base = base
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        os.makedirs(self.base, exist_ok=True)
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.base,
            ],
            stdout=open(os.path.join(self.base, "redis.log"), "w"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 15
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@contextlib.contextmanager
def service_servers(base: str):
    """PostgreSQL and Redis under `base`, with the service's database created and migrated:
    yields (postgres, redis, database_url); closes the service's pools and stops both after."""
    import psycopg

    from ffmpeg_api import db as dbmod

    os.makedirs(base, exist_ok=True)
    os.chmod(base, 0o755)
    pg = PostgresServer(os.path.join(base, "pg"))
    rd = RedisServer(os.path.join(base, "redis"))
    os.makedirs(pg.base)
    pg.start()
    rd.start()
    try:
        with psycopg.connect(pg.url(), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ffmpeg_api")
        url = pg.url("ffmpeg_api")
        dbmod.upgrade(url)
        yield pg, rd, url
    finally:
        dbmod.close_pools()
        rd.stop()
        pg.stop()


@contextlib.contextmanager
def moto_server():
    """A real S3 API (moto's server) on a free loopback port, spoken to over HTTP: its
    endpoint URL. Never an in-process mock."""
    import sys

    port = free_port()
    binary = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def moto_bucket(bucket: str):
    """moto_server() with `bucket` created in it (credentials for moto in the environment,
    where boto3 and the processes the tests start find them): its endpoint URL."""
    import boto3

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    with moto_server() as url:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket=bucket)
        yield url
