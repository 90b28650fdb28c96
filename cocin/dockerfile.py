"""Reading a Dockerfile exactly as Docker's parser does (moby/buildkit ``frontend/dockerfile``).

A Dockerfile is read in two passes, and the split matters:

1. **Lines into instructions** (``parse``). Parser *directives* come first:
   comment lines of the form ``# name=value`` at the very top (``syntax``,
   ``escape``); the first line that is not one ends them, so a directive
   after a blank line or an instruction is a plain comment. ``escape``
   picks the escape character (``\\`` or a backtick, handy on Windows).
   Then each line: comments (``#`` as the first non-blank character) are
   dropped, an escape character at the very end of a line continues the
   instruction on the next line (comment lines inside a continuation are
   skipped), and the instruction's first word is its name (any case).
   Words starting ``--`` right after it are flags (``COPY --from=build``).
   What remains is read in the instruction's own way: ``RUN``, ``CMD``,
   ``ENTRYPOINT`` and ``SHELL`` take a JSON array of strings (*exec form*,
   no shell involved) or else the raw text (*shell form*, later run by
   ``/bin/sh -c``); ``COPY``, ``ADD`` and ``VOLUME`` a JSON array or
   whitespace-separated words; ``ENV`` and ``LABEL`` ``key=value`` pairs
   (or the old ``ENV key the rest``); and so on.

2. **Words through the shell lexer** (``Lexer``), when an instruction runs,
   with the variables known at that point: ``$VAR``, ``${VAR}``,
   ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:+alt}``, ``${VAR+alt}``,
   ``${VAR:?message}``, single quotes (literal), double quotes (``$``
   expands), the escape character. Only the instructions Docker lists
   expand variables (``ADD COPY ENV EXPOSE FROM LABEL STOPSIGNAL USER
   VOLUME WORKDIR`` and ``ARG``); a ``RUN`` leaves ``$HOME`` to its shell.

Variables come from ``ENV`` (kept in the image) and ``ARG`` (only while
building). An ``ARG`` before the first ``FROM`` is visible to ``FROM`` lines
only; inside a stage it must be declared again (``ARG NAME``, taking the
global default) to be used. ``--build-arg`` gives values to declared ARGs,
and the proxy variables (``HTTP_PROXY``, ``no_proxy``, ...) are predefined.
"""

from __future__ import annotations

import json
import re

from .state import CocinError

ESCAPE = "\\"
INSTRUCTIONS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)
# Docker's "environment replacement" list (plus ARG, whose values expand too).
EXPANDS = frozenset({"ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"})
PROXY_ARGS = (
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)
FLAGS = {
    "ADD": ("chown", "chmod"),
    "COPY": ("chown", "chmod", "from"),
    "FROM": ("platform",),
    "HEALTHCHECK": ("interval", "timeout", "start-period", "retries"),
}
_DIRECTIVE = re.compile(r"^#[ \t]*([a-zA-Z][a-zA-Z0-9]*)[ \t]*=[ \t]*(.+?)[ \t]*$")
_WS = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"(^|\s)<<-?\s*[\"']?[A-Za-z_][A-Za-z0-9_]*[\"']?(\s|$)")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")


class DockerfileError(CocinError):
    """A Dockerfile that cannot be read; the message names the line."""

    exit_code = 1  # as docker build fails

    def __init__(self, line: int, text: str, name: str = "Dockerfile"):
        super().__init__(f"{name}:{line}: {text}" if line else f"{name}: {text}")
        self.line, self.text = line, text


class Instruction:
    """One instruction: ``cmd`` (upper case), its ``flags`` (``--name=value``),
    ``args`` (words, or one raw text for the shell forms), ``json`` (exec form),
    ``line`` (where it starts) and ``original`` (the joined line)."""

    def __init__(self, cmd, args, flags, json_form, line, original, sub=None):
        self.cmd, self.args, self.flags, self.json = cmd, args, flags, json_form
        self.line, self.original, self.sub = line, original, sub

    @property
    def text(self) -> str:
        """The raw argument text (``rest`` of the line after the flags)."""
        return self.args[0] if self.args else ""

    def __repr__(self) -> str:
        return f"<{self.cmd} {self.args!r} flags={self.flags} json={self.json} line={self.line}>"


class Stage:
    """A ``FROM`` and the instructions after it."""

    def __init__(self, base: str, name: str | None, platform: str | None, line: int, index: int):
        self.base, self.name, self.platform, self.line, self.index = base, name, platform, line, index
        self.instructions: list[Instruction] = []
        self.from_instruction: Instruction | None = None


class Dockerfile:
    """The parsed file: directives, the ARGs before the first FROM, the stages."""

    def __init__(self):
        self.directives: dict[str, str] = {}
        self.escape = ESCAPE
        self.meta_args: list[Instruction] = []
        self.stages: list[Stage] = []
        self.warnings: list[str] = []

    def stage(self, name: str) -> Stage | None:
        name = name.lower()
        for s in self.stages:
            if s.name == name:
                return s
        return None


# --- pass 1: lines ---------------------------------------------------------------------


def _is_comment(line: str) -> bool:
    return line.lstrip(" \t").startswith("#")


def _trim_continuation(line: str, escape: str) -> tuple[str, bool]:
    """(line without a trailing escape char, whether the instruction ends here)."""
    stripped = line.rstrip(" \t")
    if stripped.endswith(escape):
        return stripped[: -len(escape)], False
    return line, True


def _logical_lines(text: str, df: Dockerfile, name: str):
    """(start line, joined text) per instruction; directives go to ``df``."""
    lines = text.split("\n")
    if lines and lines[0].startswith("\ufeff"):
        lines[0] = lines[0][1:]
    directives_done = False
    i = 0
    while i < len(lines):
        raw = lines[i].rstrip("\r")
        i += 1
        token = raw.lstrip(" \t")
        if not directives_done:
            m = _DIRECTIVE.match(token)
            key = m.group(1).lower() if m else None
            if key in ("syntax", "escape", "check"):
                if key in df.directives:
                    raise DockerfileError(i, f"only one {key} parser directive can be used", name)
                df.directives[key] = m.group(2)
                if key == "escape":
                    if m.group(2) not in ("\\", "`"):
                        raise DockerfileError(i, f"invalid escape token '{m.group(2)}' does not match ` or \\", name)
                    df.escape = m.group(2)
                continue
            directives_done = True
        if _is_comment(token):
            continue
        start = i
        line, end = _trim_continuation(token, df.escape)
        if end and line.strip() == "":
            continue
        empty_continuation = False
        while not end and i < len(lines):
            raw = lines[i].rstrip("\r")
            i += 1
            if _is_comment(raw):
                continue
            if raw.strip(" \t") == "":
                empty_continuation = True
                continue
            more, end = _trim_continuation(raw, df.escape)
            line += more
        if empty_continuation:
            df.warnings.append(f"[WARNING]: Empty continuation line found in:\n    {line}")
        yield start, line


def _split_flags(line: str) -> tuple[list[str], str]:
    """Leading ``--flag[=value]`` words (buildkit's extractBuilderFlags) and the rest."""
    words: list[str] = []
    pos, n = 0, len(line)
    while True:
        while pos < n and line[pos].isspace():
            pos += 1
        if pos >= n or not line.startswith("--", pos):
            return words, line[pos:]
        word, quote, blank_ok = "", None, False
        while pos < n:
            ch = line[pos]
            if quote:
                if ch == quote:
                    quote = None
                elif ch == "\\" and pos + 1 < n:
                    pos += 1
                    word += line[pos]
                elif ch != "\\":
                    word += ch
                pos += 1
                continue
            if ch.isspace():
                break
            if ch in "'\"":
                quote, blank_ok = ch, True
            elif ch == "\\":
                if pos + 1 < n:
                    pos += 1
                    word += line[pos]
            else:
                word += ch
            pos += 1
        if word == "--":
            return words, line[pos:].lstrip()
        if blank_ok or word:
            words.append(word)


def parse_words(rest: str, escape: str = ESCAPE) -> list[str]:
    """Words split on blanks outside quotes, quotes and escapes kept (buildkit's parseWords)."""
    words: list[str] = []
    word, quote, in_word, blank_ok = "", None, False, False
    i, n = 0, len(rest)
    while i < n:
        ch = rest[i]
        if not in_word:
            if ch.isspace():
                i += 1
                continue
            in_word = True
        if quote is None:
            if ch.isspace():
                if blank_ok or word:
                    words.append(word)
                word, in_word, blank_ok = "", False, False
                i += 1
                continue
            if ch in "'\"":
                quote, blank_ok = ch, True
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                word += ch
                i += 1
                ch = rest[i]
            word += ch
            i += 1
            continue
        if ch == quote:
            quote = None
        if ch == escape and quote != "'":
            if i + 1 == n:
                quote = None
                i += 1
                continue
            word += ch
            i += 1
            ch = rest[i]
        word += ch
        i += 1
    if in_word and (blank_ok or word):
        words.append(word)
    return words


def _json_array(rest: str):
    """A JSON array of strings at the start of ``rest`` (trailing text ignored, as
    Go's json.Decoder does), or None when ``rest`` is not one."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value, _end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(v, str) for v in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _instruction(line_no: int, line: str, df: Dockerfile, name: str, nested: bool = False) -> Instruction:
    parts = _WS.split(line.strip(), 1)
    word = parts[0]
    cmd = word.upper()
    flags_words, rest = _split_flags(parts[1]) if len(parts) == 2 else ([], "")
    rest = rest.strip()
    if cmd not in INSTRUCTIONS:
        raise DockerfileError(line_no, f"unknown instruction: {cmd}", name)
    allowed = FLAGS.get(cmd, ())
    flags: dict[str, str] = {}
    for fw in flags_words:
        key, eq, value = fw[2:].partition("=") if fw.startswith("--") else (fw, "", "")
        if key in ("mount", "network", "security", "link", "parents", "exclude", "keep-git-dir", "checksum"):
            raise DockerfileError(line_no, f"the --{key} option requires BuildKit", name)
        if key not in allowed:
            raise DockerfileError(line_no, f"Unknown flag: {key}", name)
        if not eq:
            raise DockerfileError(line_no, f"Missing a value on flag: --{key}", name)
        if key in flags:
            raise DockerfileError(line_no, f"Duplicate flag specified: {key}", name)
        flags[key] = value

    def need(ok: bool, text: str) -> None:
        if not ok:
            raise DockerfileError(line_no, text, name)

    def maybe_json() -> tuple[list[str], bool]:
        try:
            arr = _json_array(rest)
        except ValueError as e:
            raise DockerfileError(line_no, str(e), name) from None
        return (arr, True) if arr is not None else ([rest] if rest else [], False)

    args: list[str]
    is_json = False
    sub = None
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "SHELL"):
        args, is_json = maybe_json()
        if cmd in ("RUN", "CMD", "ENTRYPOINT") and not is_json:
            need(bool(rest) or cmd != "RUN", f"{cmd} requires at least one argument")
        if cmd == "SHELL":
            need(is_json, "SHELL requires the arguments to be in JSON form")
            need(bool(args), "SHELL requires at least one argument")
        if cmd == "RUN" and not is_json and _HEREDOC.search(rest):
            need(False, "heredocs (<<EOF) are not supported: write the file with COPY or use printf in RUN")
    elif cmd in ("COPY", "ADD", "VOLUME"):
        try:
            arr = _json_array(rest)
        except ValueError as e:
            raise DockerfileError(line_no, str(e), name) from None
        args, is_json = (arr, True) if arr is not None else (_WS.split(rest) if rest else [], False)
        if cmd == "VOLUME":
            need(bool(args), "VOLUME requires at least one argument")
        else:
            if not is_json and _HEREDOC.search(rest):
                need(False, "heredocs (<<EOF) are not supported: copy a file from the context instead")
            need(
                len(args) >= 2,
                f"{cmd} requires at least two arguments, but only one was provided. Destination could not be determined"
                if len(args) == 1
                else f"{cmd} requires at least two arguments",
            )
    elif cmd in ("ENV", "LABEL"):
        words = parse_words(rest, df.escape)
        need(
            bool(words),
            f"{cmd} requires at least one argument" if cmd == "ENV" else "LABEL requires at least one argument",
        )
        if "=" not in words[0]:
            kv = _WS.split(rest, 1)
            need(len(kv) == 2, f"{cmd} must have two arguments")
            args = [kv[0], kv[1]]
        else:
            args = []
            for w in words:
                need("=" in w, f"Syntax error - can't find = in {json.dumps(w)}. Must be of the form: name=value")
                k, _, v = w.partition("=")
                need(bool(k), f"{cmd} names can not be blank")
                args += [k, v]
    elif cmd == "ARG":
        args = parse_words(rest, df.escape)
        need(bool(args), "ARG requires at least one argument")
        for w in args:
            need(not w.startswith("="), "ARG names can not be blank")
    elif cmd in ("FROM", "EXPOSE"):
        args = _WS.split(rest) if rest else []
        if cmd == "FROM":
            need(len(args) in (1, 3), "FROM requires either one or three arguments")
            if len(args) == 3:
                need(args[1].lower() == "as", "FROM requires either one or three arguments")
                need(
                    bool(_STAGE_NAME.match(args[2].lower())),
                    f"invalid name for build stage: {json.dumps(args[2])}, "
                    "name can't start with a number or contain symbols",
                )
        else:
            need(bool(args), "EXPOSE requires at least one argument")
    elif cmd in ("USER", "WORKDIR", "STOPSIGNAL", "MAINTAINER"):
        need(bool(rest), f"{cmd} requires exactly one argument")
        args = [rest]
    elif cmd == "HEALTHCHECK":
        need(bool(rest), "HEALTHCHECK requires at least one argument")
        typ = _WS.split(rest, 1)[0]
        more = rest[len(typ) :].strip()
        if typ.upper() == "NONE":
            need(not more, "HEALTHCHECK NONE takes no arguments")
            args = ["NONE"]
        elif typ.upper() == "CMD":
            arr = _json_array(more) if more else None
            is_json = arr is not None
            args = ["CMD"] + (arr if is_json else [more] if more else [])
            need(len(args) > 1, "Missing command after HEALTHCHECK CMD")
        else:
            need(False, f'Unknown type "{typ.upper()}" in HEALTHCHECK (try CMD)')
    else:  # ONBUILD
        need(not nested, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        need(bool(rest), "ONBUILD requires at least one argument")
        sub_cmd = _WS.split(rest, 1)[0].upper()
        if sub_cmd == "ONBUILD":
            need(False, "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if sub_cmd in ("FROM", "MAINTAINER"):
            need(False, f"{sub_cmd} isn't allowed as an ONBUILD trigger")
        sub = _instruction(line_no, rest, df, name, nested=True)
        args = [rest]
    return Instruction(cmd, args, flags, is_json, line_no, line.strip(), sub)


def parse(text: str, name: str = "Dockerfile") -> Dockerfile:
    """Parse the Dockerfile ``text`` (``name`` for the messages) into stages."""
    df = Dockerfile()
    current: Stage | None = None
    count = 0
    for line_no, line in _logical_lines(text, df, name):
        count += 1
        ins = _instruction(line_no, line, df, name)
        if ins.cmd == "FROM":
            args = ins.args
            current = Stage(
                args[0], args[2].lower() if len(args) == 3 else None, ins.flags.get("platform"), line_no, len(df.stages)
            )
            if current.name and df.stage(current.name):
                raise DockerfileError(line_no, f"duplicate name {current.name}", name)
            current.from_instruction = ins
            df.stages.append(current)
        elif current is None:
            if ins.cmd != "ARG":
                raise DockerfileError(line_no, "no build stage in current context", name)
            df.meta_args.append(ins)
        else:
            current.instructions.append(ins)
    if not count:
        raise DockerfileError(0, "the Dockerfile cannot be empty", name)
    if not df.stages:
        raise DockerfileError(0, "no build stage in the Dockerfile (it needs a FROM)", name)
    return df


# --- pass 2: words -----------------------------------------------------------------


class LexError(CocinError):
    pass


_SPECIAL = frozenset("@*#?-$!0")


class Lexer:
    """buildkit's shell lexer (``shell/lex.go``): quotes, escapes and ``$`` expansion
    of one word, with the variables ``env`` (a dict)."""

    def __init__(self, escape: str = ESCAPE):
        self.escape = escape

    def process_word(self, word: str, env: dict[str, str]) -> str:
        return self._run(word, env)[0]

    def process_words(self, word: str, env: dict[str, str]) -> list[str]:
        """The word split into several where an unquoted expansion holds blanks (EXPOSE)."""
        return self._run(word, env)[1]

    def _run(self, word: str, env: dict[str, str]) -> tuple[str, list[str]]:
        self.src, self.pos, self.env = word, 0, env
        return self._until(None)

    # scanner
    def _peek(self) -> str | None:
        return self.src[self.pos] if self.pos < len(self.src) else None

    def _next(self) -> str | None:
        ch = self._peek()
        if ch is not None:
            self.pos += 1
        return ch

    def _until(self, stop: str | None) -> tuple[str, list[str]]:
        out: list[str] = []
        words: list[str] = []
        cur: list[str] = []
        in_word = False

        def flush() -> None:
            nonlocal cur, in_word
            if in_word:
                words.append("".join(cur))
            cur, in_word = [], False

        def add_char(c: str) -> None:
            nonlocal in_word
            if c.isspace():
                flush()
            else:
                cur.append(c)
                in_word = True

        def add_raw(s: str) -> None:
            nonlocal in_word
            cur.append(s)
            in_word = True

        while self._peek() is not None:
            ch = self._peek()
            if stop is not None and ch == stop:
                self._next()
                flush()
                return "".join(out), words
            if ch == "'":
                s = self._single()
                out.append(s)
                add_raw(s)
            elif ch == '"':
                s = self._double()
                out.append(s)
                add_raw(s)
            elif ch == "$":
                s = self._dollar()
                out.append(s)
                for c in s:
                    add_char(c)
            else:
                self._next()
                if ch == self.escape:
                    ch = self._next()
                    if ch is None:
                        break
                    add_raw(ch)
                else:
                    add_char(ch)
                out.append(ch)
        if stop is not None:
            raise LexError(f"unexpected end of statement while looking for matching {stop}")
        flush()
        return "".join(out), words

    def _single(self) -> str:
        self._next()
        out = []
        while True:
            ch = self._next()
            if ch is None:
                raise LexError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(out)
            out.append(ch)

    def _double(self) -> str:
        self._next()
        out = []
        while True:
            ch = self._peek()
            if ch is None:
                raise LexError("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self._next()
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = self._next()
            if ch == self.escape:
                nxt = self._peek()
                if nxt is None:
                    continue
                if nxt in ('"', "$", self.escape):
                    ch = self._next()
            out.append(ch)

    def _name(self) -> str:
        name = []
        while self._peek() is not None:
            ch = self._peek()
            if not name and ch.isdigit():
                while self._peek() is not None and self._peek().isdigit():
                    name.append(self._next())
                return "".join(name)
            if not name and ch in _SPECIAL:
                return self._next()
            if not (ch.isalnum() or ch == "_"):
                break
            name.append(self._next())
        return "".join(name)

    def _dollar(self) -> str:
        self._next()
        if self._peek() != "{":
            name = self._name()
            return self.env.get(name, "") if name else "$"
        self._next()
        if self._peek() is None:
            raise LexError("syntax error: missing '}'")
        if self._peek() in "{}:":
            raise LexError("syntax error: bad substitution")
        name = self._name()
        ch = self._next()
        if ch == "}":
            return self.env.get(name, "")
        colon = ch == ":"
        modifier = self._next() if colon else ch
        if modifier not in ("-", "+", "?"):
            if ch is None or modifier is None:
                raise LexError("syntax error: missing '}'")
            if not colon:
                raise LexError("missing ':' in substitution")
            raise LexError(f"unsupported modifier ({modifier}) in substitution")
        try:
            word, _ = self._until("}")
        except LexError:
            if self._peek() is None:
                raise LexError("syntax error: missing '}'") from None
            raise
        found = name in self.env
        value = self.env.get(name, "")
        set_ = found and (value != "" or not colon)  # ":" also treats empty as unset
        if modifier == "-":
            return value if set_ else word
        if modifier == "+":
            return word if set_ else ""
        if not set_:
            if not word:
                word = "is not allowed to be empty" if found else "is not allowed to be unset"
            raise LexError(f"{name}: {word}")
        return value


def expand(word: str, env: dict[str, str], escape: str = ESCAPE) -> str:
    return Lexer(escape).process_word(word, env)


def expand_words(word: str, env: dict[str, str], escape: str = ESCAPE) -> list[str]:
    return Lexer(escape).process_words(word, env)
