"""Declarative Kafka message schemas and the one generic encoder/decoder that serves them all.

A schema mirrors Kafka's JSON message specs [S: ak clients/src/main/resources/common/message/
README.md] in Python::

    REQUEST = Message("ProduceRequest", api_key=0, valid="0-13", flexible="9+", fields=[
        F("transactional_id", "string", "3+", nullable="3+", default=None),
        F("acks", "int16", "0+"),
        F("topic_data", "[]TopicProduceData", "0+", fields=[
            F("name", "string", "0-12"),
            F("partition_data", "[]PartitionProduceData", "0+", fields=[
                F("index", "int32", "0+"),
                F("records", "records", "0+", nullable="0+"),
            ]),
        ]),
    ])

Field types: int8 int16 int32 int64 uint16 uint32 float64 bool uuid string bytes records;
"[]T" is an array of T; a name starting with a capital is a struct (its `fields` are given
inline), so "[]Topic" is an array of structs and "Leader" a nested struct. Version ranges are
"N+", "N-M", "N" or "none". `nullable` is the versions in which null is allowed; `tag` makes the
field tagged (in the same versions as `versions`, which must be flexible ones).

Wire rules the engine applies (codec.py has the primitive layouts):
- a version in `flexible` uses compact strings, bytes, records and arrays (uvarint N+1, 0 = null)
  and ends **every** struct (the body, each array element, each nested struct) with a
  tagged-field section; tagged fields are written in ascending tag order and only when their
  value differs from the default; unknown tags are skipped when reading;
- other versions use int16 string lengths, int32 bytes/array lengths (-1 = null), no tags.

Decoded messages are plain dicts keyed by snake_case field name (Kafka's name with an underscore
before each capital, the same names kafka-python uses). A decoded dict holds **every** field of
the schema: fields the version does not carry, and tagged fields that were absent, get their
defaults, so a handler reads `body["transactional_id"]` whatever the version. Arrays are lists,
structs nested dicts, uuids `uuid.UUID`, `bytes` fields `bytes`, and `records` a zero-copy
memoryview of the frame (None when null).

Encoding takes the same kind of dict; a missing key means the field's default, and fields the
version does not carry are ignored. Defaults: the schema's `default`, else 0 / False / "" /
zero uuid / b"" / empty list / a struct of defaults. `records` defaults to b"" (empty), not
null: a null Records in a Fetch response makes librdkafka re-fetch in a tight loop
(KAFKA_PROTOCOL.md §2.2). A records value is written as the caller's object (bytes, memoryview,
a list of pieces, or any object with __len__ such as a file region), never copied by the
encoder; `Message.encode_chunks` (and protocol.encode_response_chunks) return the small pieces
joined and the records values as they were given, for writelines()/sendfile. A body that does
not fit the schema (wrong type, int out of range, None where null is not allowed) raises
`EncodeError`; malformed input to a decoder raises codec.ProtocolError, never anything else.

Speed: each (message, version) is compiled once, on first use (or `compile_all()` at start-up),
to one straight-line Python function per direction (source generated here and exec'd):
consecutive fixed-width fields are read or written with a single precompiled struct, arrays of
structs are inlined loops, 1-byte compact lengths are read inline, and no schema object is
consulted at run time. `Message.source(version, "decode")` shows the code.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from client.wire import codec
from client.wire.codec import DEFAULT_LIMITS, ZERO_UUID, DecodeLimits, ProtocolError

__all__ = [
    "VERSION_MAX", "EncodeError", "F", "Field", "Message", "Versions",
]

VERSION_MAX = 0x7FFF  # the int16 api_version space; "N+" means N..VERSION_MAX

_UNSET: Any = object()

# Fixed-width types: struct format character and size.
_FIXED: dict[str, tuple[str, int]] = {
    "int8": ("b", 1), "int16": ("h", 2), "int32": ("i", 4), "int64": ("q", 8),
    "uint16": ("H", 2), "uint32": ("I", 4), "float64": ("d", 8), "bool": ("?", 1), "uuid": ("16s", 16),
}
_VARIABLE = frozenset({"string", "bytes", "records"})
_TYPE_DEFAULTS: dict[str, Any] = {
    "int8": 0, "int16": 0, "int32": 0, "int64": 0, "uint16": 0, "uint32": 0, "float64": 0.0,
    "bool": False, "uuid": ZERO_UUID, "string": "", "bytes": b"", "records": b"",
}

# Exceptions a generated decoder can meet on malformed input; all become ProtocolError.
_DECODE_ERRORS = (struct.error, IndexError, UnicodeDecodeError, ValueError, OverflowError, TypeError)


class EncodeError(ValueError):
    """A body that cannot be encoded at this version (wrong type, out-of-range int, null not allowed)."""


@dataclass(frozen=True, slots=True)
class Versions:
    """An inclusive version range; empty when low > high."""

    low: int
    high: int

    @classmethod
    def parse(cls, spec: str | None) -> Versions:
        if spec is None or spec == "none":
            return _NO_VERSIONS
        if spec.endswith("+"):
            return cls(int(spec[:-1]), VERSION_MAX)
        low, _, high = spec.partition("-")
        return cls(int(low), int(high or low))

    def has(self, version: int) -> bool:
        return self.low <= version <= self.high

    def __str__(self) -> str:
        if self.low > self.high:
            return "none"
        return f"{self.low}+" if self.high == VERSION_MAX else f"{self.low}-{self.high}"


_NO_VERSIONS = Versions(1, 0)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a message or struct (see the module docstring for the type syntax)."""

    name: str
    type: str
    versions: Versions
    nullable_versions: Versions = _NO_VERSIONS
    tagged_versions: Versions = _NO_VERSIONS
    tag: int | None = None
    default: Any = _UNSET
    fields: tuple[Field, ...] = ()

    @property
    def is_array(self) -> bool:
        return self.type.startswith("[]")

    @property
    def item_type(self) -> str:
        return self.type[2:] if self.is_array else self.type

    @property
    def is_struct(self) -> bool:
        """The field, or its array items, is a struct."""
        return self.item_type[:1].isupper()

    def tagged_in(self, version: int) -> bool:
        return self.tag is not None and self.tagged_versions.has(version)

    def default_value(self) -> Any:
        """A fresh default value (new list / dict objects on every call)."""
        if self.default is not _UNSET:
            return self.default
        if self.is_array:
            return []
        if self.is_struct:
            return {f.name: f.default_value() for f in self.fields}
        return _TYPE_DEFAULTS[self.type]


def F(name: str, type_: str, versions: str = "0+", *, nullable: str | None = None, tag: int | None = None,
      tagged: str | None = None, default: Any = _UNSET, fields: Sequence[Field] = ()) -> Field:
    """Declare a field. `tagged` defaults to `versions` when `tag` is given."""
    item = type_[2:] if type_.startswith("[]") else type_
    if item[:1].isupper():
        if not fields:
            raise ValueError(f"struct field {name} needs fields")
    elif item not in _FIXED and item not in _VARIABLE:
        raise ValueError(f"field {name}: unknown type {type_}")
    return Field(
        name=name, type=type_, versions=Versions.parse(versions), nullable_versions=Versions.parse(nullable),
        tagged_versions=Versions.parse(tagged or (versions if tag is not None else None)), tag=tag,
        default=default, fields=tuple(fields),
    )


@dataclass(eq=False)
class Message:
    """A request or response schema with lazily compiled per-version codecs."""

    name: str
    api_key: int
    valid: str
    flexible: str
    fields: Sequence[Field]
    valid_versions: Versions = field(init=False)
    flexible_versions: Versions = field(init=False)
    _decoders: dict[int, Callable[..., tuple[dict[str, Any], int]]] = field(init=False, default_factory=dict)
    _encoders: dict[int, Callable[..., None]] = field(init=False, default_factory=dict)
    _sources: dict[tuple[int, str], str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.fields = tuple(self.fields)
        self.valid_versions = Versions.parse(self.valid)
        self.flexible_versions = Versions.parse(self.flexible)
        _check_struct(self.name, self.fields, self.flexible_versions)

    @property
    def min_version(self) -> int:
        return self.valid_versions.low

    @property
    def max_version(self) -> int:
        return self.valid_versions.high

    def has_version(self, version: int) -> bool:
        return self.valid_versions.has(version)

    def is_flexible(self, version: int) -> bool:
        """Flexible per the schema's open range, even above max_version (headers of future versions)."""
        return self.flexible_versions.has(version)

    def default(self) -> dict[str, Any]:
        """A fresh body with every field at its default (start a response from this)."""
        return {f.name: f.default_value() for f in self.fields}

    def decoder(self, version: int) -> Callable[..., tuple[dict[str, Any], int]]:
        """fn(buf: memoryview, pos: int, limits: DecodeLimits) -> (body, next_pos)."""
        fn = self._decoders.get(version)
        if fn is None:
            fn = self._decoders[version] = self._compile(version, "decode")
        return fn

    def encoder(self, version: int) -> Callable[..., None]:
        """fn(body, out: list, chunks: list | None = None) appends the encoded pieces to `out`.

        With `chunks` (a list), each records value goes there as is, after the pieces of `out`
        before it, joined; `out` is emptied each time, so the message is chunks + out.
        """
        fn = self._encoders.get(version)
        if fn is None:
            fn = self._encoders[version] = self._compile(version, "encode")
        return fn

    def decode(self, data: bytes | bytearray | memoryview, version: int, pos: int = 0,
               limits: DecodeLimits = DEFAULT_LIMITS) -> tuple[dict[str, Any], int]:
        """Decode one body starting at `pos`; returns (body, position after it)."""
        buf = data if data.__class__ is memoryview else memoryview(data)
        return self.decoder(version)(buf, pos, limits)

    def encode_into(self, body: Mapping[str, Any], version: int, out: list[Any]) -> None:
        """Append the encoded pieces (records values uncopied) to `out`, e.g. a Writer's chunks."""
        self.encoder(version)(body, out)

    def encode(self, body: Mapping[str, Any], version: int) -> bytes:
        out: list[Any] = []
        self.encoder(version)(body, out)
        return b"".join(out)

    def encode_chunks(self, body: Mapping[str, Any], version: int) -> list[Any]:
        """The encoding as a list: small pieces joined, records values passed through uncopied."""
        out: list[Any] = []
        chunks: list[Any] = []
        self.encoder(version)(body, out, chunks)
        if out:
            chunks.append(b"".join(out))
        return chunks

    def compile_all(self) -> None:
        for version in range(self.min_version, self.max_version + 1):
            self.decoder(version)
            self.encoder(version)

    def source(self, version: int, direction: str) -> str:
        """The generated Python source of one codec (for reading and debugging)."""
        (self.decoder if direction == "decode" else self.encoder)(version)
        return self._sources[(version, direction)]

    def _compile(self, version: int, direction: str) -> Any:
        if not self.valid_versions.has(version):
            raise KeyError(f"{self.name} has no version {version} (valid {self.valid_versions})")
        gen = _Gen(self.name, version, self.flexible_versions.has(version))
        source = gen.decoder(self.fields) if direction == "decode" else gen.encoder(self.fields)
        self._sources[(version, direction)] = source
        namespace = dict(gen.consts)
        code = compile(source, f"<{self.name} v{version} {direction}>", "exec")
        exec(code, namespace)
        return namespace[direction]


def _check_struct(where: str, fields: Sequence[Field], flexible: Versions) -> None:
    tagged: list[Field] = []
    names: set[str] = set()
    for f in fields:
        if f.name in names:
            raise ValueError(f"{where}: duplicate field {f.name}")
        names.add(f.name)
        if f.tag is not None:
            if f.tagged_versions.low < flexible.low or f.tagged_versions.low > f.tagged_versions.high:
                raise ValueError(f"{where}.{f.name}: tagged outside flexible versions")
            for other in tagged:  # a tag may be reused only in disjoint version ranges
                if other.tag == f.tag and not (other.tagged_versions.high < f.tagged_versions.low
                                               or f.tagged_versions.high < other.tagged_versions.low):
                    raise ValueError(f"{where}.{f.name}: tag {f.tag} already used by {other.name}")
            tagged.append(f)
        if f.is_struct and not f.is_array and f.nullable_versions.low <= f.nullable_versions.high:
            raise ValueError(f"{where}.{f.name}: nullable structs are not supported")
        if f.is_struct:
            _check_struct(f"{where}.{f.name}", f.fields, flexible)


def _literal(value: Any) -> str:
    """Python source for an immutable default (ints, bools, None, str, bytes, floats)."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return repr(value)
    raise TypeError(f"unsupported default literal {value!r}")


class _Gen:
    """Emits the source of one decoder or encoder for one message version."""

    def __init__(self, name: str, version: int, flexible: bool) -> None:
        self.name = name
        self.version = version
        self.flexible = flexible
        self.lines: list[str] = []
        self.counter = 0
        self.consts: dict[str, Any] = {
            "_ProtocolError": ProtocolError, "_EncodeError": EncodeError, "_DECODE_ERRORS": _DECODE_ERRORS,
            "_UUID": uuid.UUID, "_ZERO_UUID": ZERO_UUID, "_struct": struct,
            "_ruv": codec.read_uvarint, "_skip_tags": codec.skip_tagged_fields,
            "_ral": codec.read_array_length, "_rcal": codec.read_compact_array_length,
            "_rs": codec.read_string, "_rns": codec.read_nullable_string,
            "_rcs": codec.read_compact_string, "_rcns": codec.read_compact_nullable_string,
            "_rb": codec.read_bytes, "_rnb": codec.read_nullable_bytes,
            "_rcb": codec.read_compact_bytes, "_rcnb": codec.read_compact_nullable_bytes,
            "_rr": codec.read_records, "_rcr": codec.read_compact_records,
            "_es": codec.encode_string, "_ens": codec.encode_nullable_string,
            "_ecs": codec.encode_compact_string, "_ecns": codec.encode_compact_nullable_string,
            "_eb": codec.encode_bytes, "_enb": codec.encode_nullable_bytes,
            "_ecb": codec.encode_compact_bytes, "_ecnb": codec.encode_compact_nullable_bytes,
            "_euv": codec.encode_uvarint, "_ub": codec.uuid_bytes, "_rsize": codec.buffer_size,
            "_arec": codec.append_records, "_p32": codec.INT32.pack, "_COPY_MAX": codec.COALESCE_COPY_BYTES_MAX,
        }
        self._struct_ids: dict[str, str] = {}

    # --- helpers -----------------------------------------------------------------------------

    def tmp(self, hint: str) -> str:
        self.counter += 1
        return f"_{hint}{self.counter}"

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def const(self, value: Any, hint: str = "c") -> str:
        name = f"_{hint}{len(self.consts)}"
        self.consts[name] = value
        return name

    def packer(self, fmt: str) -> str:
        key = "_S_" + fmt.replace("16s", "U").replace("?", "o")
        if key not in self.consts:
            self.consts[key] = struct.Struct(">" + fmt)
        return key

    def present(self, fields: Sequence[Field]) -> tuple[list[Field], list[Field]]:
        """(untagged fields in this version, tagged fields in this version)."""
        v = self.version
        plain = [f for f in fields if f.versions.has(v) and not (self.flexible and f.tagged_in(v))]
        tagged = [f for f in fields if f.versions.has(v) and self.flexible and f.tagged_in(v)]
        tagged.sort(key=lambda f: f.tag)  # type: ignore[arg-type, return-value]
        return plain, tagged

    def nullable(self, f: Field) -> bool:
        return f.nullable_versions.has(self.version)

    def default_src(self, f: Field) -> str:
        """Source of an expression building a fresh default value of `f`."""
        if f.default is not _UNSET:
            return _literal(f.default)
        if f.is_array:
            return "[]"
        if f.is_struct:
            return "{" + ", ".join(f"{sub.name!r}: {self.default_src(sub)}" for sub in f.fields) + "}"
        if f.type == "uuid":
            return "_ZERO_UUID"
        return _literal(_TYPE_DEFAULTS[f.type])

    def item_bytes_min(self, f: Field) -> int:
        """The smallest encoding of one array item of `f` in this version (bounds array counts)."""
        item = f.item_type
        if item in _FIXED:
            return _FIXED[item][1]
        if item in _VARIABLE:
            return 1 if self.flexible else (2 if item == "string" else 4)
        return self.struct_bytes_min(f.fields)

    def struct_bytes_min(self, fields: Sequence[Field]) -> int:
        plain, _ = self.present(fields)
        size = 1 if self.flexible else 0
        for f in plain:
            if f.is_array:
                size += 1 if self.flexible else 4
            elif f.is_struct:
                size += self.struct_bytes_min(f.fields)
            else:
                size += self.item_bytes_min(f)
        return size

    # --- decoder -----------------------------------------------------------------------------

    def decoder(self, fields: Sequence[Field]) -> str:
        self.emit(0, "def decode(buf, pos, limits):")
        self.emit(1, "smax = limits.string_bytes_max; bmax = limits.bytes_max")
        self.emit(1, "rmax = limits.records_bytes_max; amax = limits.array_length_max")
        self.emit(1, "tmax = limits.tagged_fields_max; blen = len(buf)")
        self.emit(1, "try:")
        body = self.dec_struct(fields, 2)
        self.emit(2, f"return {body}, pos")
        self.emit(1, "except _ProtocolError:")
        self.emit(2, "raise")
        self.emit(1, "except _DECODE_ERRORS as e:")
        where = f"{self.name} v{self.version}: malformed: "
        # str(e), cut short: repr() of a UnicodeDecodeError would carry the whole frame
        self.emit(2, f"raise _ProtocolError({where!r} + type(e).__name__ + ': ' + str(e)[:200]) from e")
        return "\n".join(self.lines) + "\n"

    def dec_struct(self, fields: Sequence[Field], ind: int) -> str:
        """Emit code decoding a struct; returns the name of the variable holding its dict."""
        plain, tagged = self.present(fields)
        names = {f.name: self.tmp("v") for f in fields if f.versions.has(self.version)}
        run: list[Field] = []
        for f in plain:
            if f.type in _FIXED:
                run.append(f)
                continue
            self.dec_fixed_run(run, names, ind)
            run = []
            self.dec_field(f, names[f.name], ind)
        self.dec_fixed_run(run, names, ind)
        if self.flexible:
            self.dec_tags(tagged, names, ind)
        var = self.tmp("d")
        items = []
        for f in fields:
            src = names[f.name] if f.name in names else self.default_src(f)
            items.append(f"{f.name!r}: {src}")
        self.emit(ind, f"{var} = {{{', '.join(items)}}}")
        return var

    def dec_fixed_run(self, run: list[Field], names: dict[str, str], ind: int) -> None:
        if not run:
            return
        fmt = "".join(_FIXED[f.type][0] for f in run)
        size = sum(_FIXED[f.type][1] for f in run)
        targets = ", ".join(names[f.name] for f in run)
        self.emit(ind, f"{targets}, = {self.packer(fmt)}.unpack_from(buf, pos)")
        self.emit(ind, f"pos += {size}")
        for f in run:
            if f.type == "uuid":
                self.emit(ind, f"{names[f.name]} = _UUID(bytes={names[f.name]})")

    def dec_field(self, f: Field, var: str, ind: int) -> None:
        """Emit code decoding one field value into `var` (any type, tagged or not)."""
        if f.is_array:
            self.dec_array(f, var, ind)
        elif f.is_struct:
            sub = self.dec_struct(f.fields, ind)
            self.emit(ind, f"{var} = {sub}")
        elif f.type in _FIXED:
            fmt, size = _FIXED[f.type]
            self.emit(ind, f"{var}, = {self.packer(fmt)}.unpack_from(buf, pos)")
            self.emit(ind, f"pos += {size}")
            if f.type == "uuid":
                self.emit(ind, f"{var} = _UUID(bytes={var})")
        else:
            self.dec_variable(f.type, self.nullable(f), var, ind, f.name)

    def dec_variable(self, type_: str, nullable: bool, var: str, ind: int, name: str) -> None:
        c = "c" if self.flexible else ""
        if type_ == "string":
            fn = f"_r{c}{'n' if nullable else ''}s"
            if self.flexible:  # inline fast path: a 1-byte length (< 127 bytes), checked as _rcs does
                n, end = self.tmp("n"), self.tmp("end")
                self.emit(ind, f"{n} = buf[pos]")
                self.emit(ind, f"if 0 < {n} < 0x80 and {n} <= smax:")
                self.emit(ind + 1, f"{end} = pos + {n}")
                self.emit(ind + 1, f"if {end} > blen: raise _ProtocolError('truncated string')")
                self.emit(ind + 1, f"{var} = str(buf[pos + 1:{end}], 'utf-8'); pos = {end}")
                self.emit(ind, "else:")
                ind += 1
            self.emit(ind, f"{var}, pos = {fn}(buf, pos, smax)")
        elif type_ == "bytes":
            fn = f"_r{c}{'n' if nullable else ''}b"
            self.emit(ind, f"{var}, pos = {fn}(buf, pos, bmax)")
        else:  # records
            self.emit(ind, f"{var}, pos = _r{c}r(buf, pos, rmax)")
            if not nullable:
                self.emit(ind, f"if {var} is None: raise _ProtocolError({name + ' is null'!r})")

    def dec_array(self, f: Field, var: str, ind: int) -> None:
        n = self.tmp("n")
        item_bytes_min = self.item_bytes_min(f)
        if self.flexible:  # inline fast path: a 1-byte count (< 127 items), checked as _rcal does
            self.emit(ind, f"{n} = buf[pos] - 1")
            self.emit(ind, f"if {n} < 0x7F:")
            self.emit(ind + 1, "pos += 1")
            self.emit(ind + 1, f"if {n} > amax or {n} * {item_bytes_min} > blen - pos:")
            self.emit(ind + 2, f"{n}, pos = _rcal(buf, pos - 1, amax, {item_bytes_min})  # raises")
            self.emit(ind, "else:")
            self.emit(ind + 1, f"{n}, pos = _rcal(buf, pos, amax, {item_bytes_min})")
        else:
            self.emit(ind, f"{n}, pos = _ral(buf, pos, amax, {item_bytes_min})")
        self.emit(ind, f"if {n} < 0:")
        if self.nullable(f):
            self.emit(ind + 1, f"{var} = None")
        else:
            self.emit(ind + 1, f"raise _ProtocolError({'non-nullable array ' + f.name + ' is null'!r})")
        self.emit(ind, "else:")
        ind += 1
        item = f.item_type
        if item in _FIXED and item != "uuid":
            ch, size = _FIXED[item]
            self.emit(ind, f"{var} = list(_struct.unpack_from('>%d{ch}' % {n}, buf, pos))")
            self.emit(ind, f"pos += {size} * {n}")
            return
        self.emit(ind, f"{var} = []")
        app = self.tmp("app")
        self.emit(ind, f"{app} = {var}.append")
        self.emit(ind, f"for _ in range({n}):")
        if f.is_struct:
            item_var = self.dec_struct(f.fields, ind + 1)
        else:
            item_var = self.tmp("i")
            item_field = Field(name=f.name, type=item, versions=f.versions)
            self.dec_field(item_field, item_var, ind + 1)
        self.emit(ind + 1, f"{app}({item_var})")

    def dec_tags(self, tagged: list[Field], names: dict[str, str], ind: int) -> None:
        if not tagged:
            self.emit(ind, "if buf[pos] == 0:")
            self.emit(ind + 1, "pos += 1")
            self.emit(ind, "else:")
            self.emit(ind + 1, "pos = _skip_tags(buf, pos, tmax)")
            return
        for f in tagged:
            self.emit(ind, f"{names[f.name]} = {self.default_src(f)}")
        count, tag, size, end = self.tmp("nt"), self.tmp("tg"), self.tmp("sz"), self.tmp("end")
        self.emit(ind, f"{count}, pos = _ruv(buf, pos)")
        self.emit(ind, f"if {count} > tmax: raise _ProtocolError('too many tagged fields')")
        self.emit(ind, f"for _ in range({count}):")
        self.emit(ind + 1, f"{tag}, pos = _ruv(buf, pos)")
        self.emit(ind + 1, f"{size}, pos = _ruv(buf, pos)")
        self.emit(ind + 1, f"{end} = pos + {size}")
        self.emit(ind + 1, f"if {end} > blen: raise _ProtocolError('truncated tagged field')")
        keyword = "if"
        for f in tagged:
            self.emit(ind + 1, f"{keyword} {tag} == {f.tag}:")
            self.dec_field(f, names[f.name], ind + 2)
            self.emit(ind + 2, f"if pos != {end}: raise _ProtocolError('tagged field {f.name}: size mismatch')")
            keyword = "elif"
        self.emit(ind + 1, "else:")
        self.emit(ind + 2, f"pos = {end}")

    # --- encoder -----------------------------------------------------------------------------

    def encoder(self, fields: Sequence[Field]) -> str:
        self.emit(0, "def encode(d, out, chunks=None):")
        self.emit(1, "ap = out.append")
        self.emit(1, "try:")
        self.enc_struct(fields, "d", "ap", 2)
        self.emit(2, "pass")
        self.emit(1, "except (_struct.error, TypeError, AttributeError, ValueError, OverflowError) as e:")
        where = f"{self.name} v{self.version}: cannot encode: "
        self.emit(2, f"raise _EncodeError({where!r} + type(e).__name__ + ': ' + str(e)[:200]) from e")
        return "\n".join(self.lines) + "\n"

    def get_src(self, f: Field, obj: str) -> str:
        """Source reading field `f` from dict `obj`, defaulting when the key is missing."""
        if f.default is not _UNSET:
            return f"{obj}.get({f.name!r}, {_literal(f.default)})"
        if f.is_array:
            return f"{obj}.get({f.name!r}, ())"
        if f.is_struct:
            return f"{obj}.get({f.name!r})"
        if f.type == "uuid":
            return f"{obj}.get({f.name!r})"
        return f"{obj}.get({f.name!r}, {_literal(_TYPE_DEFAULTS[f.type])})"

    def enc_struct(self, fields: Sequence[Field], obj: str, ap: str, ind: int) -> None:
        plain, tagged = self.present(fields)
        run: list[Field] = []
        for f in plain:
            if f.type in _FIXED:
                run.append(f)
                continue
            self.enc_fixed_run(run, obj, ap, ind)
            run = []
            var = self.tmp("v")
            self.emit(ind, f"{var} = {self.get_src(f, obj)}")
            self.enc_value(f, var, ap, ind)
        self.enc_fixed_run(run, obj, ap, ind)
        if self.flexible:
            self.enc_tags(tagged, obj, ap, ind)

    def enc_fixed_run(self, run: list[Field], obj: str, ap: str, ind: int) -> None:
        if not run:
            return
        fmt = "".join(_FIXED[f.type][0] for f in run)
        args = []
        for f in run:
            src = self.get_src(f, obj)
            args.append(f"_ub({src})" if f.type == "uuid" else src)
        self.emit(ind, f"{ap}({self.packer(fmt)}.pack({', '.join(args)}))")

    def enc_value(self, f: Field, var: str, ap: str, ind: int) -> None:
        """Emit code writing value `var` of field `f` (any type) through append function `ap`."""
        if f.is_array:
            self.enc_array(f, var, ap, ind)
        elif f.is_struct:
            self.emit(ind, f"if {var} is None: {var} = {self.const(f.default_value(), 'def')}")
            self.enc_struct(f.fields, var, ap, ind)
        elif f.type in _FIXED:
            fmt = _FIXED[f.type][0]
            arg = f"_ub({var})" if f.type == "uuid" else var
            self.emit(ind, f"{ap}({self.packer(fmt)}.pack({arg}))")
        elif f.type == "records":
            self.enc_records(var, self.nullable(f), ap, ind)
        else:
            c = "c" if self.flexible else ""
            n = "n" if self.nullable(f) else ""
            kind = "s" if f.type == "string" else "b"
            self.emit(ind, f"{ap}(_e{c}{n}{kind}({var}))")

    def enc_records(self, var: str, nullable: bool, ap: str, ind: int) -> None:
        """Length prefix, then the value itself (never copied by the encoder). In chunked mode
        (top level only) a value above codec.COALESCE_COPY_BYTES_MAX, or one that is not a
        bytes/memoryview, goes to `chunks` as is, after the pieces before it joined."""
        null = "b'\\x00'" if self.flexible else "b'\\xff\\xff\\xff\\xff'"
        self.emit(ind, f"if {var} is None:")
        if nullable:
            self.emit(ind + 1, f"{ap}({null})")
        else:
            self.emit(ind + 1, "raise _EncodeError('records may not be null in this version')")
        self.emit(ind, "else:")
        cls, size = self.tmp("cls"), self.tmp("size")
        ind += 1
        self.emit(ind, f"{cls} = {var}.__class__")
        self.emit(ind, f"if {cls} is bytes:")
        self.emit(ind + 1, f"{size} = len({var})")
        self.emit(ind, f"elif {cls} is memoryview:")
        self.emit(ind + 1, f"{size} = {var}.nbytes")
        self.emit(ind + 1, f"if {var}.itemsize != 1 or {var}.ndim != 1: {var} = {var}.cast('B')")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{size} = _rsize({var})")
        prefix = f"_euv({size} + 1)" if self.flexible else f"_p32({size})"
        self.emit(ind, f"{ap}({prefix})")
        self.emit(ind, f"if {size}:")
        if ap == "ap":
            self.emit(ind + 1, f"if chunks is not None and ({size} > _COPY_MAX or {cls} is not bytes "
                               f"and {cls} is not memoryview):")
            self.emit(ind + 2, "chunks.append(b''.join(out)); out.clear()")
            self.emit(ind + 2, f"if {cls} is bytes or {cls} is memoryview: chunks.append({var})")
            self.emit(ind + 2, f"else: _arec(chunks.append, {var})")
            self.emit(ind + 1, f"elif {cls} is bytes or {cls} is memoryview:")
        else:
            self.emit(ind + 1, f"if {cls} is bytes or {cls} is memoryview:")
        self.emit(ind + 2, f"{ap}({var})")
        self.emit(ind + 1, "else:")
        self.emit(ind + 2, f"_arec({ap}, {var})")

    def enc_array(self, f: Field, var: str, ap: str, ind: int) -> None:
        null = "b'\\x00'" if self.flexible else "b'\\xff\\xff\\xff\\xff'"
        self.emit(ind, f"if {var} is None:")
        if self.nullable(f):
            self.emit(ind + 1, f"{ap}({null})")
        else:
            self.emit(ind + 1, f"raise _EncodeError({'non-nullable array ' + f.name + ' is None'!r})")
        self.emit(ind, "else:")
        ind += 1
        length = f"_euv(len({var}) + 1)" if self.flexible else f"_p32(len({var}))"
        self.emit(ind, f"{ap}({length})")
        item = f.item_type
        if item in _FIXED and item != "uuid":
            ch = _FIXED[item][0]
            self.emit(ind, f"{ap}(_struct.pack('>%d{ch}' % len({var}), *{var}))")
            return
        elem = self.tmp("e")
        self.emit(ind, f"for {elem} in {var}:")
        if f.is_struct:
            self.enc_struct(f.fields, elem, ap, ind + 1)
        else:
            self.enc_value(Field(name=f.name, type=item, versions=f.versions), elem, ap, ind + 1)

    def enc_tags(self, tagged: list[Field], obj: str, ap: str, ind: int) -> None:
        if not tagged:
            self.emit(ind, f"{ap}(b'\\x00')")
            return
        names = [self.tmp("v") for _ in tagged]
        for f, var in zip(tagged, names):
            self.emit(ind, f"{var} = {self.get_src(f, obj)}")
        if all(f.is_struct and not f.is_array for f in tagged):  # the common case: nothing set
            self.emit(ind, f"if {' and '.join(f'{var} is None' for var in names)}:")
            self.emit(ind + 1, f"{ap}(b'\\x00')")
            self.emit(ind, "else:")
            ind += 1
        parts = self.tmp("tags")
        self.emit(ind, f"{parts} = []")
        for f, var in zip(tagged, names):
            self.emit(ind, f"if {self.non_default_test(f, var)}:")
            sub, sub_ap = self.tmp("sub"), self.tmp("sap")
            self.emit(ind + 1, f"{sub} = []; {sub_ap} = {sub}.append")
            self.enc_value(f, var, sub_ap, ind + 1)
            raw = self.tmp("raw")
            self.emit(ind + 1, f"{raw} = b''.join({sub})")
            self.emit(ind + 1, f"{parts}.append(_euv({f.tag}) + _euv(len({raw})) + {raw})")
        self.emit(ind, f"if {parts}:")
        self.emit(ind + 1, f"{ap}(_euv(len({parts})) + b''.join({parts}))")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{ap}(b'\\x00')")

    def non_default_test(self, f: Field, var: str) -> str:
        """Source of a test that is true when a tagged field must be written."""
        if f.is_array:
            return f"{var}" if f.default is _UNSET else f"{var} is not None and {var} != {_literal(f.default)}"
        if f.is_struct:
            return f"{var} is not None and {var} != {self.const(f.default_value(), 'def')}"
        if f.type == "uuid":
            return f"{var} is not None and {var} != _ZERO_UUID and {var} != bytes(16)"
        default = f.default if f.default is not _UNSET else _TYPE_DEFAULTS[f.type]
        if default is None:
            return f"{var} is not None"
        return f"{var} != {_literal(default)}"
