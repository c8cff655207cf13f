"""Error disclosure: stack traces (per language), framework debug pages, SQL error messages.

The shared pass finds cheap *anchors* (a traceback header, one frame line, a debug-page title,
a driver's error text); the detector then confirms on the whole text of that location with
the language's frame grammar, and requires real structure: a Python traceback needs a frame
in a real file (``File "/app/x.py", line 3``; ``<stdin>`` examples do not count), Java and .NET
need two frames or one frame plus the exception line, and so on.  Prose that names an
exception ("raises a ValueError", "a NullPointerException means ...") has no frames and stays
quiet; documentation pages lose their code blocks before scanning (see context).  Each finding
names the language or framework (``kind``) and shows the exception line and first source
file, scrubbed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from .base import API8, Base, Finding
from .redaction import scrub

# ---- stack traces --------------------------------------------------------------------------
ANCHORS = {  # short: an anchor must not swallow text other patterns need (the pass is non-overlapping)
    "tr_py": r"Traceback \(most recent call last\)|\bFile \"(?=[^\"\n\x00]{1,400}\", line \d)"
    r"|\bFile (?=/[^\s,\x00]{1,400}\.pyw?,\s+line \d)",
    "tr_jvm": r"\bat (?=[\w$/.-]+\.[\w$<>-]+\((?:[\w$-]+\.(?:java|kt|scala|groovy|clj)\b|Native Method"
    r"|Unknown Source))|Exception in thread \"",
    "tr_net": r"\bat (?=[\w.`<>\[\], -]+\([^()\n\x00]*\) in [^\n\x00]+:line \d)"
    r"|--- End of (?:inner exception )?stack trace|\bat System\.|\n\s*\[\w*Exception: ",
    "tr_node": r"\bat (?=(?:[^\s()\x00]+ (?:\[as [^\]\n]+\] )?)?\(?(?:/|[A-Za-z]:\\|file://|node:)[^\s()\x00]*"
    r":\d+:\d+)",
    "tr_php": r"\b(?:Fatal error|Warning|Notice|Parse error|Deprecated|Catchable fatal error)\s*:\s"
    r"|Stack trace:\s*#0 |#\d+ (?=\S{1,400}\.php\(\d+\): )"
    r"|\b[A-Z]\w*(?:Exception|Error): (?=[^\x00\n]{1,600}? in (?:file )?\S{1,400}?\.php\b)",
    "tr_ruby": r"\.rb:\d+:in [`']",
    "tr_go": r"goroutine \d+ \[[\w ,]+\]:|\bpanic: ",
    "tr_rust": r"thread '[^'\n\x00]*' panicked at",
}

PY_FRAME = re.compile(r"\bFile \"?([^\"\n,]{1,400}?)\"?,\s+line (\d+)")
PY_EXC = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault)[\w]*)(?::.*)?$", re.M)
JVM_FRAME = re.compile(
    r"^\s*at [\w$/.-]+\.[\w$<>-]+\((?:[\w$-]+\.(?:java|kt|scala|groovy|clj)(?::\d+)?|Native "
    r"Method|Unknown Source)\)",
    re.M,
)
JVM_EXC = re.compile(
    r"^(?:Caused by: |Exception in thread \"[^\"]*\" )?([a-zA-Z_$][\w$]*(?:\.[\w$]+)*"
    r"(?:Exception|Error|Throwable)[\w$]*)(?::.*)?$",
    re.M,
)
NET_FRAME = re.compile(
    r"^\s*(?:at )?[\w.`<>\[\],]+\.[\w`<>\[\],]+\([^()\n]*\)(?: in [^\n]+:line \d+| \+\d+)?\s*$", re.M
)
NET_EXC = re.compile(r"^\[?((?:System|Microsoft)(?:\.\w+)*\.\w*Exception|\w+Exception)(?::|\])", re.M)
NODE_FRAME = re.compile(
    r"^\s*at (?:[^\s()]+ (?:\[as [^\]\n]+\] )?)?\(?(?:(?:/|[A-Za-z]:\\|file://|node:)[^\s()]*"
    r":\d+:\d+|<anonymous>)\)?\s*$",
    re.M,
)
NODE_EXC = re.compile(r"^(?:Uncaught )?([A-Z]\w*Error|Error)(?: \[\w+\])?:", re.M)
PHP_ERR = re.compile(
    r"(Fatal error|Warning|Notice|Parse error|Deprecated|Catchable fatal error|[A-Z]\w*(?:Exception"
    r"|Error))\s*:\s+(.{1,600}?) in (?:file )?(\S{1,400}?\.(?:php|inc|phtml))(?::(\d+)| on line (\d+))",
    re.S,
)
RUBY_FRAME = re.compile(r"[\w./-]+\.rb:\d+:in [`'][^'\n]+'")
GO_FRAME = re.compile(r"^\s+\S+\.go:\d+(?: \+0x[0-9a-f]+)?$", re.M)
RUST_AT = re.compile(r"panicked at (?:'[^'\n]*', )?([\w./-]+\.rs):\d+:\d+")
FAKE_FILE = re.compile(r"^<[^>]*>$|^\(?(?:stdin|string|console|input|doctest|ipython)")


def _exc_line(rx: re.Pattern, text: str) -> str:
    m = rx.search(text)
    return m.group(0) if m else ""


class StackTrace(Base):
    name = "errors.stack_trace"
    category = API8
    needs = {
        "tr_py": ("Traceback", "File "),
        "tr_jvm": (
            ".java",
            ".kt",
            ".scala",
            ".groovy",
            ".clj",
            "Native Method",
            "Unknown Source",
            "Exception in thread",
        ),
        "tr_net": ("--- End of", "Exception", ":line "),
        "tr_node": ("(/", "at /", "(node:", "at node:", "(file:", "at file:", ":\\"),
        "tr_php": (".php",),
        "tr_ruby": (".rb:",),
        "tr_go": ("goroutine", "panic: "),
        "tr_rust": ("panicked at",),
    }
    # what every anchor match contains (the prefilters above are not all necessary: ".NET's
    # "at System." frames and PHP's "Warning: ..." lines carry none of them)
    necessary = {
        "tr_py": ("Traceback (most recent call last)", 'File "', "File /"),
        "tr_jvm": (
            ".java",
            ".kt",
            ".scala",
            ".groovy",
            ".clj",
            "Native Method",
            "Unknown Source",
            'Exception in thread "',
        ),
        "tr_net": ("--- End of", "Exception: ", ":line ", "at System."),
        "tr_node": ("at ",),
        "tr_php": (".php", "atal error", "Warning", "Notice", "Parse error", "Deprecated", "Stack trace:"),
        "tr_ruby": (".rb:",),
        "tr_go": ("goroutine ", "panic: "),
        "tr_rust": ("panicked at",),
    }
    patterns = ANCHORS
    reads = tuple(ANCHORS)

    def detect(self, ctx) -> Iterator[Finding]:
        done = set()
        for group in ANCHORS:
            for h in ctx.hits(group):
                loc = h.leaf.location
                if loc in done or h.leaf.side != "response" or h.leaf.part not in ("body", "header"):
                    continue
                text = ctx.text_at(loc) if "$" in loc else h.leaf.value
                got = CONFIRM[group](text)
                if got:
                    done.add(loc)
                    kind, evidence = got
                    yield self.finding(
                        ctx,
                        loc,
                        kind,
                        scrub(evidence),
                        None,
                        confidence="high" if ctx.status >= 500 else "medium",
                    )


def _python(text: str):
    frames = [(f, ln) for f, ln in PY_FRAME.findall(text)]
    # a server's frames name files with a directory ("/srv/app/views.py", "app/views.py");
    # "<stdin>" and bare "prog.py" are what tutorials show
    real = [f for f, _ in frames if not FAKE_FILE.match(f.strip()) and ("/" in f or "\\" in f)]
    if not real or not ("Traceback (most recent call last)" in text or len(frames) >= 2):
        return None
    exc = ""
    frames_iter = list(PY_FRAME.finditer(text))
    last = frames_iter[-1] if frames_iter else None
    for line in text[last.end() :].splitlines()[1:] if last else ():
        if line.strip() and not line[:1].isspace() and not line.startswith(("File ", "During ", "The above")):
            exc = line  # the first unindented line after the last frame names the exception
            break
    if not exc:
        for m in PY_EXC.finditer(text):
            exc = m.group(0)
    return "python", f"{exc.strip()[:160]} ({real[-1].strip()})"


def _jvm(text: str):
    frames = JVM_FRAME.findall(text)
    exc = _exc_line(JVM_EXC, text)
    if len(frames) >= 2 or (frames and exc):
        return "java", f"{exc.strip()[:160]} ({frames[0].strip()[3:][:120]})"
    return None


def _dotnet(text: str):
    frames = [f for f in NET_FRAME.findall(text) if not JVM_FRAME.match(f)]
    exc = _exc_line(NET_EXC, text)
    if len(frames) >= 2 or (frames and exc) or ("--- End of" in text and exc):
        return "dotnet", f"{exc.strip()[:160]} ({frames[0].strip()[:120] if frames else ''})"
    return None


def _node(text: str):
    frames = NODE_FRAME.findall(text)
    exc = _exc_line(NODE_EXC, text)
    real = [f for f in frames if "<anonymous>" not in f or "(" in f]
    if len(real) >= 2 or (real and exc):
        return "nodejs", f"{exc.strip()[:160]} ({real[0].strip()[3:][:120]})"
    return None


def _php(text: str):
    m = PHP_ERR.search(text)
    if m:
        line = m.group(4) or m.group(5)
        return "php", f"PHP {m.group(1)}: {m.group(2)[:120]} in {m.group(3)}:{line}"
    if re.search(r"Stack trace:\s*#0 |#\d+ \S+\.php\(\d+\): ", text) and re.search(r"\.php\b", text):
        return "php", "PHP stack trace"
    return None


def _ruby(text: str):
    frames = RUBY_FRAME.findall(text)
    exc = _exc_line(re.compile(r"^\w+(?:::\w+)*(?:Error|Exception)\b.*$", re.M), text)
    if len(frames) >= 2 or (frames and exc):
        return "ruby", f"{exc.strip()[:160]} ({frames[0][:120]})"
    return None


def _go(text: str):
    frames = GO_FRAME.findall(text)
    if not frames:
        return None
    m = re.search(r"^panic: .*$", text, re.M)
    head = m.group(0) if m else (re.search(r"goroutine \d+ \[[\w ,]+\]:", text) or [""])[0]
    if ("goroutine" in text or m) and frames:
        return "go", f"{head[:160]} ({frames[0].strip()[:120]})"
    return None


def _rust(text: str):
    m = RUST_AT.search(text)
    if m:
        return "rust", f"panic at {m.group(1)}"
    return None


CONFIRM = {
    "tr_py": _python,
    "tr_jvm": _jvm,
    "tr_net": _dotnet,
    "tr_node": _node,
    "tr_php": _php,
    "tr_ruby": _ruby,
    "tr_go": _go,
    "tr_rust": _rust,
}


# ---- framework debug pages -----------------------------------------------------------------
DEBUG_PAGES = [  # (kind, anchor regex, severity)
    ("werkzeug_debugger", r"Werkzeug Debugger|\?__debugger__=yes", "high"),
    ("django_debug", r"seeing this error because you have\s+DEBUG = True", "high"),
    ("starlette_debug", r"Starlette Debugger", "medium"),
    ("laravel_whoops", r"Whoops! There was an error|Whoops\\Handler|Ignition\\|window\.ignite\b", "high"),
    ("rails_debug", r"Action Controller: Exception caught", "high"),
    ("spring_whitelabel", r"Whitelabel Error Page", "medium"),
    ("aspnet_yellow_screen", r"Server Error in '[^'\n]*' Application", "medium"),
    ("symfony_debug", r"Symfony Exception|sf-toolbar-block|symfony/error-handler", "high"),
    ("tomcat_error_report", r"Apache Tomcat/[\d.]+ - Error report", "medium"),
    ("phpinfo", r"phpinfo\(\)", "high"),
    ("go_pprof", r"Types of profiles available", "medium"),
]
_DEBUG_RX = [(k, re.compile(p), s) for k, p, s in DEBUG_PAGES]


class DebugPage(Base):
    name = "errors.debug_page"
    category = API8
    needs = {
        "dbg": (
            "Werkzeug Debugger",
            "__debugger__",
            "DEBUG = True",
            "Starlette",
            "Whoops",
            "Ignition",
            "ignite",
            "Action Controller",
            "Whitelabel",
            "Server Error in",
            "Symfony",
            "sf-toolbar",
            "symfony",
            "Tomcat",
            "phpinfo",
            "profiles available",
        )
    }
    necessary = needs
    patterns = {"dbg": "|".join(f"(?:{p})" for _, p, _ in DEBUG_PAGES)}
    reads = ("dbg",)

    def detect(self, ctx) -> Iterator[Finding]:
        for h in ctx.hits("dbg"):
            leaf = h.leaf
            if leaf.side != "response" or leaf.part != "body":
                continue
            kind, sev = next(((k, s) for k, rx, s in _DEBUG_RX if rx.match(h.text)), (None, None))
            if kind is None or not self._confirm(kind, leaf.value, ctx):
                continue
            yield self.finding(ctx, leaf.location, kind, f"{kind.replace('_', ' ')} page", None, severity=sev)
            return  # one debug page per response

    @staticmethod
    def _confirm(kind: str, text: str, ctx) -> bool:
        if kind == "spring_whitelabel":
            return bool(JVM_FRAME.search(text))  # the page only leaks when it shows the trace
        if kind == "phpinfo":
            return "PHP Version" in text and "Configuration" in text and "PHP License" in text
        if kind == "go_pprof":
            return "goroutine" in text and "heap" in text
        if kind == "aspnet_yellow_screen":
            return "Stack Trace" in text or "Version Information" in text or "Source Error" in text
        return True


# ---- SQL errors ----------------------------------------------------------------------------
# Exception class names only count when a message follows ("X: text"); a page that names the
# class ("catch sqlite3.IntegrityError") is documentation, not an error.
_MSG = r"(?=: \S)"
SQL_SIGNATURES = [
    (
        "mysql",
        r"You have an error in your SQL syntax"
        r"|check the manual that (?:corresponds to|fits) your (?:MySQL|MariaDB)"
        r"|\bmysql_(?:fetch_\w+|num_rows|query|connect|result)\(\)"
        r"|Unknown column '[^'\n]{1,100}' in '|Table '[^'\n]{1,100}' doesn't exist|\bERROR \d{4} \(\w{5}\):"
        r"|(?:MySQLSyntaxErrorException|com\.mysql\.(?:cj\.)?jdbc\.[\w.]+|MySql(?:Data\.)?\w*Exception"
        r"|mysqli_sql_exception|pymysql\.err\.\w+|MySQLdb\.\w*Error)" + _MSG,
    ),
    (
        "postgresql",
        r"syntax error at or near \"|\bpg_(?:query|exec|prepare)\(\)"
        r"|relation \"[^\"\n]{1,100}\" does not exist"
        r"|column \"[^\"\n]{1,100}\" (?:of relation \"[^\"\n]{1,100}\" )?does not exist"
        r"|duplicate key value violates unique constraint|invalid input syntax for (?:type )?\w+"
        r"|unterminated quoted string at or near|current transaction is aborted, commands ignored"
        r"|(?:[\w.]*PSQLException|psycopg2?\.(?:errors\.)?\w+|PG::\w+|Npgsql\.\w*Exception)" + _MSG,
    ),
    (
        "sqlite",
        r"SQLITE_(?:ERROR|CONSTRAINT|BUSY|LOCKED|MISMATCH)\b|no such table: [\w.]+|no such column: [\w.]+"
        r"|near \"[^\"\n]{1,60}\": syntax error|unrecognized token: \""
        r"|(?:sqlite3\.(?:OperationalError|IntegrityError|DatabaseError|ProgrammingError)|SQLite3::\w+Exception"
        r"|[\w.]*SQLiteException)" + _MSG,
    ),
    (
        "mssql",
        r"Unclosed quotation mark after the character string|Incorrect syntax near '"
        r"|Microsoft OLE DB Provider for (?:SQL Server|ODBC Drivers)"
        r"|\[Microsoft\]\[ODBC [^\]\n]{0,40}Driver\]|\bMsg \d+, Level \d+, State \d+"
        r"|(?:System|Microsoft)\.Data\.SqlClient\.SqlException" + _MSG,
    ),
    (
        "oracle",
        r"\bORA-\d{5}:|\bPLS-\d{5}:|quoted string not properly terminated"
        r"|(?:oracle\.jdbc\.[\w.]+|[\w.]*OracleException)" + _MSG,
    ),
    (
        "sql",
        r"SQLSTATE\[\w{5}\]"
        r"|(?:java\.sql\.SQL\w*Exception|sqlalchemy\.exc\.\w+Error|django\.db\.utils\.\w+Error"
        r"|ActiveRecord::(?:StatementInvalid|RecordNotUnique)|org\.hibernate\.exception\.\w+"
        r"|SequelizeDatabaseError)" + _MSG + r"|\((?:sqlite3|psycopg2?|pymysql|MySQLdb)\.[\w.]+\) \S",
    ),
]
_SQL_RX = [(k, re.compile(p)) for k, p in SQL_SIGNATURES]


class SqlError(Base):
    name = "errors.sql_error"
    category = API8
    needs = {
        "sql": (
            "SQL",
            "sql",
            "Sql",
            "ORA-",
            "PLS-",
            'relation "',
            "column",
            "syntax error",
            "duplicate key",
            "invalid input syntax",
            "unterminated quoted",
            "transaction is aborted",
            "Unclosed quotation",
            "Incorrect syntax",
            "OLE DB",
            "ODBC",
            "Msg ",
            "quoted string",
            "racle",
            "PG::",
            "pg_",
            "psycopg",
            "no such table",
            "Table '",
            "ERROR ",
            "PDO",
            "hibernate",
            "Sequelize",
            "ActiveRecord",
            "django.db",
            "unrecognized token",
        )
    }
    necessary = {"sql": (*needs["sql"], "check the manual")}  # MariaDB's message names no SQL
    patterns = {"sql": "|".join(f"(?:{p})" for _, p in SQL_SIGNATURES)}
    reads = ("sql",)

    def detect(self, ctx) -> Iterator[Finding]:
        seen = set()
        for h in ctx.hits("sql"):
            leaf = h.leaf
            if leaf.location in seen or leaf.side != "response" or leaf.part not in ("body", "header"):
                continue
            kind = next((k for k, rx in _SQL_RX if rx.match(h.text)), "sql")
            if kind == "sql":  # generic marker: name the engine if the text says which
                for k, rx in _SQL_RX[:-1]:
                    if rx.search(leaf.value):
                        kind = k
                        break
            seen.add(leaf.location)
            line_start = leaf.value.rfind("\n", 0, h.start) + 1
            line_end = leaf.value.find("\n", h.end)
            line = leaf.value[line_start : line_end if line_end >= 0 else None]
            yield self.finding(ctx, leaf.location, kind, scrub(line, 200), None, severity="medium")


DETECTORS = [StackTrace(), DebugPage(), SqlError()]
