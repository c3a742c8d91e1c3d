"""The host's memory of accepted session inits (replays) and its reading of ``modelName``."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from pathlib import Path

import pytest

from fabstir_sdk.chain.model_id import model_id
from fabstir_sdk.errors import HandshakeError
from fabstir_sdk.host._replay import InitLog, ReplayedInitError, init_fingerprints
from fabstir_sdk.host._ws import model_matches
from fabstir_sdk.models import ModelInfo

EPH, EPH2 = b"\x02" + b"\x11" * 32, b"\x03" + b"\x22" * 32
KEY, KEY2 = b"\xaa" * 32, b"\xbb" * 32


def on_disk(directory: Path) -> dict[str, list[str]]:
    """Each log segment's lines."""
    return {p.name: p.read_text().splitlines() for p in sorted(directory.glob("inits-*.log"))}


async def test_an_init_is_accepted_once_and_remembered_on_disk(tmp_path):
    log = InitLog(tmp_path)
    prints = init_fingerprints(EPH, KEY)
    log.claim(7, prints)
    with pytest.raises(ReplayedInitError) as held:  # a copy sent while the first is checked
        log.claim(7, prints)
    assert held.value.code == "REPLAYED_INIT" and isinstance(held.value, HandshakeError)
    await log.commit(7, prints)
    assert on_disk(tmp_path) == {"inits-0.log": [f"7 {fp}" for fp in prints]}
    # a new host process reads it back: the same init, or either of its keys, is refused
    again = InitLog(tmp_path)
    for ephemeral, key in ((EPH, KEY), (EPH, KEY2), (EPH2, KEY)):
        with pytest.raises(ReplayedInitError):
            again.claim(7, init_fingerprints(ephemeral, key))
    again.claim(7, init_fingerprints(EPH2, KEY2))  # fresh keys: fine
    again.claim(8, prints)  # the record is per job
    # the session key itself is not written, in any form
    blob = (tmp_path / "inits-0.log").read_text()
    assert KEY.hex() not in blob and EPH.hex() not in blob
    assert again.job_ids() == [7]


async def test_commit_returns_only_once_the_record_is_durable(tmp_path, monkeypatch):
    """The host acknowledges an init after ``commit``: that is after the record's fdatasync
    returned (held here in the writer thread until released), whatever the loop does."""
    release, synced = threading.Event(), threading.Event()
    fdatasync = os.fdatasync

    def held(fd: int) -> None:
        release.wait()
        fdatasync(fd)
        synced.set()

    monkeypatch.setattr(os, "fdatasync", held)
    log = InitLog(tmp_path)
    prints = init_fingerprints(EPH, KEY)
    log.claim(7, prints)
    committing = asyncio.ensure_future(log.commit(7, prints))
    for _ in range(50):  # turns of the loop, not time: the write cannot finish unreleased
        await asyncio.sleep(0)
    assert not committing.done()
    release.set()
    await committing
    assert synced.is_set()
    assert on_disk(tmp_path) == {"inits-0.log": [f"7 {fp}" for fp in prints]}
    log.close()


async def test_segments_roll_and_go_once_their_jobs_are_settled(tmp_path):
    """Records go to segments of ``segment_records`` inits; a segment whose jobs are all
    settled is deleted (not this run's last two), and a restart reads what is left."""
    log = InitLog(tmp_path, segment_records=1)
    jobs = (1, 2, 3, 4)
    prints = {job: init_fingerprints(bytes([2, job] * 16), bytes([job] * 32)) for job in jobs}
    for job in jobs:
        log.claim(job, prints[job])
        await log.commit(job, prints[job])
    assert on_disk(tmp_path) == {
        f"inits-{job - 1}.log": [f"{job} {fp}" for fp in prints[job]] for job in jobs
    }
    log.forget(1)
    log.forget(2)
    assert list(on_disk(tmp_path)) == ["inits-2.log", "inits-3.log"]
    log.forget(3)
    log.forget(4)
    assert list(on_disk(tmp_path)) == ["inits-2.log", "inits-3.log"]  # this run's last two
    log.close()
    # a restart reads jobs 3 and 4 back (forgetting is not made durable): the host's start
    # checks the chain and forgets them again, which deletes their segments
    again = InitLog(tmp_path)
    assert again.job_ids() == [3, 4]
    again.forget(3)
    again.forget(4)
    assert on_disk(tmp_path) == {"inits-4.log": []} and again.job_ids() == []
    again.claim(3, prints[3])  # settled jobs: the chain refuses them, the log need not


async def test_an_older_hosts_per_job_records_are_read_and_dropped(tmp_path):
    prints = init_fingerprints(EPH, KEY)
    (tmp_path / "5.inits").write_text("".join(fp + "\n" for fp in prints))
    log = InitLog(tmp_path)
    assert log.job_ids() == [5]
    with pytest.raises(ReplayedInitError):
        log.claim(5, prints)
    log.forget(5)
    assert not (tmp_path / "5.inits").exists() and log.job_ids() == []


async def test_a_refused_init_is_not_remembered_and_a_settled_job_is_dropped(tmp_path):
    log = InitLog(tmp_path)
    prints = init_fingerprints(EPH, KEY)
    log.claim(9, prints)
    log.release(9, prints)  # refused by the chain: the client may send it again
    assert on_disk(tmp_path) == {"inits-0.log": []} and log.job_ids() == []
    log.claim(9, prints)
    await log.commit(9, prints)
    log.forget(9)
    assert log.job_ids() == []
    log.claim(9, prints)  # the chain refuses the job by now; the log need not


async def test_an_init_that_cannot_be_written_is_still_refused_when_repeated(tmp_path):
    log = InitLog(tmp_path / "state", segment_records=1)
    log.claim(2, init_fingerprints(EPH2, KEY2))
    await log.commit(2, init_fingerprints(EPH2, KEY2))  # the next init starts a new segment
    shutil.rmtree(tmp_path / "state")  # the state directory is gone: nothing can be written
    prints = init_fingerprints(EPH, KEY)
    log.claim(3, prints)
    with pytest.raises(OSError):
        await log.commit(3, prints)
    with pytest.raises(ReplayedInitError):  # the caller refused it; a copy is refused too
        log.claim(3, prints)


#: Long enough for any loaded machine; a writer that hangs fails the test here instead.
PATIENCE = 60


@pytest.mark.parametrize(
    "error", [RuntimeError("a bug"), MemoryError(), StopIteration(), SystemExit(1)]
)
async def test_an_unexpected_error_fails_its_record_and_the_writer_goes_on(
    tmp_path, monkeypatch, error
):
    """Whatever a write raises, its init is refused as for a full disk (an OSError: the
    host answers HOST_STATE_UNAVAILABLE) and the writer thread serves the next record."""
    log = InitLog(tmp_path)
    append = log._append
    calls = []

    def failing_once(data: bytes) -> int:
        calls.append(data)
        if len(calls) == 1:
            raise error
        return append(data)

    monkeypatch.setattr(log, "_append", failing_once)
    prints, prints2 = init_fingerprints(EPH, KEY), init_fingerprints(EPH2, KEY2)
    log.claim(1, prints)
    with pytest.raises(OSError) as failed:
        await asyncio.wait_for(log.commit(1, prints), PATIENCE)
    assert type(failed.value) is OSError and failed.value.__cause__ is error
    assert str(failed.value) == (
        f"[Errno 5] the init log could not write a record ({type(error).__name__})"
    )
    writer = log._writer
    log.claim(2, prints2)
    assert await asyncio.wait_for(log.commit(2, prints2), PATIENCE) is None
    assert log._writer is writer and writer is not None and writer.is_alive()
    assert on_disk(tmp_path) == {"inits-0.log": [f"2 {fp}" for fp in prints2]}
    assert log.job_ids() == [2] and len(calls) == 2
    log.close()


async def test_a_writer_that_stops_fails_what_it_held_and_a_new_one_serves(tmp_path, monkeypatch):
    """If the writer's loop itself fails (here: handing a result back to the event loop),
    the record it held and the one queued behind it fail at once, and the next record is
    written by a new writer: no init waits forever."""
    log = InitLog(tmp_path)
    append = log._append
    entered, release = threading.Event(), threading.Event()

    def held_once(data: bytes) -> int:
        if not entered.is_set():
            entered.set()
            release.wait(PATIENCE)
        return append(data)

    monkeypatch.setattr(log, "_append", held_once)
    jobs = {job: init_fingerprints(bytes([2, job] * 16), bytes([job] * 32)) for job in (1, 2, 3)}
    first = log.record(1, jobs[1])
    assert await asyncio.to_thread(entered.wait, PATIENCE)  # the writer holds record 1
    second = log.record(2, jobs[2])  # queued behind it
    loop = asyncio.get_running_loop()
    handing = loop.call_soon_threadsafe
    failures = [ValueError("injected")]

    def flaky(*args):
        if failures:
            raise failures.pop()
        return handing(*args)

    monkeypatch.setattr(loop, "call_soon_threadsafe", flaky)
    stopped = log._writer
    release.set()
    for written in (first, second):
        with pytest.raises(OSError) as failed:
            await asyncio.wait_for(written, PATIENCE)
        assert str(failed.value) == "[Errno 5] the init log's writer stopped (ValueError)"
        assert type(failed.value) is OSError and isinstance(failed.value.__cause__, ValueError)
    monkeypatch.undo()
    assert stopped is not None
    await asyncio.to_thread(stopped.join, PATIENCE)
    assert not stopped.is_alive()
    log.claim(3, jobs[3])
    await asyncio.wait_for(log.commit(3, jobs[3]), PATIENCE)
    assert log._writer is not stopped and log.job_ids() == [3]
    # record 1 was durable before its outcome was lost (refused, it only stays refused)
    assert on_disk(tmp_path) == {"inits-0.log": [f"{j} {fp}" for j in (1, 3) for fp in jobs[j]]}
    log.close()


async def test_in_memory_log(tmp_path):
    log = InitLog(None)
    prints = init_fingerprints(EPH, KEY)
    log.claim(1, prints)
    await log.commit(1, prints)
    with pytest.raises(ReplayedInitError):
        log.claim(1, prints)
    assert list(tmp_path.iterdir()) == []


INFO = ModelInfo(
    model_id=model_id(
        "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf"
    ),
    repo="TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
    file="tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
    sha256="0x" + "00" * 32,
    approved=True,
)
SPEC = f"{INFO.repo}:{INFO.file}"


@pytest.mark.parametrize(
    "name",
    [
        "",
        INFO.model_id,
        "0x" + INFO.model_id[2:].upper(),
        SPEC,
        f"{INFO.repo}/{INFO.file}",
        INFO.file,
        INFO.file.upper(),
        "tinyllama-1.1b-chat-v1.0.Q4_K_M",
        "tinyllama",  # upstream's short name for this model's hash
        INFO.repo,
        "TinyLlama-1.1B-Chat-v1.0-GGUF",
    ],
)
def test_model_name_forms_upstream_sends(name):
    assert model_matches(name, INFO.model_id, INFO, SPEC)
    assert model_matches(name, INFO.model_id, None, SPEC)  # no on-chain record: the spec


@pytest.mark.parametrize(
    "name",
    [
        model_id("other/repo:other.gguf"),
        "other/repo:other.gguf",
        "other.gguf",
        "tiny",  # not up to a separator
        "ti",
        "gpt-oss-20b",
        "0x1234",
    ],
)
def test_other_model_names_are_refused(name):
    assert not model_matches(name, INFO.model_id, INFO, SPEC)


def test_upstream_short_names_of_its_known_hashes():
    """upstream's client renames three model hashes to short names before it sends them."""
    for repo, file, short in (
        ("CohereForAI/TinyVicuna-1B-32k-GGUF", "tiny-vicuna-1b.q4_k_m.gguf", "tiny-vicuna"),
        (
            "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
            "tinyllama-1.1b-chat-v1.0.Q4_K_M.gguf",
            "tinyllama",
        ),
    ):
        mid = model_id(f"{repo}:{file}")
        info = ModelInfo(model_id=mid, repo=repo, file=file, sha256="0x" + "00" * 32, approved=True)
        assert model_matches(short, mid, info, f"{repo}:{file}")


async def test_a_record_started_for_an_init_refused_after_all(tmp_path):
    """The durable write starts while the init is checked: if the chain refuses it, the
    host may take it again in this run, and after a restart it is refused (never accepted
    from the record alone); the record pins no segment."""
    log = InitLog(tmp_path, segment_records=1)
    prints = init_fingerprints(EPH, KEY)
    log.claim(4, prints)
    written = log.record(4, prints)
    log.release(4, prints)  # e.g. the job was not found on chain yet
    assert await written == 0
    assert on_disk(tmp_path) == {"inits-0.log": [f"4 {fp}" for fp in prints]}
    assert log.job_ids() == []
    log.claim(4, prints)  # sent again once the chain has the job: accepted
    await log.commit(4, prints, log.record(4, prints))
    assert log.job_ids() == [4]
    log.claim(5, init_fingerprints(EPH2, KEY2))
    await log.commit(5, init_fingerprints(EPH2, KEY2))
    log.forget(4)
    # the refused record's segment goes; this run's last two stay
    assert list(on_disk(tmp_path)) == ["inits-1.log", "inits-2.log"]
    log.close()
    again = InitLog(tmp_path)
    assert again.job_ids() == [4, 5]
    with pytest.raises(ReplayedInitError):  # until the host's start finds job 4 settled
        again.claim(4, prints)


async def test_a_short_write_fails_its_init_and_the_next_record_starts_a_new_segment(
    tmp_path, monkeypatch
):
    """A full disk takes part of a record: that init is refused (OSError), and the next
    record goes to a new segment, so the torn line cannot swallow it; a restarted host
    reads the whole record back and refuses its replay."""
    import fabstir_sdk.host._replay as replay

    write, torn = os.write, []

    def short_once(fd: int, data: bytes) -> int:
        if not torn:
            torn.append(data)
            return write(fd, data[: len(data) // 2])
        return write(fd, data)

    monkeypatch.setattr(replay.os, "write", short_once)
    log = InitLog(tmp_path)
    prints, prints2 = init_fingerprints(EPH, KEY), init_fingerprints(EPH2, KEY2)
    log.claim(1, prints)
    with pytest.raises(OSError, match="bytes written") as failed:
        await asyncio.wait_for(log.commit(1, prints), PATIENCE)
    assert failed.value.errno == 28  # ENOSPC
    log.claim(2, prints2)
    await asyncio.wait_for(log.commit(2, prints2), PATIENCE)
    log.close()
    disk = on_disk(tmp_path)
    assert disk["inits-1.log"] == [f"2 {fp}" for fp in prints2]
    assert len(disk) == 2 and disk["inits-0.log"][0].startswith("1 ")  # the torn record
    again = InitLog(tmp_path)
    with pytest.raises(ReplayedInitError):
        again.claim(2, prints2)
