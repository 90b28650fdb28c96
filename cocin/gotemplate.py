"""Go's ``text/template``, the subset Docker users write in ``--format``.

Docker formats ``inspect``, ``ps`` and friends with Go templates:
``{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}``. A template is
text with *actions* between ``{{`` and ``}}``; an action is a *pipeline* of
commands joined by ``|``, each command's value passed as the last argument of
the next. ``.`` is the current value ("dot"), ``.A.B`` a path into it,
``$`` the whole data and ``$x`` a variable. ``if``, ``range`` and ``with``
take a pipeline and a body up to ``{{end}}`` (``{{else}}``, ``{{else if}}``).

Printing follows Go's ``fmt``: a list prints as ``[a b]``, a map as
``map[k:v]`` (keys sorted), a missing value (JSON null) as ``<no value>``.
Errors use Go's words: ``template: :1: function "nope" not defined``.

Pure Python, no imports at module level: only ``--format`` users load it.
"""

from __future__ import annotations


class TemplateError(Exception):
    """A parse or execution error, worded as Go's (``template: :LINE: ...``)."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


_MISSING = object()  # a key not in a map: prints "<no value>"
_KEYWORDS = ("if", "else", "end", "range", "with", "break", "continue", "define", "template", "block")

# --- lexing ----------------------------------------------------------------------


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _col(src: str, pos: int) -> str:
    nl = src.rfind("\n", 0, pos)
    return f"{_line(src, pos)}:{pos if nl < 0 else pos - nl - 1}"


def _split(src: str) -> list[tuple]:
    """Text and action pieces: ("text", str) and ("action", body, pos)."""
    out: list[tuple] = []
    i, n = 0, len(src)
    trim_next = False
    while i <= n:
        j = src.find("{{", i)
        text = src[i:] if j < 0 else src[i:j]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if j >= 0 and src.startswith(("{{- ", "{{-\t", "{{-\n", "{{-\r"), j):
            text = text.rstrip(" \t\r\n")
        if text:
            out.append(("text", text))
        if j < 0:
            break
        start = j + 2
        if src.startswith(("- ", "-\t", "-\n", "-\r"), start):
            start += 2
        k = _action_end(src, start)
        if k < 0:
            raise TemplateError(f"template: :{_line(src, j)}: unclosed action")
        end, trim_next = k, False
        if k >= 1 and src[k - 1] == "-" and k - 2 >= start and src[k - 2] in " \t\r\n":
            end, trim_next = k - 1, True
        body = src[start:end]
        if body.strip().startswith("/*"):
            if not body.strip().endswith("*/"):
                raise TemplateError(f"template: :{_line(src, j)}: unclosed comment")
        else:
            out.append(("action", body, start))
        i = k + 2
    return out


def _action_end(src: str, i: int) -> int:
    """Where the ``}}`` closing the action from ``i`` is, skipping quoted strings."""
    n = len(src)
    while i < n:
        c = src[i]
        if c in "\"'`":
            q = src.find(c, i + 1) if c == "`" else _quote_end(src, i)
            if q < 0:
                return -1
            i = q + 1
            continue
        if src.startswith("}}", i):
            return i
        if src.startswith("/*", i):
            q = src.find("*/", i + 2)
            if q < 0:
                return -1
            i = q + 2
            continue
        i += 1
    return -1


def _quote_end(src: str, i: int) -> int:
    q, j = src[i], i + 1
    while j < len(src):
        if src[j] == "\\":
            j += 2
            continue
        if src[j] == q:
            return j
        if src[j] == "\n":
            return -1
        j += 1
    return -1


def _tokens(body: str, base: int, src: str) -> list[tuple]:
    """An action's tokens: (kind, text, pos). Kinds: field, var, ident, str,
    num, char, op (| ( ) := = ,)."""
    out, i, n = [], 0, len(body)
    while i < n:
        c = body[i]
        pos = base + i
        if c in " \t\r\n":
            i += 1
        elif c in "|(),":
            out.append(("op", c, pos))
            i += 1
        elif body.startswith(":=", i):
            out.append(("op", ":=", pos))
            i += 2
        elif c == "=":
            out.append(("op", "=", pos))
            i += 1
        elif c == '"' or c == "'":
            j = _quote_end(body, i)
            if j < 0:
                raise TemplateError(f"template: :{_line(src, pos)}: unterminated quoted string")
            out.append(("str" if c == '"' else "char", _unquote(body[i : j + 1], src, pos), pos))
            i = j + 1
        elif c == "`":
            j = body.find("`", i + 1)
            if j < 0:
                raise TemplateError(f"template: :{_line(src, pos)}: unterminated raw quoted string")
            out.append(("str", body[i + 1 : j], pos))
            i = j + 1
        elif c == "." and (i + 1 >= n or not body[i + 1].isdigit()):
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "_."):
                j += 1
            out.append(("field", body[i:j], pos))
            i = j
        elif c == "$":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "_."):
                j += 1
            out.append(("var", body[i:j], pos))
            i = j
        elif c.isdigit() or (c in "+-." and i + 1 < n and body[i + 1].isdigit()):
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "._+-"):
                if body[j] in "+-" and body[j - 1] not in "eEpP":
                    break
                j += 1
            out.append(("num", body[i:j], pos))
            i = j
        elif c.isalpha() or c == "_":
            j = i + 1
            while j < n and (body[j].isalnum() or body[j] in "_."):
                j += 1
            out.append(("ident", body[i:j], pos))
            i = j
        else:
            raise TemplateError(
                f"template: :{_line(src, pos)}: unexpected {c!r} in command".replace(f"{c!r}", '"' + c + '"')
            )
    return out


_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "\\": "\\",
    '"': '"',
    "'": "'",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "0": "\0",
}


def _unquote(text: str, src: str, pos: int) -> str:
    out, i, body = [], 0, text[1:-1]
    while i < len(body):
        c = body[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = body[i + 1 : i + 2]
        if e in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[e]
            try:
                out.append(chr(int(body[i + 2 : i + 2 + size], 16)))
            except ValueError:
                raise TemplateError(f"template: :{_line(src, pos)}: invalid syntax") from None
            i += 2 + size
        elif e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        else:
            raise TemplateError(f"template: :{_line(src, pos)}: invalid syntax")
    return "".join(out)


# --- parsing ------------------------------------------------------------------------
# Nodes are tuples: ("text", s) ("action", pipe, pos) ("if"|"range"|"with", pipe, body,
# else_body, pos) ("break",) ("continue",). A pipe is (decl_vars, assign, cmds, pos);
# a command a list of operands: ("field", names, pos) ("var", name, names, pos)
# ("ident", name, pos) ("lit", value) ("sub", pipe, names, pos).


class _Parser:
    def __init__(self, src: str, funcs: dict):
        self.src = src
        self.funcs = funcs
        self.pieces = _split(src)
        self.i = 0
        self.vars: list[list[str]] = [["$"]]
        self.range_depth = 0

    def err(self, pos: int, msg: str) -> TemplateError:
        return TemplateError(f"template: :{_line(self.src, pos)}: {msg}")

    def parse(self) -> list:
        body, stop, pos = self.list_until()
        if stop is not None:
            raise self.err(pos, f"unexpected {{{{{stop}}}}}")
        return body

    def list_until(self) -> tuple[list, str | None, int]:
        """Nodes up to ``{{end}}`` or ``{{else ...}}``: (nodes, "end"|"else", pos)."""
        nodes = []
        while self.i < len(self.pieces):
            piece = self.pieces[self.i]
            self.i += 1
            if piece[0] == "text":
                nodes.append(piece)
                continue
            body, pos = piece[1], piece[2]
            toks = _tokens(body, pos, self.src)
            if not toks:
                raise self.err(pos, "missing value for command")
            head = toks[0]
            word = head[1] if head[0] == "ident" else None
            if word in ("end", "else"):
                self.rest = toks[1:]
                return nodes, word, pos
            if word in ("if", "range", "with"):
                nodes.append(self.control(word, toks[1:], pos))
            elif word in ("break", "continue"):
                if not self.range_depth:
                    raise self.err(pos, f"{{{{{word}}}}} outside {{{{range}}}}")
                nodes.append((word,))
            elif word in ("define", "template", "block"):
                raise self.err(pos, f"{{{{{word}}}}} is not supported by cocin")
            else:
                nodes.append(("action", self.pipeline(toks, pos, decl_ok=True), pos))
        return nodes, None, len(self.src)

    def control(self, word: str, toks: list, pos: int) -> tuple:
        self.vars.append([])
        pipe = self.pipeline(toks, pos, decl_ok=True, range_vars=word == "range")
        if word == "range":
            self.range_depth += 1
        body, stop, spos = self.list_until()
        if word == "range":
            self.range_depth -= 1
        self.vars.pop()
        else_body: list = []
        if stop is None:
            raise self.err(len(self.src), "unexpected EOF")
        if stop == "else":
            rest = self.rest
            if rest and rest[0][0] == "ident" and rest[0][1] in ("if", "with") and word != "range":
                # {{else if X}} is {{else}}{{if X}}...{{end}} sharing this {{end}}
                else_body = [self.control(rest[0][1], rest[1:], spos)]
                return (word, pipe, body, else_body, pos)
            if rest:
                raise self.err(spos, "unexpected tokens after {{else}}")
            self.vars.append([])
            else_body, stop, epos = self.list_until()
            self.vars.pop()
            if stop != "end":
                raise self.err(
                    epos if stop else len(self.src), "expected end; found {{else}}" if stop else "unexpected EOF"
                )
        if self.rest if stop == "end" else False:
            raise self.err(spos, "unexpected tokens after {{end}}")
        return (word, pipe, body, else_body, pos)

    def pipeline(self, toks: list, pos: int, decl_ok: bool, range_vars: bool = False) -> tuple:
        decl: list[str] = []
        assign = False
        # $x := ..., $x = ..., and in range $i, $e := ...
        k = 0
        while k < len(toks) and toks[k][0] == "var" and "." not in toks[k][1]:
            if k + 1 < len(toks) and toks[k + 1][1] in (":=", "="):
                decl.append(toks[k][1])
                assign = toks[k + 1][1] == "="
                k += 2
                break
            if range_vars and k + 1 < len(toks) and toks[k + 1][1] == "," and not decl:
                decl.append(toks[k][1])
                k += 2
                continue
            break
        if decl and k == 0:
            decl = []
        if len(decl) > 1 and not range_vars:
            raise self.err(pos, "too many declarations in command")
        if decl and not assign:
            for name in decl:
                self.vars[-1].append(name)
        elif decl and assign and not self.known(decl[0]):
            raise self.err(pos, f'undefined variable "{decl[0]}"')
        cmds, cur = [], []
        toks = toks[k:]
        j = 0
        while j < len(toks):
            t = toks[j]
            if t[1] == "|" and t[0] == "op":
                if not cur:
                    raise self.err(t[2], "missing command")
                cmds.append(cur)
                cur = []
                j += 1
                continue
            operand, j = self.operand(toks, j)
            cur.append(operand)
        if not cur:
            raise self.err(pos, "missing value for command" if not cmds else "missing command")
        cmds.append(cur)
        for c in cmds[1:]:
            if c[0][0] not in ("ident", "sub", "field", "var"):
                raise self.err(pos, "non executable command in pipeline stage 2")
        return (decl, assign, cmds, pos)

    def known(self, name: str) -> bool:
        return any(name in scope for scope in self.vars)

    def operand(self, toks: list, j: int) -> tuple[tuple, int]:
        kind, text, pos = toks[j]
        if kind == "field":
            return ("field", [p for p in text.split(".") if p], pos), j + 1
        if kind == "var":
            name, _, rest = text.partition(".")
            if not self.known(name):
                raise self.err(pos, f'undefined variable "{name}"')
            return ("var", name, [p for p in rest.split(".") if p], pos), j + 1
        if kind == "str":
            return ("lit", text), j + 1
        if kind == "char":
            return ("lit", ord(text) if len(text) == 1 else 0), j + 1
        if kind == "num":
            return ("lit", self.number(text, pos)), j + 1
        if kind == "ident":
            name, dot, rest = text.partition(".")
            if name in ("true", "false"):
                return ("lit", name == "true"), j + 1
            if name == "nil":
                return ("lit", None), j + 1
            if name in _KEYWORDS:
                raise self.err(pos, f"unexpected <{name}> in command")
            if name not in self.funcs:
                raise self.err(pos, f'function "{name}" not defined')
            return ("ident", name, pos), j + 1
        if kind == "op" and text == "(":
            depth, k = 1, j + 1
            while k < len(toks) and depth:
                if toks[k][0] == "op" and toks[k][1] in "()":
                    depth += 1 if toks[k][1] == "(" else -1
                k += 1
            if depth:
                raise self.err(pos, "unclosed left paren")
            inner = self.pipeline(toks[j + 1 : k - 1], pos, decl_ok=False)
            names = []
            if k < len(toks) and toks[k][0] == "field" and toks[k][2] == toks[k - 1][2] + 1:
                names = [p for p in toks[k][1].split(".") if p]
                k += 1
            return ("sub", inner, names, pos), k
        raise self.err(pos, f'unexpected "{text}" in operand')

    def number(self, text: str, pos: int):
        t = text.replace("_", "")
        try:
            if t.lower().startswith(("0x", "-0x", "+0x", "0o", "0b")):
                return int(t, 0)
            if t.isdigit() or (t[0] in "+-" and t[1:].isdigit()):
                return int(t)
            return float(t)
        except ValueError:
            raise self.err(pos, f'bad number syntax: "{text}"') from None


# --- printing the way Go's fmt does -------------------------------------------------


def _go_float(f: float) -> str:
    """%v of a float64 (Go's %g, shortest digits): 1.5, 123456, 1e+06, 1e-05."""
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    sign, r = ("-" if str(f).startswith("-") else ""), repr(abs(f))
    if "e" in r:
        mant, _, e = r.partition("e")
        digits, exp = mant.replace(".", ""), int(e)
    else:
        whole, _, frac = r.partition(".")
        if whole != "0":
            digits, exp = (whole + frac).rstrip("0") or "0", len(whole) - 1
        else:
            digits, exp = frac.lstrip("0") or "0", -(len(frac) - len(frac.lstrip("0")) + 1)
    digits = digits.rstrip("0") or "0"
    if digits == "0":
        return sign + "0"
    if exp < -4 or exp >= 6:  # Go: shortest digits decide with precision 6
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    whole = digits[: exp + 1].ljust(exp + 1, "0")
    frac = digits[exp + 1 :]
    return sign + whole + ("." + frac if frac else "")


def go_str(v, top: bool = True) -> str:
    """``fmt.Sprint(v)`` for JSON-shaped values."""
    if v is _MISSING or (v is None and top):
        return "<no value>"
    if v is None:
        return "<nil>"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(go_str(x, False) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{go_str(k, False)}:{go_str(v[k], False)}" for k in sorted(v, key=_sort_key)) + "]"
    return str(v)


def _sort_key(k):
    return (0, k, "") if isinstance(k, (int, float)) else (1, 0, str(k))


def go_json(v, escape_html: bool = False) -> str:
    """Go's ``encoding/json``, compact. Docker's ``json`` function turns off
    the HTML escaping of ``<``, ``>`` and ``&`` (``escape_html=False``)."""
    if v is None or v is _MISSING:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v == int(v) and abs(v) < 1e21:
            return str(int(v))
        r = repr(v)
        if "e" in r:
            m, _, e = r.partition("e")
            r = f"{m}e{'-' if e.startswith('-') else '+'}{e.lstrip('+-').lstrip('0') or '0'}"
        return r
    if isinstance(v, str):
        return _json_str(v, escape_html)
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(go_json(x, escape_html) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{_json_str(str(k), escape_html)}:{go_json(x, escape_html)}" for k, x in v.items()) + "}"
    return _json_str(str(v), escape_html)


_JSON_ESC = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_str(s: str, escape_html: bool) -> str:
    out = []
    for c in s:
        if c in _JSON_ESC:
            out.append(_JSON_ESC[c])
        elif c < " " or (escape_html and c in "<>&"):
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _quote(s: str) -> str:
    """Go's strconv.Quote (for ASCII and printable text)."""
    out = []
    for c in s:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\n\t\r\a\b\f\v":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v"}[c])
        elif c < " " or c == "\x7f":
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


# --- functions ------------------------------------------------------------------


def truth(v) -> bool:
    """Go's template truth: false, 0, nil and empty things are false."""
    if v is None or v is _MISSING or v is False:
        return False
    if isinstance(v, (int, float, str, list, tuple, dict)):
        return bool(v)
    return True


def _printf(fmt: str, *args) -> str:
    if not isinstance(fmt, str):
        _fail(f"wrong type for value; expected string; got {_type(fmt)}")
    out, i, n, ai = [], 0, len(fmt), 0
    while i < n:
        c = fmt[i]
        if c != "%":
            out.append(c)
            i += 1
            continue
        j = i + 1
        while j < n and fmt[j] in "+-# 0":
            j += 1
        while j < n and (fmt[j].isdigit() or fmt[j] == "."):
            j += 1
        if j >= n:
            out.append("%!(NOVERB)")
            break
        spec, verb = fmt[i + 1 : j], fmt[j]
        i = j + 1
        if any(int(n) > _MAX_PAD for n in spec.lstrip("+-# 0").split(".") if n.isdigit()):
            out.append(f"%!{verb}(BADWIDTH)")
            ai += 1
            continue
        if verb == "%":
            out.append("%")
            continue
        if ai >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_verb(spec, verb, args[ai]))
        ai += 1
    if ai < len(args):
        extra = ", ".join(f"{_type(a)}={go_str(a, False)}" for a in args[ai:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _type(v) -> str:
    return {
        bool: "bool",
        int: "int",
        float: "float64",
        str: "string",
        list: "[]interface {}",
        dict: "map[string]interface {}",
    }.get(type(v), "<nil>")


def _verb(spec: str, verb: str, v) -> str:
    pyspec = spec.replace("+", "+") if verb in "dfeEgGxXob" else spec.replace("+", "").replace("#", "")
    try:
        if verb in "vs":
            text = go_str(v, False) if not isinstance(v, str) else v
            return format(text, _pad(pyspec))
        if verb == "q":
            return format(_quote(v if isinstance(v, str) else go_str(v, False)), _pad(pyspec))
        if verb == "t" and isinstance(v, bool):
            return format(go_str(v), _pad(pyspec))
        if verb in "dxXob" and isinstance(v, int) and not isinstance(v, bool):
            return format(v, pyspec + verb.replace("d", "d"))
        if verb in "xX" and isinstance(v, str):
            return format(v.encode().hex() if verb == "x" else v.encode().hex().upper(), _pad(pyspec))
        if verb in "feEgG" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return format(float(v), pyspec + verb)
    except ValueError:
        pass
    return f"%!{verb}({_type(v)}={go_str(v, False)})"


def _pad(spec: str) -> str:
    """Go pads strings on the left by default, ``-`` on the right (Python: > and <)."""
    if spec.startswith("-"):
        return "<" + spec[1:].lstrip("0")
    return ">" + spec.lstrip("0") if spec else ""


def _index(item, *keys):
    for k in keys:
        if isinstance(item, dict):
            item = (
                item.get(k, _MISSING) if isinstance(k, str) else _fail(f"value has type {_type(k)}; should be string")
            )
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(k, int) or isinstance(k, bool):
                _fail(f"cannot index slice/array with type {_type(k)}")
            if not 0 <= k < len(item):
                _fail(f"index out of range: {k}")
            item = item[k] if not isinstance(item, str) else ord(item.encode()[k : k + 1] or b"\0")
        elif item is None or item is _MISSING:
            _fail("index of untyped nil")
        else:
            _fail(f"can't index item of type {_type(item)}")
    return item


def _slice(item, *idx):
    if not isinstance(item, (list, tuple, str)):
        _fail(f"can't slice item of type {_type(item)}")
    lo = idx[0] if idx else 0
    hi = idx[1] if len(idx) > 1 else len(item)
    if not 0 <= lo <= hi <= len(item):
        _fail(f"index out of range: {hi}")
    return item[lo:hi]


def _len(item) -> int:
    if isinstance(item, str):
        return len(item.encode())
    if isinstance(item, (list, tuple, dict)):
        return len(item)
    _fail(f"len of type {_type(item)}" if item not in (None, _MISSING) else "len of nil pointer")
    return 0


def _fail(msg: str):
    raise _CallError(msg)


class _CallError(Exception):
    pass


def _cmp_ok(a, b) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return (isinstance(a, num) and isinstance(b, num)) or type(a) is type(b) or a is None or b is None


def _eq(a, *others) -> bool:
    if not others:
        _fail("missing argument for comparison")
    for b in others:
        if not _cmp_ok(a, b):
            _fail("incompatible types for comparison")
        if a == b:
            return True
    return False


def _order(op):
    def cmp(a, b):
        if not _cmp_ok(a, b) or isinstance(a, (bool, list, dict)) or a is None:
            _fail("incompatible types for comparison" if _cmp_ok(a, b) else "invalid type for comparison")
        return op(a, b)

    return cmp


def _sprint(*args) -> str:
    out = []
    for i, a in enumerate(args):
        if i and not isinstance(a, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(a, False))
    return "".join(out)


def _title(s: str) -> str:
    out, prev = [], " "
    for c in s:
        out.append(c.upper() if not (prev.isalnum() or prev == "_") else c)
        prev = c
    return "".join(out)


def _html(*args) -> str:
    s = _sprint(*args)
    for a, b in (("&", "&amp;"), ("'", "&#39;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&#34;"), ("\0", "\ufffd")):
        s = s.replace(a, b)
    return s


def _split_go(s: str, sep: str) -> list[str]:
    if sep == "":
        return list(s)
    return s.split(sep)


def _join(items, sep: str) -> str:
    if not isinstance(sep, str):
        _fail(f"wrong type for value; expected string; got {_type(sep)}")
    if not isinstance(items, (list, tuple)):
        _fail(f"wrong type for value; expected []string; got {_type(items)}")
    return sep.join(go_str(x, False) for x in items)


def _stringy(fn):
    def call(s, *rest):
        if not isinstance(s, str):
            _fail(f"wrong type for value; expected string; got {_type(s)}")
        return fn(s, *rest)

    return call


_MAX_PAD = 1 << 16  # no field needs more; a typo must not fill the memory


def _pad_space(s: str, prefix: int, suffix: int) -> str:
    if not all(isinstance(n, int) and 0 <= n <= _MAX_PAD for n in (prefix, suffix)):
        _fail(f"pad: expected two counts from 0 to {_MAX_PAD}")
    return s if s == "" else " " * prefix + s + " " * suffix


def _truncate(s: str, n: int) -> str:
    return s if len(s) < n else s[:n]


def _lazy(name: str):
    def call(*args):
        return _builtin_ops[name](*args)

    return call


_builtin_ops: dict = {}


def _setup_ops() -> None:
    import operator

    _builtin_ops.update(lt=_order(operator.lt), le=_order(operator.le), gt=_order(operator.gt), ge=_order(operator.ge))


FUNCS = {
    # Go's builtins (and/or are special: they stop at the first deciding argument)
    "and": None,
    "or": None,
    "not": lambda v: not truth(v),
    "len": _len,
    "index": _index,
    "slice": _slice,
    "print": _sprint,
    "println": lambda *a: " ".join(go_str(x, False) for x in a) + "\n",
    "printf": lambda fmt, *a: _printf(fmt, *a),
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _lazy("lt"),
    "le": _lazy("le"),
    "gt": _lazy("gt"),
    "ge": _lazy("ge"),
    "html": _html,
    # Docker's (docker/cli templates.basicFunctions)
    "json": lambda v: go_json(v),
    "split": _stringy(_split_go),
    "join": _join,
    "title": _stringy(_title),
    "lower": _stringy(str.lower),
    "upper": _stringy(str.upper),
    "pad": _stringy(_pad_space),
    "truncate": _stringy(_truncate),
}

# Docker's functions for a table's header: the header names go through unchanged.
HEADER_FUNCS = {
    **FUNCS,
    "json": lambda v: v,
    "split": lambda v, _s: v,
    "join": lambda v, _s: v,
    "title": lambda v: v,
    "lower": lambda v: v,
    "upper": lambda v: v,
    "truncate": lambda v, _n: v,
}


# --- execution --------------------------------------------------------------------


class Template:
    """``Template(text).execute(data)``: parse once, run on many values."""

    def __init__(self, text: str, funcs: dict | None = None, missingkey: str = "error"):
        self.src = text
        self.funcs = FUNCS if funcs is None else funcs
        self.missingkey = missingkey
        if not _builtin_ops:
            _setup_ops()
        self.tree = _Parser(text, self.funcs).parse()

    def execute(self, data, funcs: dict | None = None) -> str:
        out: list[str] = []
        run = _Exec(self, data, out, self.funcs if funcs is None else funcs)
        try:
            run.walk(self.tree, data)
        except (_Break, _Continue):
            pass
        return "".join(out)


class _Exec:
    def __init__(self, tmpl: Template, data, out: list, funcs: dict):
        self.t = tmpl
        self.out = out
        self.funcs = funcs
        self.vars: list[list] = [[("$", data)]]

    def err(self, pos: int, what: str, msg: str) -> TemplateError:
        return TemplateError(f'template: :{_col(self.t.src, pos)}: executing "" at <{what}>: {msg}')

    def walk(self, nodes: list, dot) -> None:
        for node in nodes:
            kind = node[0]
            if kind == "text":
                self.out.append(node[1])
            elif kind == "action":
                v = self.pipe(node[1], dot)
                if not node[1][0]:
                    self.out.append(go_str(v))
            elif kind == "if":
                self.scoped(node[2] if truth(self.pipe(node[1], dot)) else node[3], dot)
            elif kind == "with":
                v = self.pipe(node[1], dot)
                if truth(v):
                    self.scoped(node[2], v)
                else:
                    self.scoped(node[3], dot)
            elif kind == "range":
                self.range(node, dot)
            elif kind == "break":
                raise _Break()
            elif kind == "continue":
                raise _Continue()

    def scoped(self, nodes: list, dot) -> None:
        self.vars.append([])
        try:
            self.walk(nodes, dot)
        finally:
            self.vars.pop()

    def range(self, node: tuple, dot) -> None:
        decl, _assign, cmds, pos = node[1]
        self.vars.append([])
        try:
            v = self.pipe((None, False, cmds, pos), dot)
            if isinstance(v, dict):
                items = [(k, v[k]) for k in sorted(v, key=_sort_key)]
            elif isinstance(v, (list, tuple)):
                items = list(enumerate(v))
            elif isinstance(v, int) and not isinstance(v, bool):
                items = ((i, i) for i in range(v))  # Go 1.22: range over an integer
            elif v is None or v is _MISSING:
                items = []
            else:
                raise self.err(pos, _describe(cmds), f"range can't iterate over {go_str(v, False)}")
            empty = True
            for k, item in items:
                empty = False
                if len(decl) == 1:
                    self.vars[-1] = [(decl[0], item)]
                elif len(decl) == 2:
                    self.vars[-1] = [(decl[0], k), (decl[1], item)]
                try:
                    self.scoped(node[2], item)
                except _Break:
                    break
                except _Continue:
                    continue
            if empty:
                self.scoped(node[3], dot)
        finally:
            self.vars.pop()

    def lookup_var(self, name: str):
        for scope in reversed(self.vars):
            for k, v in reversed(scope):
                if k == name:
                    return v
        raise TemplateError(f"template: : undefined variable: {name}")

    def set_var(self, name: str, value) -> None:
        for scope in reversed(self.vars):
            for i, (k, _v) in enumerate(scope):
                if k == name:
                    scope[i] = (k, value)
                    return

    def pipe(self, pipe: tuple, dot):
        decl, assign, cmds, _pos = pipe
        value = _NOARG = object()
        for cmd in cmds:
            value = self.command(cmd, dot, value, _NOARG)
        if decl:
            if assign:
                self.set_var(decl[0], value)
            else:
                self.vars[-1].append((decl[-1], value))
        return value

    def command(self, cmd: list, dot, final, noarg):
        first = cmd[0]
        if first[0] == "ident":
            args = [self.arg(a, dot) for a in cmd[1:]] if first[1] not in ("and", "or") else cmd[1:]
            if final is not noarg:
                args.append(final if first[1] not in ("and", "or") else ("val", final))
            return self.call(first[1], args, dot, first[2])
        if len(cmd) > 1 or final is not noarg:
            what = _describe([cmd])
            raise self.err(_pos(first), what, f"can't give argument to non-function {what}")
        return self.arg(first, dot)

    def call(self, name: str, args: list, dot, pos: int):
        if name in ("and", "or"):
            if not args:
                raise self.err(pos, name, f"wrong number of args for {name}: want at least 1 got 0")
            v = None
            for a in args:
                v = a[1] if a[0] == "val" else self.arg(a, dot)
                if truth(v) == (name == "or"):
                    return v
            return v
        fn = self.funcs[name]
        try:
            return fn(*args)
        except _CallError as e:
            raise self.err(pos, name, f"error calling {name}: {e}") from None
        except TypeError:
            raise self.err(pos, name, f"wrong number or type of args for {name}: got {len(args)}") from None
        except (AttributeError, ValueError, IndexError, KeyError, OverflowError):
            raise self.err(pos, name, f"error calling {name}: wrong type for value") from None

    def arg(self, node: tuple, dot):
        kind = node[0]
        if kind == "lit":
            return node[1]
        if kind == "val":
            return node[1]
        if kind == "field":
            return self.fields(dot, node[1], node[2], "")
        if kind == "var":
            return self.fields(self.lookup_var(node[1]), node[2], node[3], node[1])
        if kind == "sub":
            return self.fields(self.pipe(node[1], dot), node[2], node[3], "(...)")
        if kind == "ident":
            return self.call(node[1], [], dot, node[2])
        raise TemplateError("template: : bad node")

    def fields(self, v, names: list[str], pos: int, start: str):
        path = start
        for name in names:
            path += "." + name
            if isinstance(v, dict):
                if name in v:
                    v = v[name]
                elif self.t.missingkey == "error":
                    raise self.err(pos, path, f'map has no entry for key "{name}"')
                else:
                    v = _MISSING
            elif v is None or v is _MISSING:
                raise self.err(pos, path, f"nil pointer evaluating interface {{}}.{name}")
            else:
                raise self.err(pos, path, f"can't evaluate field {name} in type {_type(v)}")
        return v


def _pos(node: tuple) -> int:
    return node[-1] if isinstance(node[-1], int) else 0


def _describe(cmds: list) -> str:
    node = cmds[0][0]
    if node[0] == "field":
        return "." + ".".join(node[1])
    if node[0] == "var":
        return node[1] + "".join("." + n for n in node[2])
    return str(node[1]) if node[0] in ("ident", "lit") else "(...)"


# --- Docker's format strings: "table", \t, and column alignment ------------------


def docker_format(fmt: str) -> tuple[bool, str]:
    """``--format`` as Docker prepares it: ("table" given?, the template text),
    the literal two-character escapes ``\\t`` and ``\\n`` made real."""
    table = fmt.startswith("table")
    text = fmt[len("table") :] if table else fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    return table, text


def render_rows(fmt: str, rows: list[dict], headers: dict[str, str]) -> str:
    """Docker's ``ps/images --format``: one line per row; with ``table`` a
    header line (the template run on the column names) and aligned columns."""
    table, text = docker_format(fmt)
    tmpl = Template(text)
    body = "".join(tmpl.execute(r) + "\n" for r in rows)
    if not table:
        return body
    head = tmpl.execute(headers, funcs=HEADER_FUNCS)
    return tabwrite(head + "\n" + body, minwidth=10, padding=3)


def tabwrite(text: str, minwidth: int, padding: int) -> str:
    """Go's tabwriter (padchar ' '): tab-terminated cells aligned in columns,
    each column max(minwidth, widest cell + padding) wide."""
    lines = text.split("\n")
    cells = [ln.split("\t") for ln in lines]
    widths: dict[int, int] = {}
    for row in cells:
        for j, cell in enumerate(row[:-1]):
            widths[j] = max(widths.get(j, minwidth), len(cell) + padding)
    return "\n".join("".join(c.ljust(widths[j]) for j, c in enumerate(row[:-1])) + row[-1] for row in cells)
