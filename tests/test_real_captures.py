"""Real servers on loopback, captured with tcpdump (tests/captures/make_captures.py): the
sensor must report exactly what the client itself observed (tests/data/<scenario>.json)."""

import glob
import hashlib
import json
import os

import pytest
from conftest import DATA

from sensor.pipeline import transactions_from_files

SCENARIOS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(DATA, "*.json")))
FIELDS = ("method", "uri", "status_code", "request_body_len", "response_body_len",
          "response_body_len_wire", "protocol")


def _key(t: dict) -> tuple:
    return tuple(t.get(k) for k in FIELDS)


def _ours(tx) -> dict:
    d = tx.to_json()
    d["protocol"] = tx.protocol
    d["response_body_sha256"] = hashlib.sha256(tx.response_body).hexdigest()[:16]
    d["interim_statuses"] = list(tx.interim_statuses)
    return d


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_capture_matches_client_ground_truth(scenario):
    with open(os.path.join(DATA, scenario + ".json")) as f:
        truth = json.load(f)
    got = [_ours(tx) for tx in transactions_from_files([os.path.join(DATA, truth["pcap"])])]
    expected = sorted(_key(t) for t in truth["transactions"])
    assert sorted(_key(t) for t in got) == expected
    # decoded bodies are byte-exact (bodies in these captures are below the body cap)
    by_key = {_key(t): t for t in got}
    for t in truth["transactions"]:
        assert by_key[_key(t)]["response_body_sha256"] == t["response_body_sha256"], t["uri"]
        assert by_key[_key(t)]["interim_statuses"] == t["interim_statuses"]
        assert by_key[_key(t)]["host"] == t["host"]
