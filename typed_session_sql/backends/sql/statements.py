"""The backend's statements: built once from the table, compiled once for the engine.

Every operation is one of these statements. Each is a `CompiledStatement`: the SQLAlchemy
Core statement (what the SQLAlchemy executor runs), the same statement compiled to the
driver's SQL with its parameters in order (what a driver executor runs), and the
conversions both need, taken from the column types through SQLAlchemy's public bind and
result processors (so an `EpochMicros` timestamp is converted the same way
on every executor).

Queries select their columns untyped, so every executor returns rows as the database sent
them and `CompiledStatement.decode` converts them, one row at a time: a row that cannot be
converted (a timestamp out of range) fails alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Dialect,
    Executable,
    Integer,
    Table,
    bindparam,
    delete,
    false,
    insert,
    literal_column,
    select,
    type_coerce,
    update,
)
from sqlalchemy.types import NullType

from typed_session_sql.backends.sql.dialects import DialectSupport

__all__ = [
    "CompiledStatement",
    "Prepared",
    "Revoke",
    "Statements",
    "build_statements",
]

Revoke = Literal["all", "one", "others"]
_Processor = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """One statement, ready for any executor."""

    name: str
    """What it does (``select``, ``update``, ...), for logs."""
    clause: Executable
    """The Core statement, with named parameters."""
    sql: str
    """The statement as the driver takes it, positional parameters."""
    arguments_order: tuple[str | None, ...]
    """The caller's parameter name for each positional parameter; None for a constant the
    dialect rendered as a parameter (SQLite's ``OFFSET ?``)."""
    constants: tuple[object, ...]
    """Each positional parameter's fixed value, where ``arguments_order`` has None."""
    binders: tuple[_Processor | None, ...]
    """Each positional parameter's conversion to what the driver takes."""
    returns_rows: bool
    """Whether this is a query (rows back) rather than a write (a row count back)."""
    readers: tuple[tuple[int, _Processor], ...]
    """(position, conversion) of each selected column whose value the driver returns needs
    converting (queries only)."""

    arguments: Callable[[Mapping[str, object]], list[object]] = field(
        init=False, repr=False, compare=False
    )
    """The driver's positional arguments for ``params`` (converted): ``arguments(params)``."""
    decode: Callable[[Sequence[Any]], list[Any]] = field(init=False, repr=False, compare=False)
    """One row of this query, converted: ``decode(row)``. Raises what a conversion raises
    (say, `OverflowError` for a timestamp out of range)."""

    def __post_init__(self) -> None:
        # Every statement run converts its arguments, every row read its columns: each is
        # a function made once for this statement (as dataclasses makes an __init__),
        # with the parameter names, constants and conversions written into it, instead of
        # a loop zipping them together again on every call.
        set_field = object.__setattr__  # frozen
        set_field(self, "arguments", _arguments_function(self))
        set_field(self, "decode", _decode_function(self.readers))


def _arguments_function(
    statement: CompiledStatement,
) -> Callable[[Mapping[str, object]], list[object]]:
    names: dict[str, object] = {}
    items = []
    for index, (name, constant, binder) in enumerate(
        zip(statement.arguments_order, statement.constants, statement.binders, strict=True)
    ):
        if name is None:
            names[f"c{index}"] = constant
            value = f"c{index}"
        else:
            value = f"params[{name!r}]"
        if binder is not None:
            names[f"b{index}"] = binder
            value = f"b{index}({value})"
        items.append(value)
    return _made("arguments", "params", f"[{', '.join(items)}]", names)


def _decode_function(
    readers: tuple[tuple[int, _Processor], ...],
) -> Callable[[Sequence[Any]], list[Any]]:
    names: dict[str, object] = {}
    lines = ["values = list(row)"]
    for position, reader in readers:
        names[f"r{position}"] = reader
        lines.append(f"values[{position}] = r{position}(values[{position}])")
    return _made("decode", "row", "values", names, lines)


def _made(
    name: str, parameter: str, result: str, names: dict[str, object], lines: Sequence[str] = ()
) -> Callable[[Any], Any]:
    """A function ``name(parameter)`` running ``lines`` and returning ``result``, with
    ``names`` (the statement's constants and conversions) as its globals. Only names and
    positions the library chose are written into its source; values go in ``names``."""
    body = "".join(f"    {line}\n" for line in [*lines, f"return {result}"])
    namespace: dict[str, Any] = {}
    exec(f"def {name}({parameter}):\n{body}", dict(names), namespace)  # noqa: S102
    function: Callable[[Any], Any] = namespace[name]
    return function


# The name until issue 18 (A11), kept for code written against it: "prepared" read as a
# server-side prepared statement, which these are not (nor are they named on the server).
Prepared = CompiledStatement


@dataclass(frozen=True, slots=True)
class Statements:
    """Every statement the backend runs, built by `build_statements`."""

    insert: CompiledStatement
    select: CompiledStatement
    update: Mapping[tuple[bool, bool], CompiledStatement]
    """By (moving the row to a new id, signing in)."""
    touch: CompiledStatement
    delete: CompiledStatement
    list_by_principal: CompiledStatement
    revoke: Mapping[Revoke, CompiledStatement]
    purge: CompiledStatement
    clear: CompiledStatement
    insert_ignores_conflict: bool
    """Whether ``insert`` skips a taken id (ON CONFLICT DO NOTHING) instead of failing."""


def build_statements(
    table: Table,
    dialect: Dialect,
    support: DialectSupport,
    schema_translate_map: Mapping[str | None, str] | None = None,
) -> Statements:
    """The statements for ``table``, compiled for ``dialect`` (with the engine's
    ``schema_translate_map``, if it has one), spelled as ``support`` (its dialect's module
    in `.dialects`) says where dialects differ.

    Parameters: ``row_id``, ``new_row_id``, ``payload``, ``expiry``, ``created``,
    ``row_version``, ``signed_in_as``, ``signed_in_at``, ``pinned``, ``now``,
    ``created_after``, ``max_rows``.
    """
    c = table.c
    bytes_parameter = support.bytes_parameter

    def arg(name: str, column: ColumnElement[Any]) -> Any:
        stored = column.type.dialect_impl(dialect)
        stored = getattr(stored, "impl_instance", stored)  # a TypeDecorator's column type
        if bytes_parameter is not None and stored.python_type is bytes:
            return bindparam(name, type_=bytes_parameter)  # the key, the data, the principal
        return bindparam(name, type_=column.type)

    # A driver executor passes arguments by position: a dialect that names its parameters
    # (psycopg's pyformat) is compiled by its own class in its positional style, which its
    # constructor takes as create_engine's `paramstyle` does.
    dialect_class: Any = type(dialect)
    positional = dialect if dialect.positional else dialect_class(paramstyle="format")

    def prepare(
        name: str, clause: Any, columns: Sequence[ColumnElement[Any]] = ()
    ) -> CompiledStatement:
        compiled = clause.compile(
            dialect=positional,
            schema_translate_map=schema_translate_map,
            render_schema_translate=bool(schema_translate_map),
        )
        order: list[str | None] = []
        constants: list[object] = []
        binders: list[_Processor | None] = []
        for position in compiled.positiontup or ():
            bind = compiled.binds[position]
            order.append(bind.key if bind.required else None)
            constants.append(None if bind.required else bind.value)
            binders.append(bind.type.dialect_impl(dialect).bind_processor(dialect))
        readers = tuple(
            (position, reader)
            for position, column in enumerate(columns)
            if (reader := column.type.dialect_impl(dialect).result_processor(dialect, None))
        )
        return CompiledStatement(
            name,
            clause,
            str(compiled),
            tuple(order),
            tuple(constants),
            tuple(binders),
            returns_rows=bool(columns),
            readers=readers,
        )

    def query(
        name: str, *columns: ColumnElement[Any], where: Any, newest: bool = False
    ) -> CompiledStatement:
        # Untyped columns: every executor hands back the values as stored.
        untyped = [type_coerce(column, NullType()).label(column.key) for column in columns]
        selecting = select(*untyped).where(where)
        if newest:  # newest first, at most max_rows
            selecting = selecting.order_by(c.created_at.desc(), c.id_hash.desc()).limit(
                bindparam("max_rows", type_=Integer)
            )
        return prepare(name, selecting, columns)

    row = c.id_hash == arg("row_id", c.id_hash)
    values = {
        "id_hash": arg("row_id", c.id_hash),
        "data": arg("payload", c.data),
        "expires_at": arg("expiry", c.expires_at),
        "created_at": arg("created", c.created_at),
        "version": arg("row_version", c.version),
        "principal": arg("signed_in_as", c.principal),
        "authenticated_at": arg("signed_in_at", c.authenticated_at),
        "expiry_pinned": arg("pinned", c.expiry_pinned),
    }
    ignoring_conflict = support.insert_ignoring_conflict
    inserting: Any = (
        insert(table).values(values)  # a taken id surfaces as a unique violation instead
        if ignoring_conflict is None
        else ignoring_conflict(table, values)
    )

    guard = row & (c.version == arg("row_version", c.version))
    changes = {
        "data": arg("payload", c.data),
        "expires_at": arg("expiry", c.expires_at),
        "expiry_pinned": arg("pinned", c.expiry_pinned),
        "version": c.version + literal_column("1"),
    }
    moving = {"id_hash": arg("new_row_id", c.id_hash)}
    signing_in = {
        "principal": arg("signed_in_as", c.principal),
        "authenticated_at": arg("signed_in_at", c.authenticated_at),
    }
    updates = {
        (move, sign): prepare(
            "update",
            update(table)
            .where(guard)
            .values({**changes, **(moving if move else {}), **(signing_in if sign else {})}),
        )
        for move in (False, True)
        for sign in (False, True)
    }

    now = arg("now", c.expires_at)
    of_principal = c.principal == arg("signed_in_as", c.principal)
    listing = query(
        "list_by_principal",
        c.id_hash,
        c.created_at,
        c.expires_at,
        c.authenticated_at,
        where=of_principal
        & (c.expires_at.is_(None) | (c.expires_at > now))
        & (c.created_at > arg("created_after", c.created_at)),
        newest=True,
    )

    victims = (
        select(c.id_hash).where(c.expires_at <= now).limit(bindparam("max_rows", type_=Integer))
    )
    purging = support.purge_batch(table, victims)

    return Statements(
        insert=prepare("insert", inserting),
        select=query(
            "select",
            c.data,
            c.version,
            c.created_at,
            c.expires_at,
            c.principal,
            c.authenticated_at,
            c.expiry_pinned,
            where=row,
        ),
        update=updates,
        touch=prepare(
            "touch",
            update(table)
            .where(
                guard
                & (c.expiry_pinned == false())
                & (c.expires_at > now)
                & (c.expires_at < arg("expiry", c.expires_at))
            )
            .values(expires_at=arg("expiry", c.expires_at)),
        ),
        delete=prepare("delete", delete(table).where(row)),
        list_by_principal=listing,
        revoke={
            "all": prepare("revoke", delete(table).where(of_principal)),
            "one": prepare("revoke", delete(table).where(of_principal & row)),
            "others": prepare(
                "revoke",
                delete(table).where(of_principal & (c.id_hash != arg("row_id", c.id_hash))),
            ),
        },
        purge=prepare("purge", purging),
        clear=prepare("clear", delete(table)),
        insert_ignores_conflict=ignoring_conflict is not None,
    )
