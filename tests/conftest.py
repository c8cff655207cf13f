import os
import sqlite3
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.normpath(os.path.join(ROOT, "..", "shared"))
CORPUS = os.path.join(SHARED, "corpus", "http")
DATA = os.path.join(ROOT, "tests", "data")
PCAPS = os.path.join(ROOT, "pcaps")

if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def corpus_path(name: str) -> str:
    path = os.path.join(CORPUS, name)
    if not os.path.exists(path):
        pytest.skip(f"shared corpus not present: {path}")
    return path


def all_text(db_path: str):
    """(table, column, text) for every text or blob cell of every table of a SQLite file."""
    con = sqlite3.connect(db_path)
    try:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            cols = [r[1] for r in con.execute(f'PRAGMA table_info("{table}")')]
            for row in con.execute(f'SELECT * FROM "{table}"'):
                for col, v in zip(cols, row):
                    if isinstance(v, bytes):
                        v = v.decode("latin-1")
                    if isinstance(v, str):
                        yield table, col, v
    finally:
        con.close()
