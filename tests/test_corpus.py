"""Accuracy on the shared oracle corpus (Zeek/Suricata expectations), scored with the
shared scorer's own matching code, in-process (same results as score_http.py)."""

import glob
import importlib.util
import json
import os

import pytest
from conftest import CORPUS, SHARED

from sensor.pipeline import transactions_from_files

SCORER = os.path.join(SHARED, "tools", "score_http.py")


def _scorer():
    if not os.path.exists(SCORER):
        pytest.skip("shared scorer not present")
    spec = importlib.util.spec_from_file_location("score_http", SCORER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results():
    score = _scorer()
    out = []
    for jf in sorted(glob.glob(os.path.join(CORPUS, "*.json"))):
        with open(jf) as f:
            oracle = json.load(f)
        pcap = os.path.join(CORPUS, oracle["pcap"])
        preds = [tx.to_json() for tx in transactions_from_files([pcap])]
        out.append(score.score_one(oracle, preds))
    if not out:
        pytest.skip("empty corpus")
    return score.aggregate(out), out


def test_corpus_recall_and_precision(results):
    total, per = results
    missed = [(r["name"], r["unmatched_expected"][:1]) for r in per if r["matched"] < r["expected"]]
    assert total["recall"] >= 0.95, missed
    assert total["precision_complete_oracles"] >= 0.97


def test_corpus_body_lengths(results):
    total, _ = results
    assert total["fields"]["response_body_len"]["accuracy"] >= 0.93
    assert total["fields"]["request_body_len"]["accuracy"] >= 0.88


def test_every_corpus_pcap_parses_without_error():
    for pcap in sorted(glob.glob(os.path.join(CORPUS, "*.pcap"))):
        transactions_from_files([pcap])  # must not raise
