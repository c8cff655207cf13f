import os
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
