"""Print how well the inventory's templates match httpbin's spec (the issue-3 bar).

Usage (from the repository root)::

    .venv/bin/python tests/captures/inventory/score.py [DIR] [NAME]

DIR (default tests/data/inventory) holds NAME.pcap and NAME.json (default NAME: httpbin, as
written by make_httpbin.py; ``httpbin_st`` is the schemathesis capture) and httpbin_spec.json.
The capture is replayed with ``apisensor replay`` into a temporary database; "exercised" spec
paths are those the ground truth shows answered with a status that proves the path exists
(2xx, 3xx, 401, 403, 405, 5xx).  Requests without a recorded spec path (schemathesis) are
routed to the spec path a router would pick (a literal segment beats a parameter).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import sqlite_utils

    from discovery import specdiff

    d = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "tests" / "data" / "inventory")
    name = sys.argv[2] if len(sys.argv) > 2 else "httpbin"
    truth = json.loads((d / f"{name}.json").read_text())
    spec = specdiff.load_spec(str(d / "httpbin_spec.json"))
    paths = sorted({o.path for o in specdiff.operations(spec)})
    for t in truth["requests"]:
        if "spec_path" not in t:
            t["spec_path"] = specdiff.best_match(paths, t["uri"].split("?")[0])
    exercised = {t["spec_path"] for t in truth["requests"] if t["spec_path"] and (
        200 <= t["status_code"] < 400 or t["status_code"] in (401, 403, 405) or t["status_code"] >= 500)}
    # operations: a method answered with a status showing it exists (405 refuses the method;
    # OPTIONS answers are CORS/framework defaults, evidence of a path only)
    ops = {(t["method"], specdiff._norm(t["spec_path"])) for t in truth["requests"] if t["spec_path"] and (
        200 <= t["status_code"] < 400 or t["status_code"] in (401, 403) or t["status_code"] >= 500)
        and t["method"] != "OPTIONS"}
    with tempfile.TemporaryDirectory() as tmp:
        db_path = os.path.join(tmp, "inv.db")
        apisensor = str(ROOT / ".venv" / "bin" / "apisensor")
        subprocess.run([apisensor if os.path.exists(apisensor) else "apisensor", "replay", str(d / f"{name}.pcap"),
                        "--db", db_path], check=True, stdout=subprocess.DEVNULL)
        db = sqlite_utils.Database(db_path)
        s = specdiff.score(db, spec, truth["server"].removesuffix(":80"), exercised)
        eps = {(m, specdiff._norm(t)) for m, t in db.execute("select method, template from endpoints")}
    print(f"capture: {d / (name + '.pcap')} ({len(truth['requests'])} requests)")
    print(f"spec paths exercised: {s['exercised']}, discovered templates: {s['templates']}")
    print(f"recall    {s['recall']:.3f}  ({s['found']}/{s['exercised']} exercised spec paths found as templates)")
    print(f"precision {s['precision']:.3f}  ({s['exact']}/{s['templates']} templates that are spec paths)")
    print(f"split     {len(s['splits'])} spec paths with more than one template")
    print(f"operations (method + path): recall {len(eps & ops) / len(ops):.3f} ({len(eps & ops)}/{len(ops)}), "
          f"precision {len(eps & ops) / len(eps):.3f} ({len(eps & ops)}/{len(eps)})")
    for p in s["missed"]:
        print(f"  missed:     {p}")
    for t in s["not_in_spec"]:
        print(f"  not in spec: {t}")
    for p, ts in s["splits"].items():
        print(f"  split:      {p} -> {ts}")


if __name__ == "__main__":
    main()
