"""Seeded, deterministic fixture data shared by the demo services and the demo clients.

All values are made up. The PII is fake but *valid-looking* on purpose so a
sensor's detectors fire: SSNs obey the SSA rules (area not 000/666/9xx, group
and serial not zero), card numbers are well-known test PANs that pass Luhn,
phone numbers are well-formed NANP numbers (no 555 / N11 exchanges).
"""

from __future__ import annotations

import random
import uuid

SEED = 20260601

FIRST = [
    "Olivia",
    "Liam",
    "Emma",
    "Noah",
    "Ava",
    "Mateo",
    "Sophia",
    "Elijah",
    "Isabella",
    "Lucas",
    "Mia",
    "Ethan",
]
LAST = [
    "Martinez",
    "Nguyen",
    "Okafor",
    "Kowalski",
    "Bennett",
    "Hughes",
    "Ramirez",
    "Lindqvist",
    "Patel",
    "Fischer",
    "Delgado",
    "Whitaker",
]
MAIL_DOMAINS = ["gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me"]
STREETS = [
    "Maple Avenue",
    "Oak Street",
    "Cedar Lane",
    "Pine Ridge Road",
    "Elm Court",
    "Lakeview Drive",
    "Willow Way",
    "Hillcrest Boulevard",
]
CITIES = [
    ("Portland", "OR", "97205", "503"),
    ("Austin", "TX", "78701", "512"),
    ("Denver", "CO", "80202", "303"),
    ("Seattle", "WA", "98101", "206"),
    ("Chicago", "IL", "60601", "312"),
    ("Boston", "MA", "02108", "617"),
    ("San Francisco", "CA", "94103", "415"),
    ("Atlanta", "GA", "30303", "404"),
]
# Public test PANs (all pass Luhn).
TEST_CARDS = [
    ("visa", "4111111111111111"),
    ("mastercard", "5555555555554444"),
    ("visa", "4242424242424242"),
    ("amex", "378282246310005"),
    ("discover", "6011111111111117"),
    ("visa", "4012888888881881"),
    ("mastercard", "5105105105105100"),
    ("jcb", "3530111333300000"),
    ("visa", "4000056655665556"),
    ("mastercard", "5200828282828210"),
    ("amex", "371449635398431"),
    ("discover", "6011000990139424"),
]


def luhn_ok(number: str) -> bool:
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def ssn_ok(ssn: str) -> bool:
    area, group, serial = ssn.split("-")
    return area not in ("000", "666") and not area.startswith("9") and group != "00" and serial != "0000"


def _ssn(rng: random.Random) -> str:
    while True:
        # areas 001-733 only: valid under both the old (pre-2011) and the randomized rules
        ssn = f"{rng.randint(1, 733):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if ssn_ok(ssn):
            return ssn


def _phone(rng: random.Random, area: str, style: int) -> str:
    while True:
        exchange = rng.randint(200, 999)
        if exchange != 555 and exchange % 100 != 11:
            break
    line = rng.randint(0, 9999)
    return [
        f"+1 {area}-{exchange}-{line:04d}",
        f"({area}) {exchange}-{line:04d}",
        f"+1{area}{exchange}{line:04d}",
    ][style % 3]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _oid(rng: random.Random) -> str:
    return f"{rng.getrandbits(96):024x}"


def build():
    rng = random.Random(SEED)
    users = []
    for i in range(12):
        first, last = FIRST[i], LAST[(i * 5) % len(LAST)]
        city, state, zipcode, area = CITIES[i % len(CITIES)]
        brand, pan = TEST_CARDS[i]
        assert luhn_ok(pan), pan
        uid = 1001 + i
        # (drawn in this order so the data stays what it has always been)
        user_uuid = _uuid(rng)
        mail_n = rng.randint(7, 99)
        phone = _phone(rng, area, i % 4)
        ssn = _ssn(rng)
        dob = f"{rng.randint(1956, 2003)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        users.append(
            {
                "id": uid,
                "uuid": user_uuid,
                "username": f"{first.lower()}.{last.lower()}",
                "full_name": f"{first} {last}",
                "email": f"{first.lower()}.{last.lower()}{mail_n}@{MAIL_DOMAINS[i % len(MAIL_DOMAINS)]}",
                "phone": phone,
                "ssn": ssn,
                "date_of_birth": dob,
                "address": {
                    "street": f"{rng.randint(12, 9870)} {STREETS[rng.randrange(len(STREETS))]}",
                    "city": city,
                    "state": state,
                    "postal_code": zipcode,
                    "country": "US",
                },
                "card": {
                    "brand": brand,
                    "number": pan,
                    "exp_month": rng.randint(1, 12),
                    "exp_year": rng.randint(2027, 2031),
                },
                "customer_id": f"cus_{rng.getrandbits(64):016x}",
                "payment_method_id": f"pm_{rng.getrandbits(64):016x}",
                "created_at": f"20{rng.randint(19, 25)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
            }
        )

    items = []
    prefixes = ["ABC", "KTN", "ZRX", "MPL", "TOY", "GRD"]
    names = [
        "Espresso Grinder",
        "Trail Backpack 30L",
        "Wireless Earbuds",
        "Cast Iron Skillet",
        "Yoga Mat",
        "LED Desk Lamp",
        "Running Shoes",
        "Water Bottle 1L",
        "Mechanical Keyboard",
        "Chef Knife 8in",
        "Rain Jacket",
        "Bluetooth Speaker",
        "Camping Stove",
        "Wool Socks 3-pack",
        "Phone Case",
        "Notebook A5",
        "Travel Mug",
        "Headlamp",
        "Board Game Deluxe",
        "Plant Pot Set",
    ]
    categories = [
        "kitchen",
        "outdoor",
        "electronics",
        "kitchen",
        "fitness",
        "home",
        "fitness",
        "outdoor",
        "electronics",
        "kitchen",
        "outdoor",
        "electronics",
        "outdoor",
        "apparel",
        "electronics",
        "office",
        "kitchen",
        "outdoor",
        "toys",
        "garden",
    ]
    for i, name in enumerate(names):
        items.append(
            {
                "sku": f"{prefixes[i % len(prefixes)]}-{rng.randint(10000, 99999)}",
                "name": name,
                "category": categories[i],
                "price": f"{rng.randint(5, 240)}.{rng.choice(['99', '49', '95', '00'])}",
                "currency": "USD",
                "warehouses": {w: rng.randint(0, 140) for w in ("PDX-1", "AUS-2", "EWR-3")},
            }
        )

    orders = []
    for i in range(40):
        owner = users[i % len(users)]
        lines = []
        for _ in range(rng.randint(1, 3)):
            item = items[rng.randrange(len(items))]
            lines.append({"sku": item["sku"], "qty": rng.randint(1, 4), "unit_price": item["price"]})
        # A handful of orders were imported from the old EU shop with a
        # locale-formatted price ("12,99"): the invoice code chokes on them.
        if i in (5, 17, 29):
            lines[0]["unit_price"] = lines[0]["unit_price"].replace(".", ",")
        orders.append(
            {
                "id": _oid(rng),
                "user_id": owner["id"],
                "status": rng.choice(["delivered", "shipped", "processing", "delivered", "cancelled"]),
                "currency": "USD",
                "lines": lines,
                "created_at": f"2026-{rng.randint(1, 10):02d}-{rng.randint(1, 28):02d}T"
                f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00Z",
            }
        )
    return users, items, orders


USERS, ITEMS, ORDERS = build()
USERS_BY_ID = {u["id"]: u for u in USERS}
USERS_BY_UUID = {u["uuid"]: u for u in USERS}
ITEMS_BY_SKU = {it["sku"]: it for it in ITEMS}
ORDERS_BY_ID = {o["id"]: o for o in ORDERS}
BROKEN_INVOICE_ORDERS = [ORDERS[i]["id"] for i in (5, 17, 29)]

ISSUED_AT = 1780300800  # 2026-06-01T08:00:00Z, fixed so the capture is reproducible


def user_claims(user: dict, scope: str, client_id: str) -> dict:
    return {
        "iss": "https://auth.shop.local/",
        "sub": user["uuid"],
        "uid": user["id"],
        "cid": user["customer_id"],
        "aud": "shop-api",
        "azp": client_id,
        "scope": scope,
        "iat": ISSUED_AT,
        "exp": ISSUED_AT + 3600,
        "jti": f"{(user['id'] * 2654435761) & 0xFFFFFFFF:08x}",
    }


SERVICE_CLAIMS = {
    "iss": "https://auth.shop.local/",
    "sub": "svc:gateway",
    "aud": ["users", "inventory"],
    "scope": "users:write inventory:read",
    "iat": ISSUED_AT,
    "exp": ISSUED_AT + 86400,
}
