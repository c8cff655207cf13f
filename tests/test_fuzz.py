"""The mutation fuzzer (tests/fuzz_corpus.py) over the real corpus captures: no input may make
an exception escape the sensor, hang it, or grow its memory past the bound."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from fuzz_corpus import fuzz, load_seeds

SCRIPT = os.path.join(ROOT, "tests", "fuzz_corpus.py")


def _check(s: dict) -> None:
    bad = {k: s[k] for k in ("crashes", "hangs", "memory_exceeded", "internal_errors")}
    assert bad == dict.fromkeys(bad, 0), json.dumps({**bad, "crash_samples": s["crash_samples"],
                                                      "hang_samples": s["hang_samples"],
                                                      "memory_samples": s["memory_samples"]}, indent=1)


@pytest.fixture(scope="module")
def seeds():
    from fuzz_corpus import find_seeds

    found = load_seeds(find_seeds())
    if len(found) < 20:
        pytest.skip("the shared corpus is not present")
    return found


def test_fuzz_small_budget(seeds):
    s = fuzz(budget=20, seed=20261129, timeout=10, mem_mb=512, seeds=seeds)
    _check(s)
    assert s["inputs"] >= 100 and s["packets"] > 0 and s["anomaly_kinds"] >= 20
    assert set(s["mutations"]) >= {"bitflip", "truncate", "record_length", "header_explosion", "syn_flood"}


def test_fuzz_script_prints_a_json_summary(seeds):
    r = subprocess.run([sys.executable, SCRIPT, "--budget-seconds", "3", "--seed", "5", "-q"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["seed"] == 5 and s["inputs"] > 0 and s["crashes"] == 0


@pytest.mark.slow
def test_fuzz_large_budget(seeds):
    s = fuzz(budget=300, seed=7, timeout=10, mem_mb=512, seeds=seeds)
    _check(s)
    assert s["inputs"] >= 3000
