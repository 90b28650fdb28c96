"""Unit tests of cocin/gotemplate.py: Go text/template as Docker's --format uses it.

Expected outputs are what Go's text/template with docker/cli's functions prints
for the same JSON-shaped data (Docker runs inspect templates on the decoded JSON).
"""

from __future__ import annotations

import pytest

from cocin.gotemplate import Template, TemplateError, go_json, render_rows, tabwrite

DATA = {
    "Name": "/web",
    "State": {"Status": "running", "Pid": 42, "ExitCode": 0, "Running": True},
    "Config": {"Cmd": ["httpd", "-f"], "Env": None, "Labels": {"z": "1", "a": "<&>"}},
    "NetworkSettings": {"Networks": {"net2": {"IPAddress": "10.0.0.2"}, "net1": {"IPAddress": "10.0.0.1"}}},
    "HostConfig": {"NanoCpus": 1.5, "Memory": 1000000.0},
}


def run(text: str, data=DATA) -> str:
    return Template(text).execute(data)


@pytest.mark.parametrize(
    "text,out",
    [
        ("{{.State.Pid}}", "42"),
        ("{{.State.Running}}", "true"),
        ("{{.Config.Cmd}}", "[httpd -f]"),  # Go prints a slice as [a b]
        ("{{.Config.Labels}}", "map[a:<&> z:1]"),  # a map as map[k:v], keys sorted
        ("{{.Config.Env}}", "<no value>"),  # JSON null
        ("{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", "1.5 1e+06"),
        ("{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", "10.0.0.1 10.0.0.2 "),
        (
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
            "net1=10.0.0.1;net2=10.0.0.2;",
        ),
        ("{{range $i, $a := .Config.Cmd}}{{$i}}:{{$a}},{{end}}", "0:httpd,1:-f,"),
        ("{{range .Config.Env}}x{{else}}none{{end}}", "none"),
        ('{{range .Config.Cmd}}{{if eq . "-f"}}{{break}}{{end}}{{.}}{{end}}', "httpd"),
        ('{{if eq .State.Status "exited"}}down{{else if eq .State.Status "running"}}up{{else}}?{{end}}', "up"),
        ("{{if and .State.Running (gt .State.Pid 1)}}yes{{end}}", "yes"),
        ("{{with .State}}{{.Status}}{{end}}{{with .Config.Env}}x{{else}}-{{end}}", "running-"),
        ("{{$n := .Name}}{{range .Config.Cmd}}{{$n}}{{$.State.Pid}} {{end}}", "/web42 /web42 "),
        ("{{$x := 1}}{{if true}}{{$x = 2}}{{end}}{{$x}}", "2"),
        ('{{index .Config.Cmd 1}} {{index .Config.Labels "a"}}', "-f <&>"),
        ('{{(index .NetworkSettings.Networks "net1").IPAddress}}', "10.0.0.1"),
        ("{{len .Config.Cmd}} {{len .Name}}", "2 4"),
        ("{{json .Config}}", '{"Cmd":["httpd","-f"],"Env":null,"Labels":{"z":"1","a":"<&>"}}'),
        ('{{join .Config.Cmd ","}} {{split "a:b:c" ":"}}', "httpd,-f [a b c]"),
        ('{{lower "AbC"}} {{upper "abc"}} {{title "hello big-world"}}', "abc ABC Hello Big-World"),
        ('{{"MiXed" | lower | printf "%s!"}}', "mixed!"),
        ("{{println .Name .State.Pid}}", "/web 42\n"),
        ('{{print 1 2 "a" 3}}', "1 2a3"),
        (
            '{{printf "%s|%d|%5.2f|%-4s|%q|%v" .Name .State.Pid 3.14159 "ab" "x" .Config.Cmd}}',
            '/web|42| 3.14|ab  |"x"|[httpd -f]',
        ),
        ('{{printf "%d"}}', "%!d(MISSING)"),
        (
            '{{not 0}} {{or 0 "" "x"}} {{and 1 0}} {{ne 1 2}} {{le 2 2}} {{lt "a" "b"}} {{ge 1 2}}',
            "true x 0 true true true false",
        ),
        ("a  {{- .Name -}}  b\n{{/* a comment */}}c", "a/webb\nc"),
        ('{{`raw\\n`}}{{"\\tq"}}', "raw\\n\tq"),
    ],
)
def test_template_output_as_go(text, out):
    assert run(text) == out


def test_json_is_go_compact_and_docker_does_not_escape_html():
    value = {"a": [1, 2.5, None, True], "s": "<x&y>\n\u2028", "e": {}}
    assert go_json(value) == '{"a":[1,2.5,null,true],"s":"<x&y>\\n\\u2028","e":{}}'
    assert go_json("<&>", escape_html=True) == '"\\u003c\\u0026\\u003e"'  # encoding/json's default
    assert run("{{json .}}", {"k": "v w"}) == '{"k":"v w"}'


@pytest.mark.parametrize(
    "text,error",
    [
        ("{{nope}}", 'template: :1: function "nope" not defined'),
        ("{{.Name | nope}}", 'template: :1: function "nope" not defined'),
        ("{{if .Name}}x", "template: :1: unexpected EOF"),
        ("{{end}}", "template: :1: unexpected {{end}}"),
        ("{{.Name", "template: :1: unclosed action"),
        ("x\n{{}}", "template: :2: missing value for command"),
        ("{{$x}}", 'template: :1: undefined variable "$x"'),
        ("{{.Nope}}", 'template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope"'),
        ("{{.Config.Env.X}}", 'template: :1:2: executing "" at <.Config.Env.X>: nil pointer evaluating interface {}.X'),
        (
            "{{index .Config.Cmd 5}}",
            'template: :1:2: executing "" at <index>: error calling index: index out of range: 5',
        ),
        ("{{len 3}}", 'template: :1:2: executing "" at <len>: error calling len: len of type int'),
        ('{{eq 1 "a"}}', 'template: :1:2: executing "" at <eq>: error calling eq: incompatible types for comparison'),
    ],
)
def test_errors_are_gos_words_never_the_template_echoed(text, error):
    with pytest.raises(TemplateError) as e:
        run(text)
    assert str(e.value) == error


def test_missingkey_default_prints_no_value():
    assert Template("{{.Nope}}", missingkey="default").execute({}) == "<no value>"


def test_table_header_and_columns_as_docker_ps():
    rows = [{"ID": "abc", "Names": "web"}, {"ID": "d", "Names": "a-much-longer-name"}]
    out = render_rows(r"table {{.ID}}\t{{.Names | upper}}", rows, {"ID": "CONTAINER ID", "Names": "NAMES"})
    assert out == ("CONTAINER ID   NAMES\nabc            WEB\nd              A-MUCH-LONGER-NAME\n")
    assert render_rows(r"{{.ID}}:{{.Names}}", rows, {}) == "abc:web\nd:a-much-longer-name\n"


def test_tabwrite_min_width_and_padding():
    assert tabwrite("a\tb\nccc\td", minwidth=5, padding=3) == "a     b\nccc   d"  # max(5, 3 + 3)
    assert tabwrite("PID\tCMD\n1\tsleep 9", minwidth=20, padding=3).splitlines()[1] == "1" + " " * 19 + "sleep 9"


def test_range_over_an_integer_and_huge_widths_stay_bounded():
    assert run("{{range $i := 3}}{{$i}}{{end}}{{range 0}}x{{else}}none{{end}}") == "012none"
    assert run('{{printf "%99999999d" 1}}') == "%!d(BADWIDTH)"
    with pytest.raises(TemplateError):
        run('{{pad "x" 99999999999 0}}')


def test_only_template_errors_escape_random_pipelines():
    """Random mixes of functions and operands: a wrong one is a TemplateError
    (one ``cocin: error`` line), never another exception (a traceback)."""
    import random

    ops = [
        ".A",
        ".B",
        ".B.C",
        ".N",
        ".S",
        "$",
        "$.A",
        "1",
        "-2",
        "2.5",
        '"x"',
        '"%v %d %q %5.1f %x %t"',
        "nil",
        "true",
        "(index .A 3)",
        "(len .S)",
        ".",
        "$v",
        "1e300",
    ]
    funcs = [
        "index",
        "len",
        "printf",
        "print",
        "println",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "and",
        "or",
        "not",
        "json",
        "split",
        "join",
        "lower",
        "upper",
        "title",
        "slice",
        "html",
        "pad",
        "truncate",
    ]
    data = {"A": [1, "a", None, {"k": 2}], "B": {"C": "hi", "D": None}, "N": 3, "S": "str"}
    rng = random.Random(17)
    for _ in range(3000):
        cmds = [
            " ".join([rng.choice(funcs)] + rng.sample(ops, rng.randint(0, 3)))
            if rng.random() < 0.7
            else rng.choice(ops)
            for _ in range(rng.randint(1, 3))
        ]
        kind = rng.choice(["", "if ", "range ", "with ", "$v = ", "range $i, $e := "])
        text = "{{$v := 1}}{{" + kind + " | ".join(cmds) + "}}"
        if kind.strip() in ("if", "range", "with", "range $i, $e :="):
            text += "x{{.}}{{else}}y{{end}}"
        try:
            Template(text).execute(data)
        except TemplateError:
            pass
