"""Score the detectors on Faker documents made with *other* seeds than the fixtures.

The fixtures in tests/fixtures/findings were used while writing the detectors; this builds the
same kinds of documents (docs_and_faker.py) with fresh seeds, feeds them to the detectors as
Transactions (no capture needed) and prints precision/recall per detector:

    .venv/bin/python tests/captures/findings/score_seeds.py 200 201 202 ...
"""

import os
import random
import sys
from collections import Counter

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.normpath(os.path.join(HERE, "..", "..", "..")), HERE]

import docs_and_faker as D  # noqa: E402
from faker import Faker  # noqa: E402

from discovery.detectors import REGISTRY, detect  # noqa: E402
from sensor.transaction import Transaction  # noqa: E402


def reseed(seed: int) -> None:
    base = random.Random

    class R(base):
        def __init__(self, x=None):
            super().__init__((x or 0) * 1000 + seed)

    D.random.Random = R
    orig = Faker.seed_instance.__wrapped__ if hasattr(Faker.seed_instance, "__wrapped__") else Faker.seed_instance

    def seed_instance(self, s=None):
        return orig(self, (s or 0) * 1000 + seed)

    seed_instance.__wrapped__ = orig
    Faker.seed_instance = seed_instance


def main(seeds: list[int]) -> None:
    tp, fp, fn, errors = Counter(), Counter(), Counter(), []
    n = 0
    for seed in seeds:
        reseed(seed)
        for make in (D.faker_pii_spec, D.faker_secrets_spec, D.faker_requests_spec, D.hard_negatives_spec,
                     D.disclosure_spec):
            spec = make()
            for method, path, headers, body, expect in spec["requests"]:
                r = spec["serve"][(method, path)]
                tx = Transaction(
                    ts=1.0, client_ip=b"\x7f\0\0\1", client_port=1, server_ip=b"\x7f\0\0\2", server_port=80,
                    method=method, uri=path, request_headers=(("Host", "h.test"), *headers.items()),
                    request_body=body or b"", request_body_len=len(body or b""), status_code=r.status,
                    response_headers=(("Content-Type", r.ctype), *r.headers), response_body=r.body,
                    response_body_len=len(r.body))
                n += 1
                exp = {tuple(e) for e in expect}
                got = {(f.detector, f.location) for f in detect(tx)}
                for d, _ in got & exp:
                    tp[d] += 1
                for d, loc in got - exp:
                    fp[d] += 1
                    errors.append(("FP", seed, path[:60], d, loc))
                for d, loc in exp - got:
                    fn[d] += 1
                    errors.append(("FN", seed, path[:60], d, loc))
    print(f"{n} transactions, seeds {seeds}")
    print(f"{'detector':<34} {'TP':>5} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7}")
    for d in REGISTRY.names:
        t, f, m = tp[d], fp[d], fn[d]
        print(f"{d:<34} {t:>5} {f:>4} {m:>4} {t / (t + f) if t + f else 1:>9.3f} {t / (t + m) if t + m else 1:>7.3f}")
    for e in errors:
        print(*e)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [200, 201, 202, 203, 204])
