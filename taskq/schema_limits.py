"""What a client JSON Schema may be, checked when it is accepted.

On every call, before anything is cached: its size, depth and keyword count, and that
every ref is local (`#…`). Once per distinct schema (`accept`, cached): that it is
valid draft 2020-12 and one resource (`$id` and `$schema` at the root only, so every
descend stays on taskq's validator); that every ref resolves to a subschema of it;
that its size with every ref inlined stays under `MAX_SCHEMA_EXPANSION`, so refs
cannot turn a small document into exponential work; and that its patterns compile
on RE2 within `MAX_PATTERN_PROGRAM`. What evaluating it may cost is bounded by
schema_budget. Every refusal is a SchemaRefused (422).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from . import errors
from .schema_budget import Validator, compile_pattern

MAX_SCHEMA_BYTES = 64 * 1024  # a client schema, serialised as JSON
MAX_SCHEMA_DEPTH = 32  # nesting of objects and arrays in a client schema
MAX_SCHEMA_KEYWORDS = 4096  # object keys in a client schema, all levels together
# Keywords of the schema with every ref replaced by a copy of what it points at (a
# ref back into its own chain, a recursive schema, counts once): what one
# evaluation at one place in the instance may visit.
MAX_SCHEMA_EXPANSION = 100_000
MAX_PATTERN_CHARS = 1024
MAX_PATTERN_PROGRAM = 100_000  # RE2 instructions of all the schema's patterns together
REF_KEYWORDS = ("$ref", "$dynamicRef")


@dataclass(frozen=True)
class Accepted:
    """A schema taskq will evaluate: its validator and its patterns, compiled."""

    validator: Any
    regexes: dict[str, Any]


def canonical(schema: Any, field: str) -> str:
    """The schema as canonical JSON, once its document is within the limits."""
    text = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    if len(text) > MAX_SCHEMA_BYTES:
        raise errors.SchemaRefused(
            f"{field}: schema is {len(text)} bytes, more than the {MAX_SCHEMA_BYTES} allowed", {"field": field}
        )
    _walk(schema, field)
    return text


def _walk(schema: Any, field: str) -> None:
    """One pass over the document: depth, keyword count, refs and pattern lengths."""
    count = 0
    stack: list[tuple[Any, int, str]] = [(schema, 0, "")]
    while stack:
        node, depth, parent_key = stack.pop()
        if depth > MAX_SCHEMA_DEPTH:
            raise errors.SchemaRefused(f"{field}: schema nests deeper than {MAX_SCHEMA_DEPTH} levels", {"field": field})
        if isinstance(node, list):
            stack.extend((item, depth + 1, "") for item in node)
            continue
        if not isinstance(node, dict):
            continue
        count += len(node)
        if count > MAX_SCHEMA_KEYWORDS:
            raise errors.SchemaRefused(
                f"{field}: schema has more than {MAX_SCHEMA_KEYWORDS} keywords", {"field": field}
            )
        # Under `properties` (and friends) keys are names, not keywords.
        naming = parent_key in ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
        for key, value in node.items():
            if not naming:
                _check_keyword(key, value, field)
            if naming and parent_key == "patternProperties":
                _check_pattern_length(key, field)
            stack.append((value, depth + 1, "" if naming else key))


def _check_keyword(key: str, value: Any, field: str) -> None:
    if key in REF_KEYWORDS and isinstance(value, str) and not value.startswith("#"):
        raise errors.SchemaRefused(
            f"{field}: {key} {value!r} is not allowed: only local '#/…' refs", {"field": field, "ref": value}
        )
    if key == "pattern" and isinstance(value, str):
        _check_pattern_length(value, field)


def _check_pattern_length(pattern: str, field: str) -> None:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise errors.SchemaRefused(f"{field}: pattern longer than {MAX_PATTERN_CHARS} characters", {"field": field})


@functools.lru_cache(maxsize=256)
def accept(text: str) -> Accepted:
    """The schema in `text` (from `canonical`), ready to evaluate. Raises
    jsonschema's SchemaError for an invalid schema, SchemaRefused (naming no field)
    for one taskq will not evaluate."""
    schema = json.loads(text)
    Draft202012Validator.check_schema(schema)
    if isinstance(schema, dict):
        # Evaluated as 2020-12 whatever it declares: a `$schema` would make a descend
        # into the root (`$ref: "#"`) switch to jsonschema's own, unbudgeted class.
        schema.pop("$schema", None)
    resource = DRAFT202012.create_resource(schema)
    uri = resource.id() or ""
    # Crawled once here, so that a `#name` ref is a lookup, not a crawl of the whole
    # schema at every evaluation.
    registry = _REGISTRY.with_resource(uri, resource).crawl()
    graph = _graph(schema, registry.resolver(uri))
    size = _expanded_size(schema, graph)
    if size > MAX_SCHEMA_EXPANSION:
        raise errors.SchemaRefused(
            f"schema expands past {MAX_SCHEMA_EXPANSION:,} keywords with its refs inlined",
            {"limit": MAX_SCHEMA_EXPANSION},
        )
    return Accepted(Validator(schema, registry=registry), _compiled(graph.patterns))


@dataclass
class _Graph:
    """A schema as a graph: each subschema's edges are the subschemas evaluated in
    place (not `$defs`, which only refs reach) and the targets of its refs."""

    edges: dict[int, list[Any]] = dataclasses.field(default_factory=dict)
    patterns: set[str] = dataclasses.field(default_factory=set)


_DEFINITIONS = ("$defs", "definitions")


def _graph(root: Any, resolver: Any) -> _Graph:
    """Refuses a second resource (`$id` or `$schema` below the root) and a ref that
    does not resolve to a subschema."""
    graph = _Graph()
    refs: list[tuple[int, str, str]] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if node is not root and ("$id" in node or "$schema" in node):
            raise errors.SchemaRefused("$id and $schema are allowed only at the schema's root")
        if isinstance(node.get("pattern"), str):
            graph.patterns.add(node["pattern"])
        if isinstance(node.get("patternProperties"), dict):
            graph.patterns.update(node["patternProperties"])
        refs.extend((id(node), k, node[k]) for k in REF_KEYWORDS if isinstance(node.get(k), str))
        subschemas = list(DRAFT202012.subresources_of(node))
        stack.extend(subschemas)
        defined = {id(d) for k in _DEFINITIONS if isinstance(node.get(k), dict) for d in node[k].values()}
        graph.edges[id(node)] = [s for s in subschemas if id(s) not in defined]
    for node_id, keyword, ref in refs:
        graph.edges[node_id].append(_target(keyword, ref, resolver, graph.edges))
    return graph


def _target(keyword: str, ref: str, resolver: Any, subschemas: dict[int, list[Any]]) -> Any:
    try:
        target = resolver.lookup(ref).contents
    except Unresolvable:
        raise errors.SchemaRefused(f"{keyword} {ref!r} points at nothing in the schema", {"ref": ref}) from None
    if not isinstance(target, bool) and id(target) not in subschemas:
        raise errors.SchemaRefused(f"{keyword} {ref!r} points at something that is not a subschema", {"ref": ref})
    return target


_END = object()


def _expanded_size(root: Any, graph: _Graph) -> int:
    """Keywords of `root` with every ref inlined, up to just past MAX_SCHEMA_EXPANSION.

    A depth-first walk of the graph that remembers each node's size, so it is linear
    however much the refs multiply. A ref back to a node still being walked
    (recursion) counts once."""
    sizes: dict[int, int] = {}
    walking: set[int] = set()
    stack: list[tuple[Any, Iterator[Any], list[int]]] = []

    def enter(node: Any) -> None:
        walking.add(id(node))
        own = max(1, len(node)) if isinstance(node, dict) else 1
        stack.append((node, iter(graph.edges.get(id(node), ())), [own]))

    enter(root)
    while True:
        node, edges, size = stack[-1]
        child = next(edges, _END)
        if child is _END:
            stack.pop()
            walking.discard(id(node))
            sizes[id(node)] = size[0]
            if not stack:
                return size[0]
            stack[-1][2][0] += size[0]
        elif id(child) in sizes:
            size[0] += sizes[id(child)]
        elif id(child) in walking:
            size[0] += 1
        else:
            enter(child)
        if stack[-1][2][0] > MAX_SCHEMA_EXPANSION:
            return stack[-1][2][0]


def _compiled(patterns: set[str]) -> dict[str, Any]:
    regexes: dict[str, Any] = {}
    program = 0
    for pattern in sorted(patterns):
        try:
            regexes[pattern] = compiled = compile_pattern(pattern)
        except re2.error as exc:
            raise errors.SchemaRefused(
                f"pattern {pattern!r} is not supported (RE2 syntax, no lookaround or backreferences): {exc}",
                {"pattern": pattern},
            ) from None
        program += compiled.programsize
        if program > MAX_PATTERN_PROGRAM:
            raise errors.SchemaRefused(
                f"its patterns compile to more than {MAX_PATTERN_PROGRAM:,} RE2 instructions", {"pattern": pattern}
            )
    return regexes


def _no_retrieval(uri: str) -> Any:
    raise NoSuchResource(uri)


# No retriever that reaches anything: a non-local ref resolves to nothing.
_REGISTRY: Registry = Registry(retrieve=_no_retrieval)  # type: ignore[call-arg]
