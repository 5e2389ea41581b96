"""No code path records media: a full meeting leaves no media bytes on disk, and nothing can start a recording."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from pathlib import Path

from svpl.media.v1 import media_pb2

from devstack.peers import Peer
from services.media.config import MediaSettings
from tests.polling import poll

ROOT = Path(__file__).resolve().parents[2]
_watch: list | None = None
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event, args):
    """Every file this process opens for writing (Python-level opens) while watching."""
    if _watch is None:
        return
    if event == "open":
        path, mode, flags = args
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and isinstance(path, (str, bytes, os.PathLike)):
            _watch.append(os.fsdecode(path))
    elif event in ("os.rename", "shutil.copyfile", "os.link", "os.symlink"):
        _watch.append(f"{event}:{args}")


sys.addaudithook(_audit)


def writable_files() -> set[str]:
    """Regular files this process holds open for writing, C-level opens included (FFmpeg, libvpx)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
            flags = int(next(line.split()[1] for line in open(f"/proc/self/fdinfo/{fd}") if line.startswith("flags")), 8)
        except (OSError, StopIteration, ValueError):
            continue
        if target.startswith("/") and not target.startswith(("/dev/", "/proc/")) and flags & (os.O_WRONLY | os.O_RDWR):
            found.add(target)
    return found


def tree(path: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for p in path.rglob("*") if p.is_file()}


async def test_a_full_meeting_leaves_no_media_bytes_on_disk(world, tmp_path, monkeypatch):
    global _watch
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    repo_before = {k: v for k, v in tree(ROOT / "services").items() if "__pycache__" not in k}
    fds_before = writable_files()
    meeting = await world.open_room()
    peers = [Peer(160, 120, slots=2), Peer(176, 144, slots=2), Peer(192, 112, slots=2)]
    fds_during: set[str] = set()
    _watch = []
    try:
        for i, p in enumerate(peers):
            await world.join(p, meeting, f"p{i}")
        await poll(lambda: all(len(p.video_received()) == 2 and len(p.audio_received()) == 2 for p in peers),
                   10, what="full meeting media")
        for _ in range(10):  # 2 s of a full meeting, watching open file descriptors
            fds_during |= writable_files()
            await asyncio.sleep(0.2)
        await world.media.GetQualitySnapshot(media_pb2.GetQualitySnapshotRequest(meeting_id=meeting),
                                             metadata=world.roster_md)
        await world.media.CloseRoom(media_pb2.CloseRoomRequest(meeting_id=meeting), metadata=world.roster_md)
        assert meeting not in world.rooms.rooms  # nothing of the room stays, not even in memory
    finally:
        opened, _watch = _watch, None
        for p in peers:
            await p.close()
    assert all(r.frames > 10 for p in peers for r in p.received if r.frames), "the meeting carried media"
    assert opened == [], f"files opened for writing during the meeting: {opened}"
    assert fds_during - fds_before == set(), f"new writable files: {fds_during - fds_before}"
    assert list(scratch.rglob("*")) == [], "temporary files were written"
    assert {k: v for k, v in tree(ROOT / "services").items() if "__pycache__" not in k} == repo_before
    # Media's database holds only the closed room id and the used join tokens' ids: no media, no frames, no stats.
    db = world.system.running["media"].component.mongo[world.system.settings("media").database_name]
    assert sorted(await db.list_collection_names()) == ["closed_rooms", "used_join_tokens"]
    docs = await db.closed_rooms.find().to_list(None)
    assert [d["_id"] for d in docs] == [meeting] and all(set(d) == {"_id", "closed_at"} for d in docs)
    used = await db.used_join_tokens.find().to_list(None)
    assert len(used) == len(peers) and all(
        set(d) == {"_id", "meeting_id", "participant_id", "used_at", "expires_at"} for d in used)


def test_no_rpc_or_setting_can_start_a_recording(monkeypatch):
    methods = {m.name for m in media_pb2.DESCRIPTOR.services_by_name["MediaService"].methods}
    assert methods == {"OpenRoom", "CloseRoom", "ReleaseRoom", "Disconnect", "GetRoomState", "GetLoad", "Negotiate",
                       "NegotiateTestRoom", "GetQualitySnapshot"}
    pattern = re.compile(r"record|dump|capture|archive|save|store|output|file|path|dir", re.I)
    # The service's own certificate, key and CA bundle (mutual TLS between the services): files it reads,
    # never writes (the meeting test above finds no file opened for writing).
    read_only_inputs = {"tls_cert_file", "tls_key_file", "tls_ca_file"}
    assert [f for f in MediaSettings.model_fields if pattern.search(f) and f not in read_only_inputs] == []
    # Unknown SVPL_ variables (say a hopeful SVPL_RECORD=1) are ignored, not obeyed.
    for name in ("SVPL_RECORD", "SVPL_RECORDING", "SVPL_RECORD_PATH", "SVPL_MEDIA_DUMP"):
        monkeypatch.setenv(name, "/tmp/recording")
    settings = MediaSettings(mongodb_uri="mongodb://127.0.0.1:1")
    assert not any(pattern.search(k) for k in settings.model_dump() if k not in read_only_inputs)
    # No media code path can write: no recorder, no file output, no av container, no writes.
    forbidden = re.compile(r"MediaRecorder|MediaBlackhole|av\.open|\.write\(|open\([^)]*['\"][wa]|tempfile|to_file|mux\(")
    for source in (ROOT / "services" / "media").glob("*.py"):
        if source.name == "pod_deletion_cost.py":  # the Kubernetes annotation updater (reads its namespace file)
            continue
        hits = [line for line in source.read_text().splitlines() if forbidden.search(line)]
        assert hits == [], f"{source.name}: {hits}"
    # The compiled send path (fastpath.c) sends on sockets only: no file, no pipe, no mapping it could write to.
    c_forbidden = re.compile(r"\b(fopen|open|openat|creat|write|writev|pwrite|fwrite|fprintf|mmap|dup2?|tmpfile)\s*\(")
    for source in (ROOT / "services" / "media").glob("*.c"):
        hits = [line for line in source.read_text().splitlines() if c_forbidden.search(line)]
        assert hits == [], f"{source.name}: {hits}"
