"""StorageManager: the user's data and conversations, encrypted, in their own S5 storage.

Layout (compatible with the upstream SDK's paths; every directory is encrypted)::

    home/conversations/{user}/{key}.json                generic store_data / retrieve_data
                                                         (a key may be a path: a/b/c)
    home/sessions/{user}/{id}/conversation.json          a conversation (id = session id)
    home/sessions/{user}/{id}/data/{key}.json            per-session data
    home/user/settings.json                              user settings

``{user}`` is the wallet's checksummed address. The S5 identity, and with it every key,
derives from ``AuthManager.get_s5_seed()`` (HKDF of a wallet signature), never from the
address: another key opens nothing here, even in the same directory or on the same portal.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticValidationError

from ..config import SDKConfig
from ..errors import (
    AuthRequiredError,
    InvalidStorageKeyError,
    NotFoundError,
    S5FormatError,
    ValidationError,
)
from ..models import Conversation, ConversationSummary, Message, StoredRef
from ._context import Context

if TYPE_CHECKING:
    from ..s5._dirv1 import FileRef
    from ..s5._fs import FileSystem
    from ..s5._keys import S5Identity
    from ..s5._store import Store

__all__ = ["StorageManager", "open_store"]

_SUFFIX = ".json"
_MAX_KEY_BYTES = 200
_MAX_PATH_BYTES = 1024
_LIST_CONCURRENCY = 16


def _storage_root(config: SDKConfig) -> Path:
    if config.storage_dir is not None:
        return Path(config.storage_dir)
    import platformdirs

    return Path(platformdirs.user_data_path("fabstir-sdk")) / "s5"


def open_store(config: SDKConfig, identity: S5Identity) -> Store:
    """The configured store: the portal at ``s5_portal_url`` (behind an encrypted on-disk
    write queue for when it is unreachable, under ``storage_dir/queue``), else the embedded one.
    """
    if config.s5_portal_url:
        from ..s5._keys import derive_hash_string
        from ..s5._portal import PortalClient
        from ..s5._queue import QueuedStore
        from ..s5._rollback import RevisionGuard

        portal = PortalClient(config.s5_portal_url, identity, timeout=config.s5_timeout)
        secret = identity.queue_key
        # The directory name hides both the user and the portal: a hash under the secret.
        name = derive_hash_string(secret, portal.authority.encode()).hex()[:32]
        root = _storage_root(config)
        # The portal is not trusted to serve the newest registry entries: refuse rollbacks.
        guarded = RevisionGuard(portal, root / "revisions" / f"{name}.json")
        return QueuedStore(guarded, root / "queue" / name, secret)
    from ..s5._local import LocalStore

    return LocalStore(_storage_root(config))


def _check_key(key: object, what: str = "key") -> str:
    """A conversation or session id: one path segment (it names a directory)."""
    if not isinstance(key, str) or not key or key in (".", ".."):
        raise InvalidStorageKeyError(f"a storage {what} is a non-empty str")
    if "/" in key or "\0" in key:
        raise InvalidStorageKeyError(f"a storage {what} is one path segment (no '/' or NUL)")
    if len(key.encode()) > _MAX_KEY_BYTES:
        raise InvalidStorageKeyError(f"a storage {what} is at most {_MAX_KEY_BYTES} bytes")
    return key


def _check_path_key(key: object) -> str:
    """A data key: a path like ``"notes/2026/today"``, as on a file system and in S5.

    Written the one way it lists back: segments joined by single ``/``, none empty, ``.``
    or ``..``; each at most ``_MAX_KEY_BYTES`` bytes, the whole at most ``_MAX_PATH_BYTES``.
    """
    if not isinstance(key, str) or not key:
        raise InvalidStorageKeyError("a storage key is a non-empty str")
    if len(key.encode()) > _MAX_PATH_BYTES:
        raise InvalidStorageKeyError(f"a storage key is at most {_MAX_PATH_BYTES} bytes")
    for segment in key.split("/"):
        if not segment:
            raise InvalidStorageKeyError(
                f"storage key {key!r} has an empty segment (a leading, trailing or double '/')"
            )
        _check_key(segment, "key segment")
    return key


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _conversation(raw: Any) -> Conversation:
    try:
        return Conversation.model_validate(raw)
    except PydanticValidationError:
        raise S5FormatError("the stored conversation is not a valid Conversation") from None


class StorageManager:
    """Encrypted storage for one authenticated user (see the module docs for the layout)."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._fs: FileSystem | None = None
        self._user: str | None = None
        self._reached: FileSystem | None = None  # the file system check() reached

    def __repr__(self) -> str:
        return (
            f"StorageManager(user={self._user!r}, store={self._fs.store if self._fs else None!r})"
        )

    async def initialize(self) -> None:
        """Derive the S5 identity from the wallet and open the store. Idempotent; after a
        new ``authenticate()`` with another key it switches to that user's storage."""
        user = self._ctx.address
        if user is None:
            raise AuthRequiredError("authenticate first: await sdk.authenticate(private_key)")
        if self._fs is not None and self._user == user:
            return
        from ..s5._fs import FileSystem
        from ..s5._keys import S5Identity
        from .auth import AuthManager

        identity = S5Identity(bytes.fromhex(AuthManager(self._ctx).get_s5_seed()))
        previous, self._fs = self._fs, FileSystem(open_store(self._ctx.config, identity), identity)
        self._user = user
        if previous is not None:
            await previous.aclose()

    async def import_legacy_storage(self) -> int:
        """Copy the files an SDK before signers stored (under the seed derived from the raw
        key, see docs/security.md) into this storage, where it lacks them; returns how many.
        Needs the private key in this process (``AuthError`` with a remote signer)."""
        from ..s5._fs import FileSystem
        from ..s5._keys import S5Identity
        from ._legacy_storage import copy_missing_files
        from .auth import AuthManager

        identity = S5Identity(bytes.fromhex(AuthManager(self._ctx).get_legacy_s5_seed()))
        new, _ = await self._ready()
        old = FileSystem(open_store(self._ctx.config, identity), identity)
        try:
            return await copy_missing_files(old, new)
        finally:
            await old.aclose()

    async def check(self) -> None:
        """Reach the store; StorageUnavailableError if it cannot be reached. Sessions call
        it before paying: a process that never reached its portal has nothing to queue a
        conversation's writes against, so it could not keep what it paid for. One registry
        read (the sessions directory's entry, not the directory: it grows with every
        session), the first time for each user: once reached, the store queues on disk
        what the portal cannot take later, so asking again proves nothing more."""
        fs, user = await self._ready()
        if self._reached is fs:
            return
        await fs.reach(f"home/sessions/{user}")
        self._reached = fs

    async def aclose(self) -> None:
        """Close the portal connection (if any). The SDK's ``aclose()`` calls this."""
        if self._fs is not None:
            fs, self._fs = self._fs, None
            await fs.aclose()

    async def flush(self) -> int:
        """Send writes queued while the S5 portal was unreachable; returns how many items
        went. StorageUnavailableError if it still is (they stay queued, on disk). 0 with
        the embedded store. Any storage call after the portal is back does this too."""
        fs, _ = await self._ready()
        flush = getattr(fs.store, "flush", None)
        return 0 if flush is None else int(await flush())

    @property
    def queued(self) -> int:
        """Items (blobs, directory entries) waiting on disk for the portal; 0 if none."""
        if self._fs is None:
            return 0
        return int(getattr(self._fs.store, "queued", 0))

    @property
    def fs(self) -> FileSystem:
        """The path file system: ``put``/``get``/``list``/``delete``/``metadata`` on paths."""
        if self._fs is None or self._user != self._ctx.address:
            raise AuthRequiredError("call await storage.initialize() after authenticate()")
        return self._fs

    async def _ready(self) -> tuple[FileSystem, str]:
        await self.initialize()
        assert self._fs is not None and self._user is not None
        return self._fs, self._user

    def _ref(self, key: str, fs: FileSystem, ref: FileRef) -> StoredRef:
        metadata = (ref.extra or {}).get("metadata") or {}
        return StoredRef(key=key, cid=str(fs.blob_id(ref)), size=ref.size, metadata=metadata)

    # ------------------------------------------------------------------ generic data

    async def store_data(
        self, key: str, data: Any, metadata: dict[str, Any] | None = None
    ) -> StoredRef:
        """Store any CBOR-encodable value, ``str`` or ``bytes`` under ``key``: a name or a
        path (``"notes/2026/today"``), listed by prefix with :meth:`list_user_data`."""
        key = _check_path_key(key)
        fs, user = await self._ready()
        ref = await fs.put(f"home/conversations/{user}/{key}{_SUFFIX}", data, metadata=metadata)
        return self._ref(key, fs, ref)

    async def retrieve_data(self, key: str) -> Any:
        """The value stored under ``key``; NotFoundError if there is none."""
        key = _check_path_key(key)
        fs, user = await self._ready()
        return await fs.get(f"home/conversations/{user}/{key}{_SUFFIX}")

    async def list_user_data(self, prefix: str = "") -> list[StoredRef]:
        """Every stored key starting with ``prefix`` (``"notes/"``: all under notes), by key.

        Only the directories the prefix can reach are read.
        """
        if not isinstance(prefix, str):
            raise InvalidStorageKeyError("a storage key prefix is a str")
        fs, user = await self._ready()
        root = f"home/conversations/{user}"
        start = prefix.rpartition("/")[0]
        if start:
            _check_path_key(start)
        limit = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def ref(key: str) -> list[StoredRef]:
            async with limit:
                return [self._ref(key, fs, await fs.file_ref(f"{root}/{key}{_SUFFIX}"))]

        async def walk(folder: str) -> list[StoredRef]:
            async with limit:
                entries = await fs.list(f"{root}/{folder}" if folder else root)
            work = []
            for entry in entries:
                key = f"{folder}/{entry.name}" if folder else entry.name
                if entry.type == "directory":
                    if key.startswith(prefix) or prefix.startswith(key + "/"):
                        work.append(walk(key))
                elif entry.name.endswith(_SUFFIX) and key.startswith(prefix):
                    work.append(ref(key[: -len(_SUFFIX)]))
            return [found for refs in await asyncio.gather(*work) for found in refs]

        return sorted(await walk(start), key=lambda ref: ref.key)

    async def delete_data(self, key: str) -> bool:
        """Remove ``key``; False if it was not there."""
        key = _check_path_key(key)
        fs, user = await self._ready()
        return await fs.delete(f"home/conversations/{user}/{key}{_SUFFIX}")

    # ------------------------------------------------------------------ conversations

    def _conversation_path(self, user: str, conversation_id: str) -> str:
        _check_key(conversation_id, "conversation id")
        return f"home/sessions/{user}/{conversation_id}/conversation{_SUFFIX}"

    async def store_conversation(self, conversation: Conversation) -> StoredRef:
        """Store (replace) a whole conversation."""
        if not isinstance(conversation, Conversation):
            raise ValidationError("store_conversation takes a Conversation")
        fs, user = await self._ready()
        path = self._conversation_path(user, conversation.id)
        ref = await fs.put(path, conversation.model_dump(mode="json"))
        return self._ref(conversation.id, fs, ref)

    async def conversation_ref(self, conversation_id: str) -> StoredRef:
        """Where the stored conversation is (its CID), without reading or rewriting it;
        NotFoundError if there is none."""
        fs, user = await self._ready()
        ref = await fs.file_ref(self._conversation_path(user, conversation_id))
        return self._ref(conversation_id, fs, ref)

    async def load_conversation(self, conversation_id: str) -> Conversation:
        """NotFoundError if there is no conversation with this id."""
        fs, user = await self._ready()
        raw = await fs.get(self._conversation_path(user, conversation_id))
        return _conversation(raw)

    async def append_message(
        self, conversation_id: str, message: Message | dict[str, Any]
    ) -> Conversation:
        """Add one message (creating the conversation if needed) and return the result.

        Appends to one conversation are serialized, so concurrent calls keep every message.
        """
        return await self.append_messages(conversation_id, [message])

    async def append_messages(
        self, conversation_id: str, messages: Sequence[Message | dict[str, Any]]
    ) -> Conversation:
        """Add ``messages`` in order, all in one write (a prompt and its answer are never
        stored apart, and cost one S5 update instead of one each); returns the result."""
        added: list[Message] = []
        for message in messages:
            if isinstance(message, dict):
                message = Message(**message)
            if not isinstance(message, Message):
                raise ValidationError("a message is a Message or a dict with role and content")
            added.append(message)
        fs, user = await self._ready()
        path = self._conversation_path(user, conversation_id)
        result: list[Conversation] = []

        def append(raw: Any) -> dict[str, Any]:
            now = _now_ms()
            if raw is None:
                conversation = Conversation(id=conversation_id, created_at=now)
            else:
                conversation = _conversation(raw)
            updated = conversation.model_copy(
                update={"messages": [*conversation.messages, *added], "updated_at": now}
            )
            result[:] = [updated]  # what is stored, already validated: not parsed again
            return updated.model_dump(mode="json")

        await fs.update(path, append)
        return result[0]

    async def list_conversations(self) -> list[ConversationSummary]:
        """Summaries of every stored conversation, most recently updated first."""
        fs, user = await self._ready()
        ids = [e.name for e in await fs.list(f"home/sessions/{user}") if e.type == "directory"]
        limit = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def summary(conversation_id: str) -> ConversationSummary | None:
            async with limit:
                try:
                    conversation = await self.load_conversation(conversation_id)
                except NotFoundError:  # a session directory without a conversation
                    return None
            return ConversationSummary(
                id=conversation.id,
                message_count=len(conversation.messages),
                created_at=conversation.created_at,
                updated_at=conversation.updated_at,
                metadata=conversation.metadata,
            )

        found = [s for s in await asyncio.gather(*map(summary, ids)) if s is not None]
        return sorted(found, key=lambda s: s.updated_at, reverse=True)

    # ------------------------------------------------------------------ sessions and settings

    async def store_session_data(self, session_id: str, key: str, data: Any) -> StoredRef:
        key = _check_key(key)
        fs, user = await self._ready()
        path = f"home/sessions/{user}/{_check_key(session_id, 'session id')}/data/{key}{_SUFFIX}"
        return self._ref(key, fs, await fs.put(path, data))

    async def get_session_data(self, session_id: str, key: str) -> Any:
        key = _check_key(key)
        fs, user = await self._ready()
        sid = _check_key(session_id, "session id")
        return await fs.get(f"home/sessions/{user}/{sid}/data/{key}{_SUFFIX}")

    async def save_user_settings(self, settings: dict[str, Any]) -> StoredRef:
        if not isinstance(settings, dict):
            raise ValidationError("settings are a dict")
        fs, _ = await self._ready()
        return self._ref("settings", fs, await fs.put("home/user/settings.json", settings))

    async def get_user_settings(self) -> dict[str, Any] | None:
        """The saved settings, or None if none were saved."""
        fs, _ = await self._ready()
        try:
            settings: dict[str, Any] = await fs.get("home/user/settings.json")
        except NotFoundError:
            return None
        return settings

    async def update_user_settings(
        self, change: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Merge ``change`` (a dict) into the settings, or apply it (a function), atomically."""
        fs, _ = await self._ready()

        def apply(old: Any) -> dict[str, Any]:
            current = dict(old or {})
            return change(current) if callable(change) else {**current, **change}

        result: dict[str, Any] = await fs.update("home/user/settings.json", apply)
        return result
