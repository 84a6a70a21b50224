"""
Reading an INI text into its sections, as C{configparser.ConfigParser}
reads it with the configuration file's settings (no interpolation, strict,
no default section; C{=} or C{:} between an option and its value; C{#} and
C{;} comment lines; indented continuation lines; option names in lower
case), without the per-line and per-option machinery that made reading
ten thousand sections take a second.

It raises the errors C{ConfigParser} raises for the same text:
C{configparser.DuplicateSectionError}, C{DuplicateOptionError},
C{MissingSectionHeaderError} at once, C{ParsingError} with every line
that could not be parsed at the end.  C{tests.test_inireader} checks it
against C{ConfigParser} on generated texts.
"""

from __future__ import annotations

import configparser
import functools
import io
import os
from typing import Any

#: The section that would hold defaults for every other: a name no file
#: holds in practice, as the configuration file has no defaults section.
DEFAULT_SECTION = "\0no-defaults"

_SECTION = configparser.ConfigParser.SECTCRE
_SOURCE = "<string>"


def readINI(text: str) -> dict[str, dict[str, str]]:
    """
    The sections of C{text} in the order they first appear, each with its
    options in order, each value stripped, continuation lines joined with
    a newline.

    @raise configparser.Error: as C{ConfigParser.read_string} would.
    """
    sections: dict[str, dict[str, Any]] = {}
    defaults: dict[str, Any] = {}
    # Each value is its one line's text, or the list of its lines once it
    # has more (these are in continued, and joined at the end).
    continued: list[tuple[dict[str, Any], str]] = []
    current: dict[str, Any] | None = None
    sectionName = ""
    optionName: str | None = None
    indent = 0
    blanks = 0
    error: configparser.ParsingError | None = None
    for number, line in enumerate(io.StringIO(text), start=1):
        value = line.strip()
        if not value or value[0] in "#;":
            # An empty line is part of a value that goes on (a comment is
            # not): counted, and added if a continuation line follows (at
            # the end of a value, the final strip would remove it).
            if not value and current is not None and optionName:
                blanks += 1
            continue
        # The indentation as ConfigParser measures it (to the first
        # character that C{re}'s C{\\S} matches: the same as C{str.isspace}):
        # none when the line begins with its first non-space character.
        lineIndent = 0 if line[0] == value[0] else len(line) - len(line.lstrip())
        if lineIndent > indent and current is not None and optionName:
            _continue(current, optionName, [""] * blanks + [value], continued)
            blanks = 0
            continue
        indent = lineIndent
        blanks = 0
        header = _SECTION.match(value) if value[0] == "[" else None
        if header is not None:
            sectionName = header.group("header")
            if sectionName in sections:
                raise configparser.DuplicateSectionError(sectionName, _SOURCE, number)
            if sectionName == DEFAULT_SECTION:
                current = defaults
            else:
                current = sections[sectionName] = {}
            optionName = None
            continue
        if current is None:
            raise configparser.MissingSectionHeaderError(_SOURCE, number, line)
        # ConfigParser's OPTCRE: the name before the first delimiter (C{=}
        # or C{:}), then the value after it, both stripped.
        delimiter, colon = value.find("="), value.find(":")
        if delimiter < 0 or 0 <= colon < delimiter:
            delimiter = colon
        if delimiter < 0:
            error = _parsingError(error, number, line)
            continue
        optionName = value[:delimiter].rstrip().lower()
        if not optionName:
            error = _parsingError(error, number, line)
        # A section is read once (the defaults section may be read again,
        # into the same dictionary): an option seen is one in it.
        if optionName in current:
            raise configparser.DuplicateOptionError(sectionName, optionName, _SOURCE, number)
        current[optionName] = value[delimiter + 1 :].strip()
    if error is not None:
        raise error
    for options, name in continued:
        options[name] = "\n".join(options[name]).rstrip()
    if defaults:
        # What a defaults section holds applies to every section that
        # does not set it, after the options it sets, as in ConfigParser.
        for section, options in sections.items():
            sections[section] = options | {
                name: value for name, value in defaults.items() if name not in options
            }
    return sections


def _continue(
    options: dict[str, Any],
    name: str,
    lines: list[str],
    continued: list[tuple[dict[str, Any], str]],
) -> None:
    """
    Add C{lines} to the value of option C{name} in C{options}.
    """
    value = options[name]
    if isinstance(value, str):
        value = options[name] = [value]
        continued.append((options, name))
    value.extend(lines)


def _parsingError(
    error: configparser.ParsingError | None, number: int, line: str
) -> configparser.ParsingError:
    """
    C{error}, or a new C{ParsingError}, with line C{number} added.
    """
    if error is None:
        error = configparser.ParsingError(_SOURCE)
    error.append(number, repr(line))
    return error


def resolvePath(base: str, path: str) -> str:
    """
    The path C{path} of the file, C{~} expanded, relative to the folder
    C{base}.  A path without C{~} is resolved once for all the sections
    that name it (10,000 services may serve one folder).
    """
    if path.startswith("~"):
        return os.path.normpath(os.path.join(base, os.path.expanduser(path)))
    return _joined(base, path)


@functools.lru_cache(maxsize=1024)
def _joined(base: str, path: str) -> str:
    """
    C{path} relative to the folder C{base}, normalised.
    """
    return os.path.normpath(os.path.join(base, path))
