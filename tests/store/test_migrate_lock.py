"""Migrations take a file lock beside a SQLite store and leave no `*.migrate.lock` behind (issue 11)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

MIGRATE = "from gateway.store.engine import make_engine, migrate; e = make_engine('sqlite:///tiergate.db'); " \
          "migrate(e); e.dispose()"


def test_concurrent_starts_migrate_once_and_leave_no_lock(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", MIGRATE], cwd=tmp_path, stderr=subprocess.PIPE)
             for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    assert sorted(f.name for f in tmp_path.iterdir() if not f.name.startswith("tiergate.db-")) == ["tiergate.db"]
