"""The one interface behind which S5 data lives: blobs by hash, registry entries by key.

Two implementations: :class:`~fabstir_sdk.s5.LocalStore` (embedded, files on disk) and
:class:`~fabstir_sdk.s5.PortalClient` (an S5 portal over HTTP). Both verify every blob
against its hash and every registry entry against its signature before handing it out.
"""

from __future__ import annotations

import abc
import asyncio
import io
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import TypeAlias

import blake3

from ..errors import IntegrityError
from ._blob import BlobId
from ._registry import RegistryEntry

__all__ = ["BlobSource", "BlobVerifier", "Store", "check_entry", "pieces_of"]

#: What ``put_blob`` takes: the bytes, or a function that yields them in pieces each time it
#: is called (so a large blob streams, and a failed upload can be replayed).
BlobSource: TypeAlias = bytes | Callable[[], Iterable[bytes]]


def pieces_of(source: BlobSource) -> Iterable[bytes]:
    return (source,) if isinstance(source, bytes) else source()


class BlobVerifier:
    """Hashes a blob as it streams in; refuses it the moment it cannot match its id."""

    def __init__(self, expected: BlobId) -> None:
        self.expected = expected
        self._hasher = blake3.blake3()
        self._size = 0

    def update(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._size > self.expected.size:
            raise IntegrityError(f"blob {self.expected} is longer than its id says")
        self._hasher.update(piece)

    def finish(self) -> None:
        if self._size != self.expected.size or self._hasher.digest() != self.expected.hash:
            raise IntegrityError(f"blob {self.expected} does not match its hash")


class Store(abc.ABC):
    """Content-addressed blobs and signed registry entries."""

    @abc.abstractmethod
    async def put_blob(self, source: BlobSource) -> BlobId:
        """Store a blob; returns its id (computed from the bytes, never trusted from afar)."""

    @abc.abstractmethod
    def read_blob(self, blob: BlobId) -> AsyncIterator[bytes]:
        """The blob's bytes in pieces. The last piece is only yielded after the whole blob
        matched its hash; a mismatch raises IntegrityError instead. NotFoundError if absent."""

    async def get_blob(self, blob: BlobId) -> bytes:
        """The whole blob, verified; IntegrityError (and nothing returned) on a mismatch."""
        out = io.BytesIO()
        async for piece in self.read_blob(blob):
            out.write(piece)
        return out.getvalue()

    @abc.abstractmethod
    async def registry_get(self, pk: bytes) -> RegistryEntry | None:
        """The newest entry for the 33-byte key, signature checked; None if there is none."""

    @abc.abstractmethod
    async def registry_set(self, entry: RegistryEntry) -> None:
        """Store ``entry``; RevisionConflictError if its revision is not above the stored one."""

    async def publish(
        self, record: bytes, entry: RegistryEntry, blobs: Sequence[bytes] = ()
    ) -> None:
        """Store a small blob (and ``blobs`` with it), then the registry entry that points to
        it: in that order, so an entry never points to a missing blob."""
        await asyncio.gather(*(self.put_blob(blob) for blob in (record, *blobs)))
        await self.registry_set(entry)

    async def aclose(self) -> None:  # noqa: B027 - a no-op default is the point
        """Release connections; the embedded store holds none."""


def check_entry(entry: RegistryEntry, pk: bytes) -> RegistryEntry:
    """``entry`` if it is for ``pk`` and its signature holds; IntegrityError otherwise."""
    if entry.pk != pk or not entry.verify():
        raise IntegrityError("registry entry has a bad signature or belongs to another key")
    return entry
