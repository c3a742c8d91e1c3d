"""The per-token readers of ``encrypted_chunk`` frames, made from the models' field table.

A streamed answer is one ``encrypted_chunk`` a token, so the client reads the usual ones
without the pydantic model: :func:`read_chunk_text` straight from the compact text hosts
write (one regex, no JSON parse), :func:`read_chunk_fields` from a parsed frame. Neither
holds its own idea of the fields: both are made at import from :data:`CHUNK_FIELDS`, which is
read from :class:`~._messages.EncryptedChunk` and its payload (names, whether required,
defaults) and the :class:`~._messages.Plain` form each field's type carries (the values
taken, their compact spelling). What they take is a subset of what the model takes, read
alike; anything else gives None, and the caller parses it with the model (its typed error
included).
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any

from pydantic.fields import FieldInfo

from ._messages import ChunkPayload, EncryptedChunk, Plain, WireModel, read_flag, read_id

__all__ = ["CHUNK_FIELDS", "ChunkFields", "WireField", "read_chunk_fields", "read_chunk_text"]

#: What the readers return: the fields :meth:`ClientSession._open_chunk` takes, in the order
#: our host writes them (tokens, ciphertext, nonce, AAD, index, id, final).
ChunkFields = tuple[int, str, str, str, int, str | int | None, bool | None]


@dataclass(frozen=True, slots=True)
class WireField:
    """One field of a frame as the fast readers see it."""

    attr: str  # the model's attribute
    name: str  # the wire name the readers take (the model's first)
    plain: Plain | None  # None: a literal (``type``) or a nested model (``payload``)
    required: bool
    default: Any
    nullable: bool  # null is a value the model takes
    literal: str | None = None
    nested: tuple[WireField, ...] = ()


def _plain_of(info: FieldInfo) -> Plain | None:
    for meta in info.metadata:
        if isinstance(meta, Plain):
            return meta
    for arg in typing.get_args(info.annotation):  # ``X | None`` keeps X's metadata inside
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, Plain):
                return meta
    return None


def _wire_name(attr: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    if alias is None:
        return info.alias or attr
    if isinstance(alias, str):
        return alias
    first = alias.choices[0]  # type: ignore[union-attr]
    assert isinstance(first, str)
    return first


def field_table(model: type[WireModel]) -> tuple[WireField, ...]:
    """The fields of ``model`` as the fast readers take them; TypeError for a field they
    could not read exactly as the model does (a type without a :class:`Plain` form)."""
    decorators = model.__pydantic_decorators__
    if decorators.model_validators or decorators.field_validators:
        raise TypeError(f"{model.__name__}: its validators are the model's alone")
    table = []
    for attr, info in model.model_fields.items():
        annotation = info.annotation
        args = typing.get_args(annotation)
        nullable = type(None) in args
        literal = nested = None
        plain = _plain_of(info)
        if typing.get_origin(annotation) is typing.Literal and len(args) == 1:
            literal = args[0]
        elif isinstance(annotation, type) and issubclass(annotation, WireModel):
            nested = field_table(annotation)
        elif plain is None:
            raise TypeError(f"{model.__name__}.{attr}: its type has no Plain form")
        table.append(
            WireField(
                attr,
                _wire_name(attr, info),
                plain,
                info.is_required(),
                None if info.is_required() else info.default,
                nullable,
                literal,
                nested or (),
            )
        )
    return tuple(table)


#: ``encrypted_chunk``'s fields (``payload``'s nested), in the model's order.
CHUNK_FIELDS = field_table(EncryptedChunk)
_FIELDS = {f.attr: f for f in CHUNK_FIELDS}
_PAYLOAD = {f.attr: f for f in _FIELDS["payload"].nested}
if field_table(ChunkPayload) != _FIELDS["payload"].nested:
    raise TypeError("EncryptedChunk.payload is not a ChunkPayload")
#: The fields of :data:`ChunkFields`, in its order.
_OUT = (
    _FIELDS["tokens"],
    _PAYLOAD["ciphertext_hex"],
    _PAYLOAD["nonce_hex"],
    _PAYLOAD["aad_hex"],
    _PAYLOAD["index"],
    _FIELDS["id"],
    _FIELDS["final"],
)
_MISSING = object()


# ---------------------------------------------------------------------- parsed frames

#: ``(names taken, (name, required, literal, nested rules, plain check, nullable), ...)``
_Rules = tuple[frozenset[str], tuple[tuple[Any, ...], ...]]


def _rules(table: tuple[WireField, ...]) -> _Rules:
    return frozenset(f.name for f in table), tuple(
        (
            f.name,
            f.required,
            f.literal,
            _rules(f.nested) if f.nested else None,
            f.plain.check if f.plain else None,
            f.nullable,
        )
        for f in table
    )


def _valid(rules: _Rules, obj: dict[str, Any]) -> bool:
    """Whether every member of ``obj`` is a field in its plain form (and none is missing)."""
    names, fields = rules
    if not obj.keys() <= names:
        return False  # another spelling or an extra field: the model decides
    for name, required, literal, nested, check, nullable in fields:
        value = obj.get(name, _MISSING)
        if value is _MISSING:
            if required:
                return False
        elif value is None:
            if not nullable:
                return False
        elif literal is not None:
            if type(value) is not str or value != literal:
                return False
        elif nested is not None:
            if type(value) is not dict or not _valid(nested, value):
                return False
        elif not check(value):
            return False
    return True


_RULES = _rules(CHUNK_FIELDS)
_PAYLOAD_NAME = _FIELDS["payload"].name
#: (in the payload?, wire name, default) of each of :data:`ChunkFields`.
_OUT_NAMES = tuple((f in _PAYLOAD.values(), f.name, f.default) for f in _OUT)


def read_chunk_fields(obj: dict[str, Any]) -> ChunkFields | None:
    """The fields of a parsed ``encrypted_chunk`` whose values are all in their plain form;
    None for any other (the model then validates it)."""
    if not _valid(_RULES, obj):
        return None
    payload = obj[_PAYLOAD_NAME]
    return tuple(
        (payload if inner else obj).get(name, default) for inner, name, default in _OUT_NAMES
    )


# ---------------------------------------------------------------------- compact text


def _value_text(f: WireField) -> str:
    if f.literal is not None:
        return re.escape(f'"{f.literal}"')
    assert f.plain is not None
    if re.compile(f.plain.text).groups != 1:
        raise TypeError(f"{f.attr}: a Plain text has one group")
    if f not in _OUT:  # checked only: a group that captures nothing is cheaper
        return f.plain.text.replace("(", "(?:", 1)
    return f.plain.text.replace("(", f"(?P<{f.attr}>", 1)


def _object_text(table: dict[str, WireField], layout: str) -> str:
    """The regex of a compact JSON object whose members are ``layout``'s attributes in its
    order (``name?``: may be absent, only for a field with a default; not the first); a
    field it leaves out must have a default."""
    parts, seen = [], set()
    for n, item in enumerate(layout.split()):
        attr, optional = item.rstrip("?"), item.endswith("?")
        f = table[attr]
        if optional and (f.required or n == 0):
            raise TypeError(f"{layout}: {attr} may not be left out")
        seen.add(attr)
        member = ("," if n else "") + re.escape(f'"{f.name}":')
        if f.nested:
            member += _object_text({g.attr: g for g in f.nested}, _PAYLOAD_LAYOUT)
        else:
            member += _value_text(f)
        parts.append(f"(?:{member})?" if optional else member)
    if any(table[a].required for a in table.keys() - seen):
        raise TypeError(f"{layout}: a required field is left out")
    return r"\{" + "".join(parts) + r"\}"


_PAYLOAD_LAYOUT = "ciphertext_hex nonce_hex aad_hex index"
#: ``encrypted_chunk`` as hosts write it in compact JSON (no whitespace, no escapes, ASCII
#: only): ours with ``id``/``final`` after the payload, upstream's before.
_LAYOUTS = (
    "type tokens session_id payload id? final?",
    "type tokens session_id id? final? payload",
)
_TEXTS = tuple(re.compile(_object_text(_FIELDS, layout)) for layout in _LAYOUTS)
_GROUPS = tuple(f.attr for f in _OUT)
if not all(pattern.groupindex.keys() >= set(_GROUPS) for pattern in _TEXTS):
    raise TypeError("a compact layout leaves out a field read_chunk_text returns")
#: Upstream's group numbers in :data:`ChunkFields`' order (numbers: names cost more); ours
#: are that order (``m.groups()``, cheaper still).
_UPSTREAM_GROUPS = tuple(_TEXTS[1].groupindex[g] for g in _GROUPS)
if tuple(_TEXTS[0].groupindex[g] for g in _GROUPS) != tuple(range(1, len(_GROUPS) + 1)):
    raise TypeError("ChunkFields is not in the order of our host's layout")
_OURS, _UPSTREAM = (p.fullmatch for p in _TEXTS)
# read_chunk_text reads its groups by hand, inline (a loop over the table, or a call a
# field, costs up to a microsecond a token more): what it does is the table's, or import
# fails here.
_ABSENT = {item[:-1] for layout in _LAYOUTS for item in layout.split() if item.endswith("?")}
if [
    (f.attr, f.plain and f.plain.read, f.plain and f.plain.even, f.attr in _ABSENT, f.default)
    for f in _OUT
] != [
    ("tokens", int, False, False, 0),
    ("ciphertext_hex", None, True, False, None),
    ("nonce_hex", None, True, False, None),
    ("aad_hex", None, True, False, ""),
    ("index", int, False, False, None),
    ("id", read_id, False, True, None),
    ("final", read_flag, False, True, None),
]:
    raise TypeError("read_chunk_text no longer reads what the table says")


def read_chunk_text(data: str) -> ChunkFields | None:
    """The fields of an ``encrypted_chunk`` frame read straight from its text when it is in
    the compact form hosts write (no JSON parse, no model: the per-token hot path); None
    for any other text, which is then parsed and validated as usual.

    What it takes parses (``json.loads``) to a frame that :func:`read_chunk_fields` and the
    model take with the same fields (tested), and is ASCII: ``len(data)`` is its size.
    """
    m = _OURS(data)
    if m is not None:
        fields = m.groups()
    else:
        m = _UPSTREAM(data)
        if m is None:
            return None
        fields = m.group(*_UPSTREAM_GROUPS)
    tokens, ciphertext, nonce, aad, index, cid, final = fields
    if (len(ciphertext) | len(nonce) | len(aad)) & 1:
        return None  # odd hex: the model refuses it, with its own error
    return (
        int(tokens),
        ciphertext,
        nonce,
        aad,
        int(index),
        None if cid is None else cid[1:-1] if cid[0] == '"' else int(cid),  # read_id
        None if final is None else final == "true",  # read_flag
    )
