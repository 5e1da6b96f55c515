"""A real tracking server for tests: PostgreSQL and `mlflow server --app-name basic-auth`.

Everything listens on 127.0.0.1 only, lives in one temp folder and is torn down with no
process left behind (checked, not assumed):

    with tracking_stack(tmp_path) as srv:
        env = srv.client_env()          # MLFLOW_TRACKING_URI / _USERNAME / _PASSWORD of a study user
        srv.mlflow.stop(); srv.mlflow.start()   # same port, same stores (fault tests)

The server is configured as infra/mlflow deploys it: the auth settings of
infra/mlflow/basic_auth.ini, the database password only in PGPASSWORD, MLflow's job runner off.

PostgreSQL comes from the `pgserver` wheel (a relocatable PostgreSQL build; only its binaries
are used: its Python API listens on a unix socket only and, as root, chmods every parent
folder), else from binaries on PATH. PostgreSQL refuses to run as root, so as root its
processes run as `nobody` in a folder made under the system temp dir that `nobody` can reach.
"""

from __future__ import annotations

import configparser
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
INFRA_AUTH_INI = Path(__file__).resolve().parents[1] / "infra" / "mlflow" / "basic_auth.ini"


class ServerStartError(RuntimeError):
    """A server of the stack did not come up; the message carries its log tail."""


# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else f"(no log at {path})"


def _procs() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, session id) of every process, from /proc (Linux)."""
    table = {}
    for p in Path("/proc").glob("[0-9]*"):
        try:
            f = (
                (p / "stat").read_text().rsplit(")", 1)[1].split()
            )  # after "pid (comm)": state ppid pgrp session
            table[int(p.name)] = (f[0], int(f[1]), int(f[3]))
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
    return table


def family(root: int) -> set[int]:
    """Live processes started by `root`: its session (orphaned workers stay in it) and its
    descendants (PostgreSQL's children call setsid, so the session alone misses them)."""
    table = _procs()
    found = {pid for pid, (st, _, sid) in table.items() if sid == root and st != "Z"}
    found |= {root} if root in table and table[root][0] != "Z" else set()
    grew = True
    while grew:
        kids = {pid for pid, (st, ppid, _) in table.items() if ppid in found and st != "Z"} - found
        found |= kids
        grew = bool(kids)
    return found


def _alive(pids: set[int]) -> set[int]:
    table = _procs()
    return {p for p in pids if p in table and table[p][0] != "Z"}


def _stop_tree(
    proc: subprocess.Popen, name: str, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> None:
    """Signal the process group of `proc` (started with start_new_session=True: its pid is the
    group id), escalate to SIGKILL, and fail if any process it started survives."""
    tree = family(proc.pid)
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    deadline = time.monotonic() + timeout
    while (left := _alive(tree)) and time.monotonic() < deadline:
        time.sleep(0.1)  # children notice their parent is gone and exit by themselves
    for pid in left:  # only processes this helper started (snapshot above), by pid
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.2)
    if left := _alive(left):
        raise RuntimeError(f"{name}: processes {sorted(left)} outlived the server")


def _pg_bin_dir() -> Path:
    import importlib.util

    # Located, not imported: importing pgserver sets up lock files and a runtime dir we don't use.
    if (spec := importlib.util.find_spec("pgserver")) and spec.submodule_search_locations:
        d = (
            Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        )  # the wheel's relocatable build
        if (d / "postgres").is_file():
            return d
    for exe in ("pg_ctl", "initdb", "postgres"):
        if found := shutil.which(exe):
            d = Path(found).resolve().parent
            if (d / "initdb").is_file() and (d / "postgres").is_file():
                return d
    raise ServerStartError(
        "no PostgreSQL server binaries: install the test extra (`pip install -c constraints.txt -e '.[test]'`, "
        "which brings the pgserver wheel) or put initdb/postgres on PATH"
    )


def _unprivileged() -> dict:
    """Popen keyword arguments that drop root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    nobody = pwd.getpwnam("nobody")
    return {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}


# ----------------------------------------------------------------------------- PostgreSQL


class Postgres:
    """A throw-away PostgreSQL cluster on 127.0.0.1 with a generated superuser password."""

    def __init__(self) -> None:
        self.bin = _pg_bin_dir()
        self.user, self.password = "postgres", secrets.token_urlsafe(24)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._as = _unprivileged()
        closed = [
            d for d in [self.bin, *self.bin.parents] if self._as and not d.stat().st_mode & 0o001
        ]
        if closed:  # `nobody` must traverse every folder down to the binaries
            raise ServerStartError(
                f"PostgreSQL refuses to run as root, so it runs as `nobody`, who cannot reach "
                f"{self.bin}: {closed[-1]} is not searchable by others (chmod o+x)"
            )
        # Not under pytest's tmp dir: that is 0700 root, and the server may run as `nobody`.
        self.root = Path(tempfile.mkdtemp(prefix="cytoray-pg-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        if self._as:
            os.chown(self.root, self._as["user"], self._as["group"])

    def uri(self, db: str) -> str:
        """SQLAlchemy URI without the password: libpq takes it from PGPASSWORD, as in
        infra/mlflow (a password in a URI shows in `ps` and in logged command lines)."""
        # The driver is named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, not the psycopg2 we ship.
        return f"postgresql+psycopg2://{self.user}@{HOST}:{self.port}/{db}"

    def connect(self, db: str = "postgres", **kw):
        import psycopg2

        return psycopg2.connect(
            host=HOST, port=self.port, user=self.user, password=self.password, dbname=db, **kw
        )

    def _run(self, args: list[str]) -> None:
        r = subprocess.run(
            args,
            capture_output=True,
            text=True,
            cwd=self.root,
            env={**os.environ, "LC_ALL": "C"},
            **self._as,
        )
        if r.returncode:
            raise ServerStartError(
                f"{' '.join(args[:2])} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}"
            )

    def start(self, timeout: float = 20.0) -> None:
        if not self.data.exists():
            pw = self.root / "pw"
            pw.write_text(self.password)
            if self._as:
                os.chown(pw, self._as["user"], self._as["group"])
            # scram passwords over TCP, as a real deployment; --no-sync: a test cluster needs no durability on disk
            self._run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    self.user,
                    f"--pwfile={pw}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
            pw.unlink()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-h",
                    HOST,
                    "-p",
                    str(self.port),
                    "-c",
                    "unix_socket_directories=",  # TCP on loopback only, no socket file anywhere
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                ],  # speed; only the MLflow server is faulted here
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                start_new_session=True,
                **self._as,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        import psycopg2

        deadline, err = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"postgres exited with {self.proc.returncode}:\n{_tail(self.log)}"
                )
            try:
                self.connect(connect_timeout=2).close()
                return
            except psycopg2.OperationalError as e:
                err = e
                time.sleep(0.1)
        raise ServerStartError(
            f"postgres on {HOST}:{self.port} not ready after {timeout:.0f} s ({err}):\n{_tail(self.log)}"
        )

    def create_database(self, name: str) -> str:
        conn = self.connect()
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.uri(name)

    def stop(self) -> None:
        if self.proc is not None:
            _stop_tree(
                self.proc, "postgres", sig=signal.SIGINT
            )  # SIGINT: "fast" shutdown, no waiting for clients
            self.proc = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------- MLflow server


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class MlflowServer:
    """`mlflow server` with the basic-auth app, proxied artefacts and PostgreSQL stores.

    stop()/start() keep the port, stores, secret key and users, as a restarted deployment would.
    """

    def __init__(self, root: Path, backend_uri: str, auth_db_uri: str, db_password: str) -> None:
        self.root, self.backend_uri, self.db_password = root, backend_uri, db_password
        self.port = free_port()
        self.uri = f"http://{HOST}:{self.port}"
        self.artifacts = root / "artifacts"
        self.log = root / "mlflow-server.log"
        self.auth_config = root / "basic_auth.ini"
        # The auth settings shipped in infra/ (NO_PERMISSIONS by default, credential cache, admin
        # name), with only the database moved to this stack's PostgreSQL.
        cfg = configparser.ConfigParser()
        cfg.read_string(INFRA_AUTH_INI.read_text())
        cfg["mlflow"]["database_uri"] = auth_db_uri
        self.admin = Credentials(cfg["mlflow"]["admin_username"], secrets.token_urlsafe(18))
        with open(self.auth_config, "w") as f:
            cfg.write(f)
        self.auth_config.chmod(0o600)
        self.secret_key = secrets.token_hex(16)  # CSRF key: must stay the same across restarts
        self.proc: subprocess.Popen | None = None

    def _env(self) -> dict:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")
        }  # never the client's identity
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(self.auth_config),
            MLFLOW_FLASK_SERVER_SECRET_KEY=self.secret_key,
            MLFLOW_AUTH_ADMIN_PASSWORD=self.admin.password,  # the admin password only from the environment
            PGPASSWORD=self.db_password,  # both stores' database password, never in a URI
            # The job runner (7 huey consumer processes) serves GenAI features cytoray does not use;
            # on 2 cores it triples the start time.
            MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        )
        return env

    def start(self, timeout: float = 60.0) -> float:
        """Start and wait until an authenticated request is answered; returns the seconds it took."""
        if self.proc is not None:
            raise RuntimeError("mlflow server already running")
        t0 = time.monotonic()
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            self.backend_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            str(self.artifacts),
            "--app-name",
            "basic-auth",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=self._env(),
                start_new_session=True,
            )
        self._wait_ready(t0 + timeout)
        return time.monotonic() - t0

    def _wait_ready(self, deadline: float) -> None:
        import requests

        err = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise ServerStartError(f"mlflow server exited before answering:\n{_tail(self.log)}")
            try:
                r = requests.get(
                    f"{self.uri}/api/2.0/mlflow/users/current",
                    auth=(self.admin.username, self.admin.password),
                    timeout=5,
                )
                if r.status_code == 200:
                    return
                if r.status_code == 404:  # answering, but without the users API: no auth app
                    self.stop()
                    raise ServerStartError(
                        f"mlflow server at {self.uri} runs without the basic-auth app:\n{_tail(self.log)}"
                    )
                err = f"HTTP {r.status_code}: {r.text[:200]}"
            except (
                requests.RequestException
            ) as e:  # refused while binding, or slow on its first request
                err = e
            time.sleep(0.2)
        self.stop()
        raise ServerStartError(
            f"mlflow server at {self.uri} did not answer in time ({err}):\n{_tail(self.log)}"
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop_tree(self.proc, "mlflow server")
            self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def create_user(self, username: str) -> Credentials:
        import requests

        creds = Credentials(username, secrets.token_urlsafe(18))
        r = requests.post(
            f"{self.uri}/api/2.0/mlflow/users/create",
            json={"username": username, "password": creds.password},
            auth=(self.admin.username, self.admin.password),
            timeout=10,
        )
        r.raise_for_status()
        return creds


# ----------------------------------------------------------------------------- the stack


@dataclass
class TrackingStack:
    postgres: Postgres
    mlflow: MlflowServer
    user: Credentials  # a non-admin user, as a study would run
    start_s: float  # seconds from nothing to an answering, authenticated server

    @property
    def uri(self) -> str:
        return self.mlflow.uri

    def client_env(self, creds: Credentials | None = None) -> dict:
        c = creds or self.user
        return {
            "MLFLOW_TRACKING_URI": self.uri,
            "MLFLOW_TRACKING_USERNAME": c.username,
            "MLFLOW_TRACKING_PASSWORD": c.password,
        }


@contextmanager
def tracking_stack(root: Path):
    """PostgreSQL (runs + registry, and the auth store in its own database) and an authenticated
    `mlflow server` with artefacts proxied to `root/artifacts`; everything stopped on exit."""
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    pg = Postgres()
    server = None
    try:
        pg.start()
        backend, auth_db = pg.create_database("mlflow"), pg.create_database("mlflow_auth")
        server = MlflowServer(root, backend, auth_db, pg.password)
        server.start()
        user = server.create_user("study")
        yield TrackingStack(pg, server, user, time.monotonic() - t0)
    finally:
        try:
            if server is not None:
                server.stop()
        finally:
            pg.remove()
