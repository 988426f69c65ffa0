"""Blob store: layout, idempotence, validation, atomicity under failure and kill, thread safety."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from store.blobs import BlobError, BlobStore


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_put_lays_out_by_hash_and_reads_back(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = b"\x89PNG fake image bytes"
    sha = store.put(data, "png")
    assert sha == hashlib.sha256(data).hexdigest()
    expected = tmp_path / "blobs" / sha[:2] / f"{sha}.png"
    assert store.path(sha, "png") == expected and expected.read_bytes() == data
    assert store.find(sha) == expected and store.exists(sha) and store.read(sha) == data
    assert _all_files(tmp_path) == [expected]


def test_put_is_idempotent_and_does_not_rewrite(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"same", "png")
    path = store.path(sha, "png")
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    inode = path.stat().st_ino
    assert store.put(b"same", "png") == sha
    assert path.stat().st_mtime_ns == 1_000_000_000 and path.stat().st_ino == inode
    assert _all_files(tmp_path) == [path]


def test_truncated_blob_is_repaired_on_next_put(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"complete content", "jpg")
    store.path(sha, "jpg").write_bytes(b"compl")  # e.g. damaged by an outside tool
    store.put(b"complete content", "jpg")
    assert store.read(sha) == b"complete content"


def test_different_content_gets_different_names(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    assert store.put(b"a", "png") != store.put(b"b", "png")
    assert len(_all_files(tmp_path)) == 2


@pytest.mark.parametrize("ext", ["", "toolong", "p/g", "../x", "pn g", "png\x00", "é"])
def test_bad_extension_is_rejected(tmp_path: Path, ext: str) -> None:
    with pytest.raises(BlobError, match="extension"):
        BlobStore(tmp_path).put(b"x", ext)
    assert _all_files(tmp_path) == []


def test_extension_is_normalised(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = store.put(b"x", ".PNG")
    assert store.find(sha) == store.path(sha, "png")


@pytest.mark.parametrize("sha", ["", "../" + "a" * 61, "A" * 64, "a" * 63, "g" * 64])
def test_bad_hash_is_rejected(tmp_path: Path, sha: str) -> None:
    store = BlobStore(tmp_path)
    for call in (lambda: store.find(sha), lambda: store.path(sha, "png"), lambda: store.read(sha)):
        with pytest.raises(BlobError, match="hash"):
            call()


def test_missing_blob(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    sha = "0" * 64
    assert store.find(sha) is None and not store.exists(sha)
    with pytest.raises(BlobError, match="not in"):
        store.read(sha)


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, boom)
    store = BlobStore(tmp_path)
    with pytest.raises(OSError, match="No space"):
        store.put(b"data", "png")
    assert _all_files(tmp_path) == []
    monkeypatch.undo()
    sha = store.put(b"data", "png")
    assert store.read(sha) == b"data"


def test_temp_files_are_invisible_to_find(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = b"half"
    sha = hashlib.sha256(data).hexdigest()
    (tmp_path / sha[:2]).mkdir()
    (tmp_path / sha[:2] / f".{sha}.abc123.tmp").write_bytes(b"ha")
    assert store.find(sha) is None
    store.put(data, "png")
    assert store.read(sha) == data


def test_threads_putting_same_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    data = os.urandom(256 * 1024)
    with ThreadPoolExecutor(max_workers=16) as pool:
        shas = list(pool.map(lambda _: store.put(data, "png"), range(64)))
    assert set(shas) == {hashlib.sha256(data).hexdigest()}
    assert _all_files(tmp_path) == [store.path(shas[0], "png")]
    assert store.read(shas[0]) == data


def test_threads_putting_different_bytes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path)
    blobs = [os.urandom(1024) + bytes([i]) for i in range(100)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        shas = list(pool.map(lambda b: store.put(b, "png"), blobs))
    assert [store.read(s) for s in shas] == blobs
    assert len(_all_files(tmp_path)) == 100


_WRITER = """
import os, sys, time
from store.blobs import BlobStore
store = BlobStore(sys.argv[1])
for i in range(3):
    store.put(str(i).encode() * 100_000, "png")
real_fsync = os.fsync
def stall(fd):
    # Data is written but not yet renamed: the exact moment a crash would hurt a naive writer.
    real_fsync(fd)
    print("mid-write", flush=True)
    time.sleep(60)
os.fsync = stall
store.put(b"never completed" * 100_000, "png")
"""


def test_killed_writer_leaves_no_partial_blob(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-c", _WRITER, str(tmp_path)]
    with subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == b"mid-write"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    files = _all_files(tmp_path)
    temps = [p for p in files if p.name.startswith(".")]
    finals = [p for p in files if not p.name.startswith(".")]
    assert len(temps) == 1 and len(finals) == 3  # killed with the fourth blob half done
    for path in finals:
        # Every file at a final name holds exactly the bytes its name promises.
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    store = BlobStore(tmp_path)
    unfinished = hashlib.sha256(b"never completed" * 100_000).hexdigest()
    assert store.find(unfinished) is None and not store.exists(unfinished)
    assert store.put(b"never completed" * 100_000, "png") == unfinished
    assert store.read(unfinished) == b"never completed" * 100_000
