"""The workspace: one folder holding the DuckDB file, the secret key, the
archive, the capture mailbox and report run outputs.

Resolution order, the same for the CLI, the Python API, notebooks and
papermill runs: an explicit ``home`` argument (``--home``), else the
``SYSMAIL_HOME`` environment variable, else a per-user data folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from sysmail_ops.config.secrets import SecretBox
from sysmail_ops.errors import WorkspaceError
from sysmail_ops.store import private
from sysmail_ops.store.database import Store

ENV_HOME = "SYSMAIL_HOME"
DB_NAME = "sysmail.duckdb"
KEY_NAME = "secret.key"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The workspace folder: explicit argument, else $SYSMAIL_HOME, else the user data dir."""
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser().resolve()
    return Path(platformdirs.user_data_dir("sysmail-ops", appauthor=False)).resolve()


@dataclass
class Workspace:
    """Paths and handles of one workspace. Cheap to create; holds no open connection."""

    home: Path
    lock_wait: float | None = None
    _store: Store | None = field(default=None, repr=False)
    _secrets: SecretBox | None = field(default=None, repr=False)
    tightened: private.Tightened = field(
        default_factory=private.Tightened, repr=False, compare=False
    )

    @property
    def db_path(self) -> Path:
        return self.home / DB_NAME

    @property
    def key_path(self) -> Path:
        return self.home / KEY_NAME

    @property
    def mailbox_dir(self) -> Path:
        """Where the local capture server (``sysmail-ops sink``) keeps what it receives."""
        return self.home / "mailbox"

    @property
    def archive_dir(self) -> Path:
        return self.home / "archive"

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def preview_dir(self) -> Path:
        return self.home / "preview"

    @property
    def sink_dir(self) -> Path:
        return self.home / "sink"

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(self.db_path, lock_wait=self.lock_wait)
        return self._store

    @property
    def secrets(self) -> SecretBox:
        if self._secrets is None:
            self._secrets = SecretBox.from_workspace(self.key_path)
        return self._secrets

    @classmethod
    def open(
        cls, home: str | os.PathLike[str] | None = None, *, lock_wait: float | None = None
    ) -> Workspace:
        """Open an initialised workspace; a missing one is a clear error, not an empty database."""
        path = resolve_home(home)
        ws = cls(path, lock_wait=lock_wait)
        if not ws.db_path.exists():
            raise WorkspaceError(
                f"no workspace at {path}: run `sysmail-ops init` "
                f"(or point --home / {ENV_HOME} at an existing one)"
            )
        ws.store.migrate()
        return ws

    @classmethod
    def init(
        cls, home: str | os.PathLike[str] | None = None, *, lock_wait: float | None = None
    ) -> tuple[Workspace, bool]:
        """Create the workspace (idempotent). Returns it and whether a new key was made.

        The folder is 0700 and everything in it the owner's alone (``store.private``);
        an existing workspace with looser modes is tightened (``ws.tightened`` says
        what changed).
        """
        path = resolve_home(home)
        ws = cls(path, lock_wait=lock_wait)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)  # above the workspace: not ours
            private.make_dirs(path)
            created_key = SecretBox.ensure_key(ws.key_path)  # a key in trouble stops here
            ws.tightened = private.tighten(path)
            for sub in ("mailbox", "archive", "runs", "preview"):
                private.make_dirs(path / sub)
        except OSError as exc:
            raise WorkspaceError(f"cannot create workspace at {path}: {exc.strerror}") from None
        ws.store.migrate()
        return ws, created_key
