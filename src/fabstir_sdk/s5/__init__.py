"""A Python S5 client: the S5 formats, an embedded store, a portal client, a path file system.

The formats (blob ids, registry entries, encryption, DirV1 directories) are exact to the S5
spec and to s5.js, so data moves between this SDK, public portals and s5.js unchanged::

    from fabstir_sdk.s5 import blob_id, BlobId
    str(blob_id(b"Hello, world!"))   # 'blobb53pfycyq6lwes6ogtnjpmhsc75nucnizzye34dyu2cmnz7s7n6mnbu'

Stores: :class:`LocalStore` (embedded, the default) and :class:`PortalClient` (an S5 portal
over HTTP); :class:`FileSystem` puts encrypted paths on either. The local portal server
(``fabstir s5 serve``) lives in ``fabstir_sdk.s5.server`` and is not imported here.
"""

from ._blob import BlobId, blob_id
from ._crypto import (
    CHUNK_SIZE,
    decrypt_blob,
    decrypt_mutable,
    encrypt_blob,
    encrypt_mutable,
    pad_size,
)
from ._dirv1 import DirRef, DirV1, FileRef
from ._fs import DirEntry, FileSystem
from ._keys import S5Identity, derive_hash_int, derive_hash_string
from ._local import LocalStore
from ._portal import PortalClient
from ._registry import RegistryEntry
from ._store import Store

__all__ = [
    "BlobId",
    "CHUNK_SIZE",
    "DirEntry",
    "DirRef",
    "DirV1",
    "FileRef",
    "FileSystem",
    "LocalStore",
    "PortalClient",
    "RegistryEntry",
    "S5Identity",
    "Store",
    "blob_id",
    "decrypt_blob",
    "decrypt_mutable",
    "derive_hash_int",
    "derive_hash_string",
    "encrypt_blob",
    "encrypt_mutable",
    "pad_size",
]
