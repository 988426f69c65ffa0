"""Atomic writes give files the mode the umask gives (issue 21): 0644 under umask 022, never mkstemp's 0600.

Checked in a fresh interpreter per umask, since the writer reads the umask once, at import.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WRITE = ("import sys; from pathlib import Path; from store.manifest import atomic_write_text; "
         "from store.blobs import BlobStore; d = Path(sys.argv[1]); atomic_write_text(d / 'summary.json', '{}'); "
         "b = BlobStore(d / 'blobs'); print(b.path(b.put(b'png bytes', 'png'), 'png'))")


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    done = subprocess.run([sys.executable, "-c", WRITE, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, preexec_fn=lambda: os.umask(umask),
                          check=True)
    blob = Path(done.stdout.strip())
    for path in (tmp_path / "summary.json", blob):
        assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))
