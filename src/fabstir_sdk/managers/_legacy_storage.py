"""Copy what an older SDK stored under the key-derived S5 seed into today's storage.

Before signers, the S5 seed was HKDF of the raw private key (``fabstir-sdk/s5-seed/v1``);
now it is HKDF of the wallet's signature of a fixed message (v2), so that any signer gets
the same storage. The old files live under the old identity: this walks it and copies every
file the new storage does not hold yet (same path, bytes, media type and metadata).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..s5._fs import FileSystem

__all__ = ["copy_missing_files"]


async def copy_missing_files(old: FileSystem, new: FileSystem, folder: str = "") -> int:
    """Copy every file under ``folder`` of ``old`` that ``new`` lacks; returns how many."""
    copied = 0
    present = {e.name for e in await new.list(folder) if e.type == "file"}
    for entry in await old.list(folder):
        path = f"{folder}/{entry.name}" if folder else entry.name
        if entry.type == "directory":
            copied += await copy_missing_files(old, new, path)
            continue
        if entry.name in present:
            continue  # the new storage has its own version: never overwritten
        ref = await old.file_ref(path)
        metadata = (ref.extra or {}).get("metadata") or None
        await new.put(
            path, await old.get_bytes(path), media_type=entry.media_type, metadata=metadata
        )
        copied += 1
    return copied
