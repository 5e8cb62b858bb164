"""A read-only view of composed YAML that remembers where every value came from.

PyYAML's plain loaders throw away positions; rule validation needs file:line:column for every field,
so loaders walk the composed node tree through this view instead. Parsing text into nodes is the
caller's business (the core does no I/O); this module only reads nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import yaml

from agent.core.diagnostics import Location

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

Scalar = str | int | float | bool | None


@dataclass(frozen=True, kw_only=True)
class View:
    """One YAML node plus the file it came from and its path from the document root."""

    node: yaml.Node
    file: str
    path: str

    @property
    def location(self) -> Location:
        mark = self.node.start_mark
        return Location(file=self.file, line=mark.line + 1, column=mark.column + 1)

    @property
    def kind(self) -> str:
        """'mapping', 'sequence', 'string', 'number', 'boolean' or 'null': for error messages."""
        if isinstance(self.node, yaml.MappingNode):
            return "mapping"
        if isinstance(self.node, yaml.SequenceNode):
            return "sequence"
        return {
            _INT: "number",
            _FLOAT: "number",
            _BOOL: "boolean",
            _NULL: "null",
        }.get(self.node.tag, "string")

    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def is_sequence(self) -> bool:
        return isinstance(self.node, yaml.SequenceNode)

    def is_scalar(self) -> bool:
        return isinstance(self.node, yaml.ScalarNode)

    def _child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def items(self) -> Iterator[tuple[str, View, View]]:
        """(key, key view, value view) for a mapping; keys are shown as their text."""
        assert isinstance(self.node, yaml.MappingNode)
        for key_node, value_node in self.node.value:
            key = str(key_node.value)
            yield (
                key,
                View(node=key_node, file=self.file, path=self._child_path(key)),
                View(node=value_node, file=self.file, path=self._child_path(key)),
            )

    def get(self, key: str) -> View | None:
        if not self.is_mapping():
            return None
        for name, _, value in self.items():
            if name == key:
                return value
        return None

    def elements(self) -> Iterator[View]:
        assert isinstance(self.node, yaml.SequenceNode)
        for index, child in enumerate(self.node.value):
            yield View(node=child, file=self.file, path=self._child_path(index))

    def scalar(self) -> Scalar:
        """The scalar's value with YAML 1.1 core types resolved as PyYAML's SafeLoader would."""
        assert isinstance(self.node, yaml.ScalarNode)
        constructor = yaml.SafeLoader.__new__(yaml.SafeLoader)
        value: Scalar = yaml.SafeLoader.construct_scalar(constructor, self.node)
        tag = self.node.tag
        if tag == _INT:
            return int(yaml.SafeLoader.construct_yaml_int(constructor, self.node))
        if tag == _FLOAT:
            return float(yaml.SafeLoader.construct_yaml_float(constructor, self.node))
        if tag == _BOOL:
            return bool(yaml.SafeLoader.construct_yaml_bool(constructor, self.node))
        if tag == _NULL:
            return None
        return value

    def text(self) -> str:
        """The scalar exactly as written (numbers and booleans included), for string-typed fields."""
        assert isinstance(self.node, yaml.ScalarNode)
        return str(self.node.value)

    def to_python(self) -> object:
        """Plain Python data for this subtree (positions dropped)."""
        if self.is_mapping():
            return {key: value.to_python() for key, _, value in self.items()}
        if self.is_sequence():
            return [element.to_python() for element in self.elements()]
        return self.scalar()


class YamlSyntaxError(ValueError):
    """The text is not YAML; carries the position PyYAML reported."""

    def __init__(self, *, location: Location, message: str) -> None:
        super().__init__(f"{location}: {message}")
        self.location = location
        self.message = message


@dataclass(frozen=True, kw_only=True)
class Documents:
    """The documents read before the end of the text, or before a syntax error (then `error` is set)."""

    views: tuple[View, ...]
    error: YamlSyntaxError | None = None


def compose_documents(text: str, *, file: str) -> Documents:
    """Every non-empty document of a (possibly multi-document) YAML text, as views.

    Documents are read one at a time, so a syntax error in a later document keeps the earlier ones.
    """
    views: list[View] = []
    try:
        for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL and node.value == ""):
                continue
            views.append(View(node=node, file=file, path=""))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        message = " ".join(part for part in (error.context, error.problem) if part) or str(error)
        location = Location(file=file, line=line, column=column)
        return Documents(
            views=tuple(views), error=YamlSyntaxError(location=location, message=f"invalid YAML: {message}")
        )
    except yaml.YAMLError as error:
        location = Location(file=file, line=1, column=1)
        return Documents(views=tuple(views), error=YamlSyntaxError(location=location, message=f"invalid YAML: {error}"))
    return Documents(views=tuple(views))
