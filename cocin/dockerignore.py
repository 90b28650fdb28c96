""".dockerignore: which files of the build context the builder gets to see.

``docker build DIR`` sends the context, the whole directory, to the builder;
``DIR/.dockerignore`` leaves files out, to keep secrets and big build
outputs away from ``COPY . .`` (and out of the cache key). Docker's rules
(moby's ``dockerignore`` and ``fileutils.PatternMatcher``):

* one pattern a line; a line starting with ``#`` is a comment; blanks are
  trimmed, empty lines skipped; a pattern is cleaned like a path
  (``./a//b/`` is ``a/b``) and a leading ``/`` dropped: patterns are
  always relative to the context's root;
* Go's ``filepath.Match`` syntax: ``*`` any run of characters but ``/``,
  ``?`` one such character, ``[a-z]`` a class, ``\\`` escapes; plus ``**``,
  any number of directories (``**/*.go``, ``a/**/b``);
* a pattern matching a directory excludes everything below it (a pattern is
  also tried against each path's leading directories);
* ``!pattern`` is an exception: it takes back what earlier patterns
  excluded. The **last** pattern that matches a path decides;
* the Dockerfile and ``.dockerignore`` themselves are always read by the
  builder, but ``COPY`` does not see them when they are excluded.
"""

from __future__ import annotations

import posixpath
import re

from .state import CocinError


def read(text: str) -> list[str]:
    """The patterns of a .dockerignore file's text."""
    out = []
    for i, line in enumerate(text.split("\n")):
        if i == 0 and line.startswith("\ufeff"):
            line = line[1:]
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if pattern.startswith("//"):
                pattern = "/" + pattern.lstrip("/")
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


def _regex(pattern: str) -> re.Pattern:
    """Go's filepath.Match plus ``**`` as a regular expression (moby's compile)."""
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        i += 1
        if ch == "*":
            if i < n and pattern[i] == "*":
                i += 1
                if i < n and pattern[i] == "/":
                    i += 1
                out.append(".*" if i >= n else "(.*/)?")
            else:
                out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[":
            j = pattern.find("]", i + 1 if i < n and pattern[i] in "!^" else i)
            if j < 0:
                raise CocinError(f"syntax error in pattern {pattern!r}: missing ']'")
            body = pattern[i:j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = j + 1
        elif ch == "\\":
            if i < n:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append("\\\\")
        else:
            out.append(re.escape(ch))
    out.append("$")
    try:
        return re.compile("".join(out), re.S)
    except re.error as e:
        raise CocinError(f"syntax error in pattern {pattern!r}: {e}") from None


class Matcher:
    """The compiled patterns; ``excluded(path)`` says whether a context path is left out."""

    def __init__(self, patterns: list[str]):
        self.rules: list[tuple[bool, str, int, re.Pattern]] = []
        for p in patterns:
            negative = p.startswith("!")
            if negative:
                p = p[1:]
                if not p:
                    raise CocinError('illegal exclusion pattern: "!"')
            p = posixpath.normpath(p) if p else p
            self.rules.append((negative, p, len(p.split("/")), _regex(p)))

    @property
    def has_exceptions(self) -> bool:
        return any(neg for neg, _p, _d, _r in self.rules)

    def excluded(self, path: str) -> bool:
        """``path``: relative to the context, ``/``-separated."""
        path = posixpath.normpath(path)
        parent = posixpath.dirname(path) or "."
        parent_dirs = parent.split("/")
        matched = False
        for negative, _p, depth, rx in self.rules:
            hit = bool(rx.match(path))
            if not hit and parent != "." and depth <= len(parent_dirs):
                hit = bool(rx.match("/".join(parent_dirs[:depth])))
            if hit:
                matched = not negative
        return matched

    def may_hold_exceptions(self, directory: str) -> bool:
        """Whether an exception pattern could take back something below the
        excluded ``directory`` (otherwise the walk skips it whole)."""
        prefix = directory.rstrip("/") + "/"
        for negative, p, _d, _r in self.rules:
            if negative and (p + "/").startswith(prefix):
                return True
            if negative and any(c in p for c in "*?[\\"):
                return True  # a wildcard exception: look inside to be sure
        return False
