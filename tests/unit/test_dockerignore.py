""".dockerignore patterns as Docker reads and matches them."""

from __future__ import annotations

import pytest

from cocin.dockerignore import Matcher, read
from cocin.state import CocinError


def test_read_cleans_and_skips():
    text = "\ufeff# comment\n  *.tmp  \n\n/abs/path\n./a//b/\n! keep.tmp\n #not a comment\n"
    assert read(text) == ["*.tmp", "abs/path", "a/b", "!keep.tmp", "#not a comment"]


@pytest.mark.parametrize(
    "patterns,path,excluded",
    [
        (["*.md"], "README.md", True),
        (["*.md"], "docs/README.md", False),  # * does not cross /
        (["*/*.md"], "docs/README.md", True),
        (["**/*.md"], "docs/a/README.md", True),
        (["**/*.md"], "README.md", True),  # ** also matches no directory
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
        (["a/**"], "a/x/y", True),
        (["build"], "build/out/bin", True),  # a directory excludes what is below it
        (["build"], "src/build", False),
        (["?.txt"], "a.txt", True),
        (["?.txt"], "ab.txt", False),
        (["[a-c].txt"], "b.txt", True),
        (["[!a-c].txt"], "b.txt", False),
        (["[!a-c].txt"], "d.txt", True),
        (["\\*.txt"], "*.txt", True),
        (["\\*.txt"], "a.txt", False),
        (["*.tmp", "!keep.tmp"], "keep.tmp", False),
        (["*.tmp", "!keep.tmp"], "other.tmp", True),
        (["!keep.tmp", "*.tmp"], "keep.tmp", True),  # the last match decides
        (["docs", "!docs/keep.md"], "docs/keep.md", False),
        (["docs", "!docs/keep.md"], "docs/other.md", True),
        ([".*"], ".git", True),
        ([".*"], ".git/config", True),
        (["a.b"], "axb", False),  # . is literal
        (["$x"], "$x", True),
    ],
)
def test_matches(patterns, path, excluded):
    assert Matcher(read("\n".join(patterns))).excluded(path) is excluded


def test_exceptions_inside_excluded_directory():
    m = Matcher(["docs", "!docs/keep.md"])
    assert m.has_exceptions and m.may_hold_exceptions("docs")
    assert not m.may_hold_exceptions("other")
    assert not Matcher(["docs"]).may_hold_exceptions("docs")


def test_bad_patterns():
    with pytest.raises(CocinError, match="illegal exclusion pattern"):
        Matcher(["!"])
    with pytest.raises(CocinError, match="missing"):
        Matcher(["[abc"])
