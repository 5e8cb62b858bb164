"""Read rule and policy files and folders from disk and hand their text to the pure loaders.

A file that cannot be read is reported like any other problem (file:1:1) and the other files still
load. Folders are searched recursively for *.yaml and *.yml, in sorted order, so results are stable.
Hidden names below a folder are skipped: a mounted ConfigMap keeps a second copy of each file in
`..data/` and `..<timestamp>/`, which must not load as rules of the same name twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from agent.core.catalog import Catalog
from agent.core.diagnostics import Location, Problem
from agent.core.loader import LoadResult, parse_rules
from agent.core.policy import PolicyLoadResult, parse_policies, parse_policy_file

YAML_SUFFIXES = (".yaml", ".yml")


def expand_paths(paths: Iterable[Path]) -> Iterator[Path]:
    """Files as given, and the YAML files below each folder."""
    for path in paths:
        if path.is_dir():
            yield from sorted(
                found
                for found in path.rglob("*")
                if found.suffix in YAML_SUFFIXES
                and found.is_file()
                and not any(part.startswith(".") for part in found.relative_to(path).parts)
            )
        else:
            yield path


def _read(path: Path) -> str | Problem:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        return Problem(
            location=Location(file=str(path), line=1, column=1),
            rule="",
            field="",
            message=f"cannot read the file: {reason}",
        )


def load_rule_paths(paths: Iterable[Path], *, catalog: Catalog) -> Iterator[LoadResult]:
    """One LoadResult per file; merge them with agent.core.loader.merge_results."""
    for path in expand_paths(paths):
        text = _read(path)
        if isinstance(text, Problem):
            yield LoadResult(rules=(), problems=(text,))
            continue
        yield parse_rules(text, file=str(path), catalog=catalog)


def load_paths(paths: Iterable[Path], *, catalog: Catalog) -> Iterator[tuple[LoadResult, PolicyLoadResult]]:
    """Rules and policies, by kind, of each file (for `lint`); an unreadable file is a rule problem."""
    for path in expand_paths(paths):
        text = _read(path)
        if isinstance(text, Problem):
            yield LoadResult(rules=(), problems=(text,)), PolicyLoadResult(policies=(), problems=())
            continue
        yield parse_rules(text, file=str(path), catalog=catalog), parse_policies(text, file=str(path), catalog=catalog)


def load_policy_file(path: Path, *, catalog: Catalog) -> PolicyLoadResult:
    """The one policy of a `--policy` file, or the problems that keep it from being used."""
    text = _read(path)
    if isinstance(text, Problem):
        return PolicyLoadResult(policies=(), problems=(text,))
    return parse_policy_file(text, file=str(path), catalog=catalog)
