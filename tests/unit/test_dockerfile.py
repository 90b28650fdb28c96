"""The Dockerfile parser and shell lexer, against Docker's documented behaviour
(the Dockerfile reference and buildkit's lexer cases)."""

from __future__ import annotations

import pytest

from cocin import dockerfile
from cocin.dockerfile import DockerfileError, LexError, expand, expand_words, parse

ENV = {"PWD": "/home", "SHELL": "bash", "EMPTY": "", "FOO": "foo bar", "A": "a"}


@pytest.mark.parametrize(
    "word,want",
    [
        ("hello", "hello"),
        ("he'll'o", "hello"),
        ("he\\'llo", "he'llo"),
        ("abc\\tdef", "abctdef"),
        ('"abc\\tdef"', "abc\\tdef"),
        ('"abc\\\\tdef"', "abc\\tdef"),
        ("'abc\\tdef'", "abc\\tdef"),
        ("hello\\", "hello"),
        ("hello\\\\", "hello\\"),
        ('"hel\'lo"', "hel'lo"),
        ("'hello\\'", "hello\\"),
        ("'hello\\there'", "hello\\there"),
        ("$PWD", "/home"),
        ("${PWD}", "/home"),
        ("x$PWD/y", "x/home/y"),
        ("\\$PWD", "$PWD"),
        ("'$PWD'", "$PWD"),
        ('"$PWD"', "/home"),
        ('"\\$PWD"', "$PWD"),
        ("$", "$"),
        ("a$", "a$"),
        ("$UNSET", ""),
        ("${UNSET}", ""),
        ("${PWD:-xxx}", "/home"),
        ("${UNSET:-xxx}", "xxx"),
        ("${EMPTY:-xxx}", "xxx"),
        ("${EMPTY-xxx}", ""),
        ("${UNSET-xxx}", "xxx"),
        ("${PWD:+xxx}", "xxx"),
        ("${EMPTY:+xxx}", ""),
        ("${EMPTY+xxx}", "xxx"),
        ("${UNSET+xxx}", ""),
        ("${UNSET:-$PWD}", "/home"),
        ("${UNSET:-${A}b}", "ab"),
        ("${UNSET:-'}'}", "}"),
        ("${PWD:?}", "/home"),
        ("$1", ""),
        ("$AB", ""),
        ("$A.b", "a.b"),
        ("${A}b", "ab"),
    ],
)
def test_lexer_words(word, want):
    assert expand(word, ENV) == want


@pytest.mark.parametrize(
    "word,error",
    [
        ("he'llo", "single-quote"),
        ("he\\\\'llo", "single-quote"),
        ('"hello', "double-quote"),
        ('"hello\\"', "double-quote"),
        ("'hello", "single-quote"),
        ("${", "missing '}'"),
        ("${}", "bad substitution"),
        ("${:x}", "bad substitution"),
        ("${PWD", "missing '}'"),
        ("${PWD:-x", "missing '}'"),
        ("${PWD:=x}", "unsupported modifier (=)"),
        ("${UNSET:?}", "UNSET: is not allowed to be unset"),
        ("${EMPTY:?}", "EMPTY: is not allowed to be empty"),
        ("${UNSET:?oops}", "UNSET: oops"),
    ],
)
def test_lexer_errors(word, error):
    with pytest.raises(LexError, match=error.replace("(", r"\(").replace(")", r"\)")):
        expand(word, ENV)


def test_words_split_only_unquoted_expansions():
    assert expand_words("$FOO", ENV) == ["foo", "bar"]
    assert expand_words('"$FOO"', ENV) == ["foo bar"]
    assert expand_words("80/tcp", ENV) == ["80/tcp"]


def test_backtick_escape():
    assert expand("a`$PWD", ENV, "`") == "a$PWD"
    assert expand("c:\\dir", ENV, "`") == "c:\\dir"


def _ins(text: str):
    df = parse(text)
    return [i for s in df.stages for i in [s.from_instruction, *s.instructions]]


def test_forms_of_run_cmd_entrypoint():
    ins = _ins('FROM x\nRUN echo "$HOME"\nRUN ["echo", "a b"]\nCMD ["sh"] trailing\nENTRYPOINT [bad json\n')
    assert (ins[1].args, ins[1].json) == (['echo "$HOME"'], False)
    assert (ins[2].args, ins[2].json) == (["echo", "a b"], True)
    assert (ins[3].args, ins[3].json) == (["sh"], True)  # Go's json.Decoder reads the first value only
    assert (ins[4].args, ins[4].json) == (["[bad json"], False)


def test_json_must_be_strings():
    with pytest.raises(DockerfileError, match="Dockerfile:2: when using JSON array syntax"):
        parse("FROM x\nCMD [1, 2]\n")


def test_continuations_comments_and_blank_lines():
    df = parse("FROM x\n# c\nRUN a \\\n  b \\\n# inside\n\n  c\n\nRUN d\\\t \n e\n")
    run1, run2 = df.stages[0].instructions
    assert run1.args == ["a   b   c"] and run1.line == 3
    assert run2.args == ["d e"] and run2.line == 9
    assert df.warnings and "Empty continuation line" in df.warnings[0]


def test_instruction_names_any_case_and_unknown_named_with_line():
    df = parse("from x\nrun true\n")
    assert df.stages[0].instructions[0].cmd == "RUN"
    with pytest.raises(DockerfileError) as e:
        parse("FROM busybox\n\n# comment\nRUN true\n\n\nRUNN false\n")
    assert str(e.value) == "Dockerfile:7: unknown instruction: RUNN"


def test_directives():
    df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM x\nRUN a `\n b\nCOPY c:\\a /b\n")
    assert df.directives == {"syntax": "docker/dockerfile:1", "escape": "`"}
    assert df.stages[0].instructions[0].args == ["a  b"]
    assert df.stages[0].instructions[1].args == ["c:\\a", "/b"]
    # after a blank line (or any other line) a directive is a comment
    df = parse("\n# escape=`\nFROM x\nRUN a \\\n b\n")
    assert df.escape == "\\" and df.stages[0].instructions[0].args == ["a  b"]
    # an unknown directive ends them too
    df = parse("# foo=bar\n# escape=`\nFROM x\n")
    assert df.directives == {}
    with pytest.raises(DockerfileError, match="only one escape parser directive"):
        parse("# escape=`\n# escape=\\\nFROM x\n")
    with pytest.raises(DockerfileError, match="invalid escape token"):
        parse("# escape=x\nFROM x\n")


def test_env_and_label_forms():
    ins = _ins('FROM x\nENV A=1 B="two words" C=three\\ four\nENV OLD the rest  of it\nLABEL "a b"=c d=\n')
    assert ins[1].args == ["A", "1", "B", '"two words"', "C", "three\\ four"]
    assert ins[2].args == ["OLD", "the rest  of it"]
    assert ins[3].args == ['"a b"', "c", "d", ""]
    with pytest.raises(DockerfileError, match='Dockerfile:2: Syntax error - can\'t find = in "B"'):
        parse("FROM x\nENV A=1 B\n")
    with pytest.raises(DockerfileError, match="ENV must have two arguments"):
        parse("FROM x\nENV A\n")


def test_flags():
    ins = _ins("FROM --platform=linux/amd64 x AS Build\nCOPY --from=build --chown=1:2 a b\n")
    assert ins[0].flags == {"platform": "linux/amd64"}
    assert ins[1].flags == {"from": "build", "chown": "1:2"} and ins[1].args == ["a", "b"]
    with pytest.raises(DockerfileError, match="Dockerfile:2: Unknown flag: bogus"):
        parse("FROM x\nCOPY --bogus=1 a b\n")
    with pytest.raises(DockerfileError, match="requires BuildKit"):
        parse("FROM x\nRUN --mount=type=cache,target=/x true\n")


def test_stages_and_meta_args():
    df = parse("ARG V=1\nFROM busybox:$V AS One\nRUN a\nFROM one\nCOPY --from=one /a /b\n")
    assert [a.args for a in df.meta_args] == [["V=1"]]
    assert [(s.base, s.name) for s in df.stages] == [("busybox:$V", "one"), ("one", None)]
    assert df.stage("ONE") is df.stages[0]
    with pytest.raises(DockerfileError, match="Dockerfile:1: no build stage in current context"):
        parse("RUN true\nFROM x\n")
    with pytest.raises(DockerfileError, match="FROM requires either one or three arguments"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match="invalid name for build stage"):
        parse("FROM a AS 1x\n")
    with pytest.raises(DockerfileError, match="duplicate name"):
        parse("FROM a AS x\nFROM b AS x\n")
    with pytest.raises(DockerfileError, match="cannot be empty"):
        parse("# just a comment\n\n")


def test_argument_counts():
    for text, msg in [
        ("FROM x\nCOPY a\n", "COPY requires at least two arguments, but only one was provided"),
        ("FROM x\nRUN\n", "RUN requires at least one argument"),
        ("FROM x\nWORKDIR\n", "WORKDIR requires exactly one argument"),
        ("FROM x\nSHELL sh -c\n", "SHELL requires the arguments to be in JSON form"),
        ("FROM x\nEXPOSE\n", "EXPOSE requires at least one argument"),
        ("FROM x\nHEALTHCHECK FOO x\n", 'Unknown type "FOO" in HEALTHCHECK'),
        ("FROM x\nHEALTHCHECK NONE x\n", "HEALTHCHECK NONE takes no arguments"),
        ("FROM x\nONBUILD ONBUILD RUN x\n", "Chaining ONBUILD"),
        ("FROM x\nONBUILD FROM y\n", "FROM isn't allowed as an ONBUILD trigger"),
        ("FROM x\nRUN cat <<EOF\n", "heredocs"),
    ]:
        with pytest.raises(DockerfileError, match=msg):
            parse(text)


def test_healthcheck_and_onbuild():
    ins = _ins('FROM x\nHEALTHCHECK --interval=5s CMD ["true"]\nHEALTHCHECK CMD wget -q x\nONBUILD RUN echo hi\n')
    assert (ins[1].args, ins[1].json, ins[1].flags) == (["CMD", "true"], True, {"interval": "5s"})
    assert (ins[2].args, ins[2].json) == (["CMD", "wget -q x"], False)
    assert ins[3].sub.cmd == "RUN" and ins[3].args == ["RUN echo hi"]


def test_parse_words_keeps_quotes():
    assert dockerfile.parse_words("a=\"b c\" d='e f' g=h\\ i") == ['a="b c"', "d='e f'", "g=h\\ i"]


def test_build_go_formats():
    """What build.py writes into history lines, as Go's fmt prints it."""
    from cocin import build

    assert build._go_duration(0) == "0s"
    assert build._go_duration(5 * 10**9) == "5s"
    assert build._go_duration(90 * 10**9) == "1m30s"
    assert build._go_duration(3600 * 10**9) == "1h0m0s"
    assert build._go_duration(1500 * 10**6) == "1.5s"
    assert build._go_duration(250 * 10**6) == "250ms"
    assert build.parse_duration("1m30s") == 90 * 10**9 and build.parse_duration("1.5s") == 1500 * 10**6
    with pytest.raises(Exception, match="invalid duration"):
        build.parse_duration("5x")
    assert build._go_rune(3) == "'\\x03'" and build._go_rune(65) == "'A'"
    assert build._go_list(["sh", "-c", 'a "b"']) == '["sh" "-c" "a \\"b\\""]'
    health = {"Test": ["CMD", "true"], "Interval": 5 * 10**9, "Retries": 3}
    assert build._health_text(health) == '&{["CMD" "true"] "5s" "0s" "0s" \'\\x03\'}'
    assert build._ports(["80", "53/udp", "8000-8002"]) == ["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]
    with pytest.raises(Exception, match="Invalid containerPort"):
        build._ports(["http"])
    run = {"Cmd": ["x"], "Env": ["A=1"], "Labels": {"b": "2", "a": "1"}, "User": "", "Volumes": None}
    assert list(build._ordered(run)) == ["Env", "Cmd", "Labels"]
    assert list(build._ordered(run)["Labels"]) == ["a", "b"]  # maps sorted, as Go's JSON writes them


def test_build_source_hashes_and_archives(tmp_path):
    """COPY's cache key follows contents and metadata, not times; ADD tells archives by content."""
    import gzip
    import io
    import os
    import tarfile

    from cocin import build

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("one\n")
    (tmp_path / "g").write_text("two\n")
    first = build.sources_hash(str(tmp_path), ["d"])
    assert first.startswith("dir:") and build.sources_hash(str(tmp_path), ["g"]).startswith("file:")
    assert build.sources_hash(str(tmp_path), ["d", "g"]).startswith("multi:")
    os.utime(tmp_path / "d" / "f", (1, 1))
    assert build.sources_hash(str(tmp_path), ["d"]) == first  # a new time: the same key
    (tmp_path / "d" / "f").write_text("One\n")
    assert build.sources_hash(str(tmp_path), ["d"]) != first
    os.chmod(tmp_path / "g", 0o600)
    second = build.sources_hash(str(tmp_path), ["g"])
    os.chmod(tmp_path / "g", 0o644)
    assert build.sources_hash(str(tmp_path), ["g"]) != second  # the mode is metadata
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        tf.add(str(tmp_path / "g"), arcname="g")
    (tmp_path / "a.tgz").write_bytes(buf.getvalue())
    (tmp_path / "plain.gz").write_bytes(gzip.compress(b"not a tar\n"))
    assert build._looks_like_tar(str(tmp_path / "a.tgz"))
    assert not build._looks_like_tar(str(tmp_path / "plain.gz"))
    assert not build._looks_like_tar(str(tmp_path / "g"))
