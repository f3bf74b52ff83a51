"""A PostgreSQL cluster of its own in a folder (Debian's ``postgresql`` binaries, not the
system service): ``initdb`` on the first start, ``pg_ctl`` on 127.0.0.1 afterwards. Its one
role, ``recseg``, logs in with a password (scram-sha-256) that is passed in files, never on a
command line. As root the server runs as the ``postgres`` user (``initdb`` refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

from recseg.errors import InputError

USER = "recseg"  # the role MLflow logs in as
MAX_CONNECTIONS = 300  # each server worker keeps a pool of connections


def bin_dir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: ``PG_BIN``, else the newest Debian version, else
    the ``PATH``; None when PostgreSQL is not installed."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])

    def version(path: str) -> int:
        name = Path(path).parts[-3]
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class Postgres:
    """The cluster in ``folder`` (data in ``data/``, socket in ``run/``, log beside them)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port = folder, port
        self.data = folder / "data"

    def uri(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a PostgreSQL program (as ``postgres`` when this process is root)."""
        binaries = bin_dir()
        if binaries is None:
            raise InputError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        cmd = [str(binaries / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            tail = " ".join((done.stderr or done.stdout).split())[-400:]
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {tail}")
        return done

    def own(self, path: Path) -> None:
        """Give ``path`` to the ``postgres`` user when running as root."""
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def prepare(self) -> None:
        """The folder, owned by the server's user; as root, the folders above it made
        traversable (o+x) so that ``postgres`` reaches it."""
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                raise InputError("no 'postgres' user to run PostgreSQL as (install the "
                                 "Debian package postgresql)") from None  # fmt: skip
            for parent in reversed(self.folder.parents):
                mode = parent.stat().st_mode
                if not mode & stat.S_IXOTH:
                    parent.chmod(mode | stat.S_IXOTH)
        for path in (self.folder, self.folder / "run"):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.own(path)

    def init(self, password: str) -> None:
        """``initdb`` (first start only): role ``recseg`` with ``password``, scram-sha-256."""
        pwfile = self.folder / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        self.own(pwfile)
        try:
            self.run("initdb", "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                     "-A", "scram-sha-256", "-E", "UTF8", "--no-instructions")  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)

    def running(self) -> bool:
        return self.data.is_dir() and self.run("pg_ctl", "-D", str(self.data), "status",
                                               check=False).returncode == 0  # fmt: skip

    def start(self, password: str) -> None:
        """Initialise on first use, then start (unless it runs already)."""
        self.prepare()
        if not (self.data / "PG_VERSION").exists():
            self.init(password)
        if self.running():
            return
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.folder / 'run'} "
                   f"-c max_connections={MAX_CONNECTIONS}")  # fmt: skip
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"),
                 "-o", options, "-w", "-t", "60", "start")  # fmt: skip

    def stop(self) -> None:
        if self.running():
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def passfile(self, folder: Path, password: str) -> Path:
        """A libpq password file (``PGPASSFILE``) for role ``recseg`` on this cluster."""
        path = folder / "pgpass"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f"127.0.0.1:{self.port}:*:{USER}:{password}\n")
        return path

    def create_database(self, name: str, password: str) -> None:
        """``CREATE DATABASE name`` unless it exists."""
        import psycopg

        login = {"host": "127.0.0.1", "port": self.port, "user": USER, "password": password,
                 "dbname": "postgres", "connect_timeout": 10}  # fmt: skip
        with psycopg.connect(**login, autocommit=True) as conn:
            if conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
                return
            conn.execute(f'create database "{name}"')
