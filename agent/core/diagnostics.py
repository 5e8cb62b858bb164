"""Problems found in rule and policy files, each pinned to file:line:column, rule name and field path.

Loaders collect every problem instead of stopping at the first, so an author sees all of them at once,
and a bad rule never hides the good ones next to it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, kw_only=True)
class Location:
    """A place in a source file; line and column are 1-based, as editors show them."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, kw_only=True)
class Problem:
    location: Location
    rule: str
    field: str
    message: str
    severity: Severity = Severity.ERROR

    def __str__(self) -> str:
        rule = self.rule or "-"
        field = self.field or "-"
        prefix = "" if self.severity is Severity.ERROR else f"{self.severity}: "
        return f"{self.location}: {rule}: {field}: {prefix}{self.message}"


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """A ' (did you mean "x"?)' suffix when a close candidate exists, else ''."""
    by_folded = {candidate.lower(): candidate for candidate in candidates}
    close = difflib.get_close_matches(word.lower(), list(by_folded), n=1, cutoff=0.6)
    return f' (did you mean "{by_folded[close[0]]}"?)' if close else ""
