"""StorageManager on the embedded store: the API, the layout, confidentiality at rest,
concurrent appends, and the bad-input and fault cases of the storage issue."""

import asyncio
import os
import sys
from pathlib import Path

import cbor2
import pytest

from fabstir_sdk import FabstirSDK
from fabstir_sdk.errors import (
    AuthRequiredError,
    DecryptionError,
    IntegrityError,
    InvalidStorageKeyError,
    NotFoundError,
    PayloadTooLargeError,
    S5FormatError,
    ValidationError,
)
from fabstir_sdk.models import Conversation, Message
from fabstir_sdk.s5 import BlobId, FileRef, RegistryEntry, S5Identity, encrypt_mutable
from fabstir_sdk.s5._fs import FileSystem
from fabstir_sdk.s5._local import LocalStore

MARKER = "SECRET-MARKER-7f3a"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def storage_for(devnet, tmp_path):
    """``await storage_for(i, root=None)``: account ``i``'s StorageManager, store in tmp_path."""
    made = []

    async def make(index, root=None):
        sdk = FabstirSDK(devnet.sdk_config(storage_dir=root or tmp_path / "store"))
        made.append(sdk)
        await sdk.authenticate(devnet.accounts[index].private_key)
        return await sdk.get_storage_manager()

    yield make
    for sdk in made:
        await sdk.aclose()


def files_under(root):
    """Every file of the store but its temp directory (empty unless a writer was killed)."""
    return sorted(
        os.path.join(d, f)
        for d, _, names in os.walk(root)
        for f in names
        if os.path.relpath(d, root).split(os.sep)[0] != "tmp"
    )


def contents(paths):
    result = []
    for path in paths:
        with open(path, "rb") as f:
            result.append((path, f.read()))
    return result


async def test_store_retrieve_list_delete(storage_for):
    st = await storage_for(1)
    value = {"model": "toy", "n": [1, 2, 3]}
    ref = await st.store_data("prefs", value, metadata={"kind": "prefs"})
    assert (ref.key, ref.size, ref.metadata) == (
        "prefs",
        len(cbor2.dumps(value)),
        {"kind": "prefs"},
    )
    assert BlobId.parse(ref.cid).size == ref.size + 16  # one sealed chunk
    assert await st.retrieve_data("prefs") == value
    await st.store_data("raw", b"\x00\x01")
    await st.store_data("text", "héllo")
    assert await st.retrieve_data("raw") == b"\x00\x01"
    assert await st.retrieve_data("text") == "héllo"
    listed = await st.list_user_data()
    assert [(r.key, r.size) for r in listed] == [("prefs", ref.size), ("raw", 2), ("text", 6)]
    assert listed[0] == ref
    assert await st.delete_data("raw") is True
    assert await st.delete_data("raw") is False
    with pytest.raises(NotFoundError):
        await st.retrieve_data("raw")


async def test_missing_key_is_not_found(storage_for):
    st = await storage_for(1)
    with pytest.raises(NotFoundError):
        await st.retrieve_data("never-stored")
    with pytest.raises(NotFoundError):
        await st.load_conversation("no-such-conversation")
    assert await st.list_user_data() == []
    assert await st.list_conversations() == []
    assert await st.get_user_settings() is None


async def test_layout_matches_upstream_paths(storage_for, devnet):
    st = await storage_for(1)
    user = devnet.accounts[1].address
    await st.store_data("k", 1)
    await st.store_conversation(Conversation(id="s1"))
    await st.save_user_settings({"default_model": "toy"})
    fs = st.fs
    assert [e.name for e in await fs.list("home")] == ["conversations", "sessions", "user"]
    assert [e.name for e in await fs.list(f"home/conversations/{user}")] == ["k.json"]
    assert [e.name for e in await fs.list(f"home/sessions/{user}/s1")] == ["conversation.json"]
    assert await fs.get("home/user/settings.json") == {"default_model": "toy"}
    assert await st.update_user_settings({"theme": "dark"}) == {
        "default_model": "toy",
        "theme": "dark",
    }


async def test_conversations(storage_for):
    st = await storage_for(1)
    conv = Conversation(
        id="sess-1",
        messages=[Message(role="user", content="hi", timestamp=1)],
        metadata={"model": "toy"},
        created_at=10,
        updated_at=11,
    )
    ref = await st.store_conversation(conv)
    assert ref.key == "sess-1"
    assert await st.load_conversation("sess-1") == conv
    after = await st.append_message("sess-1", {"role": "assistant", "content": "hello"})
    assert [m.content for m in after.messages] == ["hi", "hello"]
    assert after.created_at == 10 and after.updated_at > 11
    fresh = await st.append_message("sess-2", Message(role="user", content="new"))
    assert fresh.id == "sess-2" and len(fresh.messages) == 1
    summaries = await st.list_conversations()
    assert [(s.id, s.message_count) for s in summaries] == [("sess-2", 1), ("sess-1", 2)]
    assert summaries[1].metadata == {"model": "toy"}
    await st.store_session_data("sess-1", "proof", {"tokens": 100})
    assert await st.get_session_data("sess-1", "proof") == {"tokens": 100}


async def test_fifty_concurrent_appends_keep_all_fifty(storage_for):
    st = await storage_for(1)
    await asyncio.gather(
        *(st.append_message("busy", Message(role="user", content=f"m{i}")) for i in range(50))
    )
    conv = await st.load_conversation("busy")
    assert sorted(m.content for m in conv.messages) == sorted(f"m{i}" for i in range(50))


async def test_append_messages_writes_a_prompt_and_its_answer_together(storage_for):
    # Sessions keep each exchange this way: one S5 update, and concurrent exchanges never
    # interleave a prompt of one with the answer of another.
    st = await storage_for(1)
    fs = st.fs
    updates = 0
    update = fs.update

    async def counted(*args, **kwargs):
        nonlocal updates
        updates += 1
        return await update(*args, **kwargs)

    fs.update = counted  # type: ignore[method-assign]
    pairs = [
        [Message(role="user", content=f"q{i}"), {"role": "assistant", "content": f"a{i}"}]
        for i in range(20)
    ]
    await asyncio.gather(*(st.append_messages("pairs", pair) for pair in pairs))
    assert updates == 20
    conv = await st.load_conversation("pairs")
    texts = [m.content for m in conv.messages]
    assert sorted(texts) == sorted([f"q{i}" for i in range(20)] + [f"a{i}" for i in range(20)])
    for at in range(0, 40, 2):
        assert texts[at + 1] == "a" + texts[at][1:]
    assert [m.role for m in conv.messages] == ["user", "assistant"] * 20
    with pytest.raises(ValidationError):
        await st.append_messages("pairs", [Message(role="user", content="ok"), 42])
    assert len((await st.load_conversation("pairs")).messages) == 40  # nothing half-written


async def test_concurrent_writers_with_separate_sdks_resolve_revision_conflicts(storage_for):
    # Two SDK instances of one user share a directory but not their in-process locks, so
    # their writes collide on registry revisions and must be retried, not lost.
    a, b = await storage_for(1), await storage_for(1)
    await asyncio.gather(
        *(
            (a if i % 2 else b).append_message("shared", {"role": "user", "content": f"m{i}"})
            for i in range(30)
        )
    )
    conv = await a.load_conversation("shared")
    assert sorted(m.content for m in conv.messages) == sorted(f"m{i}" for i in range(30))


async def test_nothing_readable_at_rest(storage_for, devnet, tmp_path):
    st = await storage_for(1)
    user = devnet.accounts[1].address
    await st.store_data(f"key-{MARKER}", {"note": MARKER})
    await st.append_message(f"conv-{MARKER}", {"role": "user", "content": MARKER * 3})
    await st.save_user_settings({"secret": MARKER})
    needles = [
        MARKER.encode(),
        user.encode(),
        user.lower().encode(),
        user[2:].lower().encode(),
        bytes.fromhex(user[2:]),
        b"conversations",
        b"sessions",
        b"settings",
        b"S5.pro",
    ]
    paths = files_under(tmp_path / "store")
    assert len(paths) > 10
    for path, data in contents(paths):
        for needle in needles:
            assert needle not in data, (path, needle)
        assert MARKER not in path and user[2:].lower() not in path.lower()


async def test_second_user_reads_nothing_of_the_first(storage_for, tmp_path):
    first, second = await storage_for(1), await storage_for(3)  # same directory
    await first.store_data("private", {"x": 1})
    await first.append_message("c1", {"role": "user", "content": "hi"})
    with pytest.raises(NotFoundError):
        await second.retrieve_data("private")
    assert await second.list_user_data() == []
    assert await second.list_conversations() == []
    # Even pointed at the first user's directory entry, the second key cannot open it.
    user1 = first.fs._keys(("home",))
    second_fs = second.fs
    spoofed = type(user1)(user1.write_key, user1.signing, user1.pk, second_fs._keys(()).encryption)
    with pytest.raises(DecryptionError):
        await second_fs._load(spoofed)


async def test_identity_derives_from_the_key_not_the_address(storage_for, devnet):
    from fabstir_sdk.managers.auth import AuthManager

    st = await storage_for(1)
    seed = AuthManager(st._ctx).get_s5_seed()
    identity = S5Identity(bytes.fromhex(seed))
    assert FileSystem(st.fs.store, identity)._keys(("home",)).pk == st.fs._keys(("home",)).pk
    address = devnet.accounts[1].address
    for guess in (address.encode(), address.lower().encode(), bytes.fromhex(address[2:]) * 2):
        assert FileSystem(st.fs.store, S5Identity(guess))._root != st.fs._root
    assert seed not in repr(st) and seed not in repr(st.fs)


async def test_storage_needs_authentication(devnet, tmp_path):
    async with FabstirSDK(devnet.sdk_config(storage_dir=tmp_path)) as sdk:
        with pytest.raises(AuthRequiredError):
            await sdk.get_storage_manager()
    assert files_under(tmp_path) == []


@pytest.mark.parametrize(
    "key", ["", "/a", "a/", "a//b", "a/../b", "..", ".", "x\0y", "k" * 201, "k/" * 513, 7, None]
)
async def test_bad_keys_refused_before_any_write(storage_for, tmp_path, key):
    st = await storage_for(1)
    with pytest.raises(InvalidStorageKeyError):
        await st.store_data(key, 1)
    with pytest.raises(InvalidStorageKeyError):
        await st.append_message(key, {"role": "user", "content": "x"})
    assert files_under(tmp_path / "store") == []


async def test_a_conversation_id_is_one_segment(storage_for, tmp_path):
    st = await storage_for(1)
    with pytest.raises(InvalidStorageKeyError, match="one path segment"):
        await st.append_message("a/b", {"role": "user", "content": "x"})
    assert files_under(tmp_path / "store") == []


async def test_keys_may_be_paths_listed_by_prefix(devnet, storage_for):
    st = await storage_for(1)
    for key in ["notes/2026/today", "notes/2026/tomorrow", "notes/2025/old", "notes", "todo"]:
        await st.store_data(key, key.upper())
    assert await st.retrieve_data("notes/2026/today") == "NOTES/2026/TODAY"
    assert await st.retrieve_data("notes") == "NOTES"  # a key and a folder may share a name
    keys = [ref.key for ref in await st.list_user_data()]
    assert keys == ["notes", "notes/2025/old", "notes/2026/today", "notes/2026/tomorrow", "todo"]
    assert [r.key for r in await st.list_user_data("notes/2026/")] == [
        "notes/2026/today",
        "notes/2026/tomorrow",
    ]
    assert [r.key for r in await st.list_user_data("notes/2026/to")] == [
        "notes/2026/today",
        "notes/2026/tomorrow",
    ]
    assert [r.key for r in await st.list_user_data("notes/")] == keys[1:4]
    assert [r.key for r in await st.list_user_data("no")] == keys[:4]
    assert await st.list_user_data("nothing/") == []
    assert await st.delete_data("notes/2026/today")
    assert not await st.delete_data("notes/2026/today")
    with pytest.raises(NotFoundError):
        await st.retrieve_data("notes/2026/today")
    assert [r.key for r in await st.list_user_data("notes/2026")] == ["notes/2026/tomorrow"]
    # the paths are the S5 file system's: the same value is at home/conversations/{user}/...
    user = devnet.accounts[1].address
    assert await st.fs.get(f"home/conversations/{user}/notes/2025/old.json") == "NOTES/2025/OLD"


async def test_bad_values_refused_before_any_write(storage_for, tmp_path):
    st = await storage_for(1)
    with pytest.raises(ValidationError):
        await st.store_data("k", object())
    with pytest.raises(ValidationError):
        await st.append_message("c", {"role": "robot", "content": "x"})
    with pytest.raises(ValidationError):
        await st.store_conversation({"id": "x"})
    with pytest.raises(PayloadTooLargeError):
        await st.store_data("k", 1, metadata={"m": "x" * 20_000})
    st.fs.max_file_size = 1000
    with pytest.raises(PayloadTooLargeError) as err:
        await st.store_data("big", b"x" * 1001)
    assert (err.value.size, err.value.limit) == (1001, 1000)
    assert files_under(tmp_path / "store") == []


async def test_damaged_blob_on_disk_is_integrity_error(storage_for, devnet):
    st = await storage_for(1)
    await st.store_data("k", b"payload" * 100)
    ref = await st.fs.file_ref(f"home/conversations/{devnet.accounts[1].address}/k.json")
    path = st.fs.store.blob_path(st.fs.blob_id(ref))
    damaged = bytearray(path.read_bytes())
    damaged[0] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError):
        await st.retrieve_data("k")


async def test_wrong_file_key_is_decryption_error(storage_for, devnet):
    st = await storage_for(1)
    await st.store_data("k", {"a": 1})
    directory = ("home", "conversations", devnet.accounts[1].address)

    async def swap_key(d, pending):
        ref = d.files["k.json"]
        enc = dict(ref.extra["encryption"], key=bytes(32))
        fields = {f: getattr(ref, f) for f in FileRef.__slots__}
        d.files["k.json"] = FileRef(**{**fields, "extra": {"encryption": enc}})
        return d

    await st.fs._update(st.fs._keys(directory), swap_key)
    with pytest.raises(DecryptionError):
        await st.retrieve_data("k")


async def test_large_value_round_trip(storage_for):
    st = await storage_for(1)
    data = os.urandom(3 * 1024 * 1024 + 5)
    ref = await st.store_data("big", data)
    assert BlobId.parse(ref.cid).size == len(data) + 13 * 16
    assert await st.retrieve_data("big") == data


async def test_malformed_directory_pointer_is_format_error(storage_for, devnet):
    st = await storage_for(1)
    await st.store_data("k", 1)
    keys = st.fs._keys(("home", "conversations", devnet.accounts[1].address))
    current = await st.fs.store.registry_get(keys.pk)
    junk = RegistryEntry.sign(keys.signing, current.revision + 1, b"\x01not a blob id")
    await st.fs.store.registry_set(junk)
    with pytest.raises(S5FormatError):
        await st.list_user_data()
    record = encrypt_mutable(keys.encryption, b"\xa1\x01not cbor at all")
    bid = await st.fs.store.put_blob(record)
    await st.fs.store.registry_set(
        RegistryEntry.sign(keys.signing, current.revision + 2, bid.to_bytes())
    )
    with pytest.raises(S5FormatError):
        await st.retrieve_data("k")


APPENDER = """
import asyncio, sys
from fabstir_sdk.s5 import S5Identity
from fabstir_sdk.s5._fs import FileSystem
from fabstir_sdk.s5._local import LocalStore

async def main():
    fs = FileSystem(LocalStore(sys.argv[1]), S5Identity(b"shared-user-seed-0123456789"))
    for i in range(int(sys.argv[2])):
        await fs.update("home/log", lambda old: [*(old or []), sys.argv[3] + str(i)])

asyncio.run(main())
"""


async def test_writers_in_several_processes_lose_nothing(tmp_path):
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", APPENDER, str(tmp_path), "10", name, cwd=REPO
        )
        for name in "abc"
    ]
    assert [await p.wait() for p in procs] == [0, 0, 0]
    fs = FileSystem(LocalStore(tmp_path), S5Identity(b"shared-user-seed-0123456789"))
    log = await fs.get("home/log")
    assert sorted(log) == sorted(f"{n}{i}" for n in "abc" for i in range(10))
    for name in "abc":  # each process's own appends stay in order
        assert [x for x in log if x[0] == name] == [f"{name}{i}" for i in range(10)]
