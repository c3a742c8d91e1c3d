"""DirV1, the directory format Enhanced s5.js writes: CBOR, integer keys, ``5f 5d`` prefix.

A directory is the CBOR array ``["S5.pro", header, dirs, files]``; ``dirs`` maps names to
DirRef maps (2 link, 7 seconds, 8 nanoseconds) and ``files`` maps names to FileRef maps
(3 hash, 4 size, 6 media type, 7 seconds, 8 nanoseconds, 9 locations, 22 hash type or an
"extra" map, 23 previous version). Names are written in bytewise order, so equal
directories have equal bytes. Decoding checks every type and refuses anything else with
:class:`S5FormatError`: directories may come from a portal nobody vouches for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from ..errors import S5FormatError

__all__ = ["DIR_MAGIC", "DIRV1_PREFIX", "DirRef", "DirV1", "FileRef"]

DIRV1_PREFIX = b"\x5f\x5d"
DIR_MAGIC = "S5.pro"
_MAX_U64 = (1 << 64) - 1

# FileRef and DirRef map keys.
_HASH, _SIZE, _MEDIA, _TS, _TS_NANOS, _LOCATIONS, _EXTRA, _PREV = 3, 4, 6, 7, 8, 9, 22, 23
_LINK = 2


def _uint(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_U64:
        raise S5FormatError(f"DirV1 {what} is not an unsigned 64-bit integer")
    return value


def _opt_uint(value: object, what: str) -> int | None:
    return None if value is None else _uint(value, what)


def _str_keys(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise S5FormatError(f"DirV1 {what} is not a map with text keys")
    return value


@dataclass(frozen=True, slots=True)
class FileRef:
    """One file version: the hash of its stored blob and its (plaintext) size."""

    hash: bytes
    size: int
    media_type: str | None = None
    timestamp: int | None = None
    timestamp_subsec_nanos: int | None = None
    locations: tuple[tuple[int, bytes | str], ...] | None = None
    hash_type: int | None = None
    extra: dict[str, Any] | None = None
    prev: FileRef | None = None

    def to_cbor(self) -> dict[int, Any]:
        out: dict[int, Any] = {_HASH: self.hash, _SIZE: self.size}
        if self.media_type is not None:
            out[_MEDIA] = self.media_type
        if self.timestamp is not None:
            out[_TS] = self.timestamp
        if self.timestamp_subsec_nanos is not None:
            out[_TS_NANOS] = self.timestamp_subsec_nanos
        if self.locations is not None:
            out[_LOCATIONS] = [[tag, value] for tag, value in self.locations]
        if self.extra:
            out[_EXTRA] = self.extra
        elif self.hash_type is not None:
            out[_EXTRA] = self.hash_type
        if self.prev is not None:
            out[_PREV] = self.prev.to_cbor()
        return out

    @classmethod
    def from_cbor(cls, raw: object, depth: int = 0) -> FileRef:
        if not isinstance(raw, dict) or depth > 32:
            raise S5FormatError("DirV1 FileRef is not a map")
        digest = raw.get(_HASH)
        if not isinstance(digest, bytes) or len(digest) != 32:
            raise S5FormatError("DirV1 FileRef hash is not 32 bytes")
        media = raw.get(_MEDIA)
        if media is not None and not isinstance(media, str):
            raise S5FormatError("DirV1 FileRef media type is not text")
        locations = raw.get(_LOCATIONS)
        if locations is not None:
            if not isinstance(locations, list) or not all(
                isinstance(loc, list)
                and len(loc) == 2
                and isinstance(loc[0], int)
                and isinstance(loc[1], bytes | str)
                for loc in locations
            ):
                raise S5FormatError("DirV1 FileRef locations are not [tag, value] pairs")
            locations = tuple((loc[0], loc[1]) for loc in locations)
        key22 = raw.get(_EXTRA)
        extra = _str_keys(key22, "FileRef extra") if isinstance(key22, dict) else None
        hash_type = _opt_uint(key22, "FileRef hash type") if extra is None else None
        prev = raw.get(_PREV)
        return cls(
            hash=digest,
            size=_uint(raw.get(_SIZE), "FileRef size"),
            media_type=media,
            timestamp=_opt_uint(raw.get(_TS), "FileRef timestamp"),
            timestamp_subsec_nanos=_opt_uint(raw.get(_TS_NANOS), "FileRef nanoseconds"),
            locations=locations,
            hash_type=hash_type,
            extra=extra,
            prev=None if prev is None else cls.from_cbor(prev, depth + 1),
        )


@dataclass(frozen=True, slots=True)
class DirRef:
    """A subdirectory: ``link`` is ``0x1e`` + hash (fixed) or ``0xed`` + key (registry)."""

    link: bytes
    ts_seconds: int | None = None
    ts_nanos: int | None = None

    def to_cbor(self) -> dict[int, Any]:
        out: dict[int, Any] = {_LINK: self.link}
        if self.ts_seconds is not None:
            out[_TS] = self.ts_seconds
        if self.ts_nanos is not None:
            out[_TS_NANOS] = self.ts_nanos
        return out

    @classmethod
    def from_cbor(cls, raw: object) -> DirRef:
        if not isinstance(raw, dict):
            raise S5FormatError("DirV1 DirRef is not a map")
        link = raw.get(_LINK)
        if not isinstance(link, bytes) or len(link) != 33 or link[0] not in (0x1E, 0xED):
            raise S5FormatError("DirV1 DirRef link is not 0x1e/0xed + 32 bytes")
        return cls(
            link=link,
            ts_seconds=_opt_uint(raw.get(_TS), "DirRef timestamp"),
            ts_nanos=_opt_uint(raw.get(_TS_NANOS), "DirRef nanoseconds"),
        )


def _sorted(entries: dict[str, Any]) -> list[tuple[str, Any]]:
    return sorted(entries.items(), key=lambda item: item[0].encode())


@dataclass(slots=True)
class DirV1:
    header: dict[str, Any] = field(default_factory=dict)
    dirs: dict[str, DirRef] = field(default_factory=dict)
    files: dict[str, FileRef] = field(default_factory=dict)

    def to_cbor(self) -> bytes:
        """The CBOR array alone (what the s5.js test vectors show)."""
        return cbor2.dumps(
            [
                DIR_MAGIC,
                self.header,
                {name: ref.to_cbor() for name, ref in _sorted(self.dirs)},
                {name: ref.to_cbor() for name, ref in _sorted(self.files)},
            ]
        )

    def to_bytes(self) -> bytes:
        """The blob bytes: ``5f 5d`` + CBOR."""
        return DIRV1_PREFIX + self.to_cbor()

    @classmethod
    def from_bytes(cls, raw: bytes) -> DirV1:
        """Parse a directory blob, with or without the ``5f 5d`` prefix."""
        raw = bytes(raw)
        if raw.startswith(DIRV1_PREFIX):
            raw = raw[2:]
        try:
            decoded = cbor2.loads(raw)
        except Exception as exc:  # cbor2 raises several types for malformed input
            raise S5FormatError(f"directory is not valid CBOR: {type(exc).__name__}") from None
        if not isinstance(decoded, list) or len(decoded) != 4:
            raise S5FormatError("directory is not a DirV1 array of 4")
        magic, header, dirs, files = decoded
        if magic != DIR_MAGIC:
            raise S5FormatError("directory magic is not 'S5.pro'")
        return cls(
            header=_str_keys(header, "header"),
            dirs={name: DirRef.from_cbor(ref) for name, ref in _str_keys(dirs, "dirs").items()},
            files={name: FileRef.from_cbor(ref) for name, ref in _str_keys(files, "files").items()},
        )
