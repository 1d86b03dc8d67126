#!/usr/bin/env python3
"""Make the labelled corpus for the privacy benchmark (bench/privacy).

What: writes DIR/corpus.txt, about N MB (10^6 bytes) of mixed English text of
the kind people paste into LLM chats and API calls (support tickets, e-mails,
meeting notes, code snippets, config fragments, logs, chat prompts), and
DIR/labels.jsonl, one line per planted sensitive value:

    {"type": "EMAIL_ADDRESS", "start": 1234, "end": 1255}

with byte offsets into corpus.txt (end exclusive, the value only). The types
are EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS,
AWS_ACCESS_KEY, GITHUB_TOKEN, JWT and STRIPE_KEY. Decoys that look like them
but are not (Luhn-failing card numbers, invalid SSNs, version strings, order
ids, dates, times, timestamps, hashes, UUIDs, MAC addresses, prices, zip
codes) are planted too and are not labelled, so a detector that flags them
loses precision.

Why: Citadel's detector and Microsoft Presidio are scored on the same text
and the same labels (score.py), so the comparison is like for like.

How: everything is drawn from templates and word lists with one seeded
random.Random, so the same --mb and --seed give the same bytes. Documents are
separated by one blank line and never contain one, so a reader can split on
blank lines as a gateway sees separate messages. The text is pure ASCII, so
byte offsets equal character offsets. Before writing, every label is checked:
the span holds exactly the planted value, the value passes its type's own
check (Luhn, IBAN mod 97, SSN ranges, IP syntax, JWT header...), it stands
alone (no letter or digit touching it) and no two labels overlap.

    python3 bench/privacy/make_corpus.py --out /tmp/pb --mb 4 --seed 7
"""

import argparse
import base64
import ipaddress
import json
import re
import string
import sys
import uuid
from collections import Counter
from pathlib import Path
from random import Random

# --- word lists ---------------------------------------------------------------

FIRST = """james mary robert patricia john jennifer michael linda david elizabeth
william barbara richard susan joseph jessica thomas sarah charles karen priya
wei fatima lukas sofia mateo chloe oliver amelia noah emma liam olivia ahmed
yuki hannah jonas marta pierre ines tom anna""".split()
LAST = """smith johnson williams brown jones garcia miller davis rodriguez martinez
hernandez lopez wilson anderson thomas taylor moore jackson martin lee thompson
white harris clark lewis robinson walker young allen king wright scott nguyen
patel schmidt mueller dubois rossi jansen kowalski silva""".split()
COMPANIES = """acme globex initech umbrella contoso fabrikam northwind hooli
stark wayne tyrell cyberdyne soylent wonka vandelay aperture piedpiper
massive-dynamic blue-harbor greenfield""".split()
TLDS = "com com com org net io co.uk de fr nl dev ai eu es it".split()
MAILBOXES = "gmail.com outlook.com yahoo.com proton.me icloud.com gmx.de web.de orange.fr".split()
PRODUCTS = ["billing portal", "mobile app", "analytics dashboard", "VPN client", "CRM", "HR portal",
            "data warehouse", "payments API", "customer portal", "build server", "staging cluster"]
TEAMS = "platform payments growth security data infra mobile support finance legal".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday".split()
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
REGIONS = "us-east-1 us-west-2 eu-west-1 eu-central-1 ap-southeast-2".split()
BICS = "DEUTDEFF NWBKGB2L BNPAFRPP INGBNL2A CAIXESBB UNCRITMM".split()
LIBS = "PyJWT jsonwebtoken jose4j golang-jwt".split()
CITIES_US = ["San Francisco, CA", "Austin, TX", "Brooklyn, NY", "Seattle, WA", "Denver, CO", "Chicago, IL"]
STREETS = "Market Street|Main Street|Oak Avenue|Mission Street|Elm Road|Park Lane|Cedar Court".split("|")
ISSUES = [
    "the export to CSV times out after 30 seconds",
    "password reset e-mails never arrive",
    "I was charged twice for the annual plan",
    "the dashboard shows yesterday's numbers",
    "two-factor codes are rejected on Android",
    "the invoice PDF has the wrong VAT number",
    "SSO login loops back to the start page",
    "uploads larger than 10 MB fail silently",
    "my account was locked after the last update",
    "the webhook retries flood our endpoint",
]
SUBJECTS = [
    "contract renewal", "Q3 budget", "invoice overdue", "onboarding next week",
    "your support request", "security incident follow-up", "travel reimbursement",
    "migration plan", "vendor due diligence", "offsite agenda",
]
FILLER = [
    "Thanks again for the quick turnaround on this.",
    "I've attached the screenshots from this morning.",
    "Let me know if you need anything else from our side.",
    "We rolled back the deployment at {time_hm} and the error rate went down.",
    "As discussed on {weekday}, the {team} team owns the follow-up.",
    "The root cause was a stale cache entry, not the database.",
    "Could you double-check the numbers before we send them to finance?",
    "{first} said the fix will ship with the next minor release.",
    "Sorry for the delay, I was out of office until {weekday}.",
    "This is blocking about {n} customers, so it's fairly urgent.",
    "Please keep this thread internal until legal has reviewed it.",
    "We tried clearing the cache and restarting, with no luck.",
    "The issue only happens on the first login of the day.",
    "I'm not sure whether this belongs to the {product} or to the {team} team.",
    "Happy to jump on a call if that's easier.",
    "Our auditors asked for the full history by the end of {month}.",
    "The migration took {n} minutes longer than planned.",
    "Nothing changed on our side as far as I know.",
    "We'll revisit this in the next sprint planning.",
    "Can you summarize the key points in three bullet points?",
    "Please translate the paragraph above into plain English.",
    "Write a short, polite reply that says we're looking into it.",
    "The customer has been with us since {year} and is usually very patient.",
    "{first} from {team} will take over while I'm on leave.",
    "It worked fine in staging but not in production.",
    "The retry logic backs off exponentially up to {n} seconds.",
    "Make sure the answer doesn't include any personal data.",
    "Everything else in the report looks correct to me.",
]
PROSE = [
    "Our {team} team spent most of {month} untangling the on-call rotation.",
    "The quarterly review showed that response times improved by {n} percent.",
    "Most tickets this week were about the {product}, which is expected after a launch.",
    "We agreed to document the runbook properly before the next incident.",
    "The new intern, {first}, has already cleaned up half of the old scripts.",
    "Budget approval for the new tooling is still pending with finance.",
    "Customers mostly asked how to export their data and how to close accounts.",
    "The vendor promised a patch by {weekday}, but we are not holding our breath.",
    "I would like a concise summary of the discussion for people who missed it.",
    "Please rewrite the following notes into a friendly status update for the team.",
]

# --- helpers ------------------------------------------------------------------


def luhn_ok(digits):
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def luhn_complete(body):
    """Append the check digit that makes body valid under Luhn."""
    return next(body + c for c in string.digits if luhn_ok(body + c))


def iban_check_digits(country, bban):
    n = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{98 - n % 97:02d}"


def iban_ok(iban):
    s = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in s)) % 97 == 1


IBAN_LENGTH = {"DE": 22, "GB": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27}


def ssn_ok(v):
    m = re.fullmatch(r"(\d{3})-(\d{2})-(\d{4})", v)
    if not m:
        return False
    area, group, serial = (int(g) for g in m.groups())
    return 0 < area < 900 and area != 666 and group != 0 and serial != 0


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def group4(s):
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


# --- generators of labelled values --------------------------------------------


def digits(rng, n):
    return "".join(rng.choice(string.digits) for _ in range(n))


def alnum(rng, n, alphabet=string.ascii_letters + string.digits):
    return "".join(rng.choice(alphabet) for _ in range(n))


def email(rng):
    f, l = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}_{l}", f"{f}.{l}+{rng.choice(TEAMS)}",
                        f"{f}{rng.randrange(1, 99)}", f"{l}.{f}", f"{f}-{l}"])
    if rng.random() < 0.4:
        domain = rng.choice(MAILBOXES)
    else:
        sub = rng.choice(["", "", "", "mail.", "corp.", "eu."])
        domain = f"{sub}{rng.choice(COMPANIES)}.{rng.choice(TLDS)}"
    addr = f"{local}@{domain}"
    return addr.title() if rng.random() < 0.05 else addr


US_AREAS = [206, 212, 213, 303, 305, 312, 404, 408, 415, 469, 503, 510, 512, 602,
            617, 619, 646, 650, 702, 713, 718, 720, 773, 818, 917, 949]


def phone(rng):
    kind = rng.choices(["us_e164", "us_paren", "us_dash", "gb", "de", "fr", "nl"],
                       weights=[3, 3, 2, 2, 1, 1, 1])[0]
    if kind.startswith("us"):
        area = rng.choice(US_AREAS)
        exch = rng.randrange(200, 1000)
        while exch % 100 == 11 or exch in (555, 950, 958, 959, 976):
            exch = rng.randrange(200, 1000)
        line = digits(rng, 4)
        if kind == "us_paren":
            return f"({area}) {exch}-{line}"
        if kind == "us_dash":
            return f"{area}-{exch}-{line}"
        return rng.choice([f"+1 {area} {exch} {line}", f"+1-{area}-{exch}-{line}"])
    if kind == "gb":
        if rng.random() < 0.5:
            return f"+44 20 {rng.choice('378')}{digits(rng, 3)} {digits(rng, 4)}"
        return f"+44 7{rng.choice('45789')}{digits(rng, 2)} {digits(rng, 6)}"
    if kind == "de":
        if rng.random() < 0.5:
            return f"+49 30 {rng.randrange(1, 10)}{digits(rng, 7)}"
        return f"+49 {rng.choice(['151', '160', '170', '176'])} {rng.randrange(1, 10)}{digits(rng, 7)}"
    if kind == "fr":
        lead = rng.choice(["1 4", "6 1", "6 2", "7 8"])
        return f"+33 {lead}{digits(rng, 1)} {digits(rng, 2)} {digits(rng, 2)} {digits(rng, 2)}"
    if rng.random() < 0.5:
        return f"+31 20 {rng.randrange(1, 10)}{digits(rng, 2)} {digits(rng, 4)}"
    return f"+31 6 {rng.randrange(1, 6)}{digits(rng, 3)} {digits(rng, 4)}"


CARD_PREFIXES = [("4", 16), ("51", 16), ("52", 16), ("53", 16), ("54", 16), ("55", 16),
                 ("34", 15), ("37", 15), ("6011", 16)]


def card_number(rng):
    prefix, length = rng.choice(CARD_PREFIXES)
    return luhn_complete(prefix + digits(rng, length - len(prefix) - 1))


def format_card(rng, number):
    sep = rng.choice([" ", " ", "-", ""])
    sizes = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)
    parts, i = [], 0
    for size in sizes:
        parts.append(number[i : i + size])
        i += size
    return sep.join(parts)


def card(rng):
    return format_card(rng, card_number(rng))


def rib_key(bank, branch, account):
    return f"{97 - (89 * int(bank) + 15 * int(branch) + 3 * int(account)) % 97:02d}"


def es_control(bank, branch, account):
    weights = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]

    def digit(s):
        d = 11 - sum(int(c) * w for c, w in zip(s, weights)) % 11
        return {11: 0, 10: 1}.get(d, d)

    return f"{digit('00' + bank + branch)}{digit(account)}"


IT_ODD = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23]


def it_cin(bban_rest):
    total = 0
    for i, c in enumerate(bban_rest):
        v = int(c) if c.isdigit() else ord(c) - ord("A")
        total += IT_ODD[v] if i % 2 == 0 else v
    return chr(ord("A") + total % 26)


def nl_account(rng):
    while True:
        body = digits(rng, 9)
        check = -sum(int(c) * w for c, w in zip(body, range(10, 1, -1))) % 11
        if check < 10:
            return body + str(check)


def iban(rng):
    country = rng.choice(list(IBAN_LENGTH))
    if country == "DE":
        bban = digits(rng, 8) + digits(rng, 10)
    elif country == "GB":
        bban = rng.choice(["NWBK", "BARC", "LOYD", "HBUK", "MIDL"]) + digits(rng, 14)
    elif country == "FR":
        bank, branch, account = digits(rng, 5), digits(rng, 5), digits(rng, 11)
        bban = bank + branch + account + rib_key(bank, branch, account)
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO", "TRIO", "SNSB", "KNAB"]) + nl_account(rng)
    elif country == "ES":
        bank, branch, account = digits(rng, 4), digits(rng, 4), digits(rng, 10)
        bban = bank + branch + es_control(bank, branch, account) + account
    else:
        rest = digits(rng, 5) + digits(rng, 5) + digits(rng, 12)
        bban = it_cin(rest) + rest
    value = country + iban_check_digits(country, bban) + bban
    return group4(value) if rng.random() < 0.6 else value


def ssn(rng):
    area = rng.randrange(1, 900)
    while area == 666:
        area = rng.randrange(1, 900)
    return f"{area:03d}-{rng.randrange(1, 100):02d}-{rng.randrange(1, 10000):04d}"


def ipv4(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if kind == 1:
        return f"192.168.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    if kind == 2:
        return f"172.{rng.randrange(16, 32)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    first = rng.choice([n for n in range(1, 224) if n not in (10, 127)])
    return f"{first}.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def ipv6(rng):
    def h():
        return f"{rng.randrange(1, 0x10000):x}"

    kind = rng.randrange(4)
    if kind == 0:
        return f"2001:db8:{h()}:{h()}::{h()}"
    if kind == 1:
        return f"fe80::{h()}:{h()}:{h()}:{h()}"
    if kind == 2:
        return ":".join(f"{rng.randrange(0x10000):04x}" for _ in range(8)).replace("0000:0000", "0:0", 1)
    return f"2a0{rng.randrange(10)}:{h()}:{h()}:{h()}::{h()}"


def ip(rng):
    return ipv6(rng) if rng.random() < 0.2 else ipv4(rng)


def aws_key(rng):
    return "AKIA" + alnum(rng, 16, string.ascii_uppercase + string.digits)


def github_token(rng):
    return "ghp_" + alnum(rng, 36)


def jwt(rng):
    alg = rng.choice(["HS256", "HS256", "RS256", "ES256"])
    header = {"alg": alg, "typ": "JWT"}
    payload = {"sub": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
               "name": f"{rng.choice(FIRST).title()} {rng.choice(LAST).title()}",
               "iat": 1_700_000_000 + rng.randrange(50_000_000)}
    if rng.random() < 0.5:
        payload["scope"] = rng.choice(["read", "read write", "admin"])
    sig = bytes(rng.getrandbits(8) for _ in range(32 if alg == "HS256" else 64))
    return ".".join([b64url(json.dumps(header, separators=(",", ":")).encode()),
                     b64url(json.dumps(payload, separators=(",", ":")).encode()),
                     b64url(sig)])


def stripe_key(rng):
    return "sk_live_" + alnum(rng, 24)


# Template field (upper case) -> (label type, generator).
LABELLED = {
    "EMAIL": ("EMAIL_ADDRESS", email),
    "PHONE": ("PHONE_NUMBER", phone),
    "CARD": ("CREDIT_CARD", card),
    "IBAN": ("IBAN_CODE", iban),
    "SSN": ("US_SSN", ssn),
    "IP": ("IP_ADDRESS", ip),
    "IPV4": ("IP_ADDRESS", ipv4),
    "IPV6": ("IP_ADDRESS", ipv6),
    "AWS": ("AWS_ACCESS_KEY", aws_key),
    "GHP": ("GITHUB_TOKEN", github_token),
    "JWT": ("JWT", jwt),
    "STRIPE": ("STRIPE_KEY", stripe_key),
}

# --- generators of unlabelled text and decoys ---------------------------------


def bad_card(rng):
    number = card_number(rng)
    number = number[:-1] + str((int(number[-1]) + rng.randrange(1, 10)) % 10)
    assert not luhn_ok(number)
    return format_card(rng, number)


def bad_ssn(rng):
    area = f"{rng.randrange(1, 900):03d}"
    group = f"{rng.randrange(1, 100):02d}"
    serial = f"{rng.randrange(1, 10000):04d}"
    kind = rng.randrange(5)
    if kind == 0:
        area = "000"
    elif kind == 1:
        area = "666"
    elif kind == 2:
        area = str(rng.randrange(900, 1000))
    elif kind == 3:
        group = "00"
    else:
        serial = "0000"
    value = f"{area}-{group}-{serial}"
    assert not ssn_ok(value)
    return value


def version(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return f"{rng.randrange(10)}.{rng.randrange(30)}.{rng.randrange(20)}"
    if kind == 1:
        return f"v{rng.randrange(1, 5)}.{rng.randrange(30)}.{rng.randrange(10)}"
    if kind == 2:
        # Four parts, one above 255: not an IPv4 address.
        return f"{rng.randrange(1, 20)}.{rng.randrange(20)}.{rng.randrange(256, 2000)}.{rng.randrange(10)}"
    if kind == 3:
        core = f"{rng.randrange(1, 20)}.{rng.randrange(20)}.{rng.randrange(40)}"
        return f"{core}-{rng.choice(['beta', 'rc.1', 'alpha.2'])}"
    return f"{rng.randrange(2019, 2026)}.{rng.randrange(1, 13)}.{rng.randrange(1, 4)}"


def order(rng):
    kind = rng.randrange(4)
    if kind == 0:
        return f"ORD-{rng.randrange(2019, 2026)}-{digits(rng, 6)}"
    if kind == 1:
        return f"#{rng.randrange(10000, 999999)}"
    if kind == 2:
        return f"PO-{rng.randrange(10000, 99999)}"
    return f"{rng.randrange(1, 10)}{digits(rng, 9)}"


def date(rng):
    y, m, d = rng.randrange(2019, 2026), rng.randrange(1, 13), rng.randrange(1, 29)
    return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{m:02d}/{d:02d}/{y}", f"{d} {MONTHS[m - 1]} {y}",
                       f"{d:02d}.{m:02d}.{y}"])


def time_(rng):
    return f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}"


def iso_ts(rng):
    base = f"{rng.randrange(2019, 2026)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}T{time_(rng)}"
    return base + rng.choice(["Z", f".{rng.randrange(1000):03d}Z", "+02:00", "+00:00"])


def clf_ts(rng):
    return (f"{rng.randrange(1, 29):02d}/{rng.choice(MONTHS)}/{rng.randrange(2019, 2026)}:"
            f"{time_(rng)} +0000")


def hexs(rng, n):
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def price(rng):
    amount = f"{rng.randrange(1, 5000):,}.{rng.randrange(100):02d}"
    return rng.choice([f"${amount}", f"EUR {amount}", f"GBP {amount}", f"USD {amount}"])


def mac(rng):
    return ":".join(hexs(rng, 2) for _ in range(6))


FIELDS = {
    "first": lambda r: r.choice(FIRST).title(),
    "name": lambda r: f"{r.choice(FIRST).title()} {r.choice(LAST).title()}",
    "user": lambda r: r.choice(FIRST) + r.choice(["", "-dev", "42", "_ci"]),
    "company": lambda r: r.choice(COMPANIES),
    "company_name": lambda r: r.choice(COMPANIES).replace("-", " ").title()
    + r.choice([" Inc.", " Ltd", " GmbH", ""]),
    "repo": lambda r: r.choice(["api", "web", "infra", "billing-service", "etl", "mobile"]),
    "product": lambda r: r.choice(PRODUCTS),
    "team": lambda r: r.choice(TEAMS),
    "weekday": lambda r: r.choice(WEEKDAYS),
    "month": lambda r: r.choice(MONTHS),
    "year": lambda r: str(r.randrange(2008, 2024)),
    "issue": lambda r: r.choice(ISSUES),
    "subject": lambda r: r.choice(SUBJECTS),
    "region": lambda r: r.choice(REGIONS),
    "bic": lambda r: r.choice(BICS),
    "lib": lambda r: r.choice(LIBS),
    "city_us": lambda r: r.choice(CITIES_US),
    "street": lambda r: f"{r.randrange(1, 3000)} {r.choice(STREETS)}",
    "n": lambda r: str(r.randrange(2, 500)),
    "port": lambda r: str(r.choice([5432, 3306, 6379, 8080, 8443, 9200, 27017])),
    "status": lambda r: str(r.choice([200, 200, 201, 204, 301, 404, 500, 503])),
    "cents": lambda r: str(r.randrange(100, 200000)),
    "ticket": lambda r: str(r.randrange(10000, 99999)),
    "invoice": lambda r: f"INV-{r.randrange(2019, 2026)}-{r.randrange(1, 10000):04d}",
    "empid": lambda r: f"E-{r.randrange(1, 100000):06d}",
    "last4": lambda r: digits(r, 4),
    "zip": lambda r: str(r.randrange(10000, 99999)) + (f"-{digits(r, 4)}" if r.random() < 0.3 else ""),
    "tracking": lambda r: f"1Z{alnum(r, 6, string.ascii_uppercase + string.digits)}{digits(r, 10)}",
    "time_hm": lambda r: r.choice([f"{r.randrange(1, 12)}pm",
                                   f"{r.randrange(8, 19)}:{r.choice(['00', '15', '30', '45'])}"]),
    "time": time_,
    "date": date,
    "ts": iso_ts,
    "clf_ts": clf_ts,
    "sha": lambda r: hexs(r, 40),
    "sha7": lambda r: hexs(r, 7),
    "sha256": lambda r: hexs(r, 64),
    "uuid": lambda r: str(uuid.UUID(int=r.getrandbits(128), version=4)),
    "mac": mac,
    "price": price,
    "version": version,
    "order": order,
    "badcard": bad_card,
    "badssn": bad_ssn,
    "filler": lambda r: render_plain(r, r.choice(FILLER)),
}

# --- document templates ---------------------------------------------------------
# Upper-case fields are labelled values, lower-case ones plain text or decoys.
# No template contains a blank line: blank lines separate documents.

TEMPLATES = [
    # support tickets
    "Ticket #{ticket} ({product}): {issue}\nReporter: {name} <{EMAIL}>\nCallback number: {PHONE}\n{filler}\n"
    "Last seen from IP {IP} at {ts}. Client version {version}.",
    "Hi support team, my name is {name} and I can't log in to the {product} since {weekday}. My account e-mail is "
    "{EMAIL}. {filler} You can reach me on my mobile {PHONE} any time before {time_hm}.",
    "Customer {name} called about order {order}. The card on file ({CARD}) was declined twice; she asked us to "
    "use the new card {CARD} instead. {filler}",
    "Refund request for order {order}: the customer paid {price} with the card ending in {last4} on {date}. Full "
    "number from the chat transcript: {CARD}. Please don't store it anywhere else.",
    "Ticket #{ticket}: {issue}. The user's phone is {PHONE} and the request came from {IP}. {filler}",
    # e-mails
    "From: {name} <{EMAIL}>\nTo: {EMAIL}\nSubject: Re: {subject}\nHi {first},\n{filler} {filler}\n"
    "Could you call me at {PHONE} tomorrow?\nBest,\n{first}",
    "Dear {first},\nplease find below our bank details for invoice {invoice}:\nIBAN: {IBAN}\nBIC: {bic}\n"
    "Amount due: {price}, payable by {date}.\nKind regards,\n{name}\n"
    "{company_name} Accounts Payable | tel. {PHONE}",
    "Hello {first}, we noticed an unusual sign-in to your {product} account from {IP} on {date} at {time}. If "
    "this wasn't you, reply to {EMAIL} or phone our security desk on {PHONE}.",
    "Hi {first}, the wire for {invoice} bounced. Our new account is {IBAN} (same bank, {bic}). {filler}",
    # HR
    "Onboarding checklist for {name}: employee id {empid}, SSN {SSN}, start date {date}. Payroll will deposit "
    "the salary to {IBAN}. {filler}",
    "Can you fill in this W-4 for me? Name: {name}, Social Security Number: {SSN}, address {street}, "
    "{city_us} {zip}. Phone: {PHONE}.",
    "The background check vendor rejected SSN {badssn} as invalid; the correct one is {SSN}, per {first}'s "
    "e-mail from {date}.",
    # meeting notes
    "Meeting notes {date} ({team} sync)\nAttendees: {first}, {first}, {first}\n- {filler}\n- {first} to e-mail "
    "{EMAIL} about the renewal of the {product} (quote {price}).\n- Vendor contact: {name}, mobile {PHONE}.\n"
    "- Next release {version} planned for {weekday}.",
    "Standup {date}: {first} finished the migration to {version}, {first} is blocked on ticket #{ticket}. "
    "Build {sha7} passed in {n}s. {filler}",
    # code
    'import boto3\ns3 = boto3.client(\n    "s3",\n    aws_access_key_id="{AWS}",\n'
    '    aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],\n    region_name="{region}",\n)',
    'const stripe = require("stripe")("{STRIPE}");\n// TODO move this to the vault before {date}\n'
    'const charge = await stripe.charges.create({{ amount: {cents}, currency: "usd" }});',
    'curl -s https://api.{company}.com/v2/users/{uuid} \\\n  -H "Authorization: Bearer {JWT}" \\\n'
    '  -H "X-Request-Id: {uuid}"',
    "git clone https://{user}:{GHP}@github.com/{company}/{repo}.git\ncd {repo} && git checkout {sha7}",
    'headers = {{"Authorization": "token {GHP}", "Accept": "application/vnd.github+json"}}\n'
    'resp = requests.get("https://api.github.com/repos/{company}/{repo}/commits/{sha}", headers=headers)',
    'def test_checkout():\n    # this card number must be declined: it fails the Luhn check\n'
    '    assert charge("{badcard}") == "declined"\n    assert version() == "{version}"',
    'fetch("/api/session", {{ headers: {{ Authorization: "Bearer {JWT}" }} }})\n  .then((r) => r.json())',
    # config
    "# {product} settings\nDB_HOST={IPV4}\nDB_PORT={port}\nSTRIPE_SECRET_KEY={STRIPE}\nGITHUB_TOKEN={GHP}\n"
    "APP_VERSION={version}\nBUILD_SHA={sha}",
    'server:\n  listen: {IPV4}:{port}\n  upstream: "[{IPV6}]:8443"\n  admin_email: {EMAIL}\n'
    "release: {version}\ninstance_id: {uuid}",
    '[aws]\naws_access_key_id = {AWS}\nregion = {region}\n[alerts]\nnotify = {EMAIL}\noncall_phone = "{PHONE}"',
    # logs
    '{IPV4} - - [{clf_ts}] "GET /api/v1/orders/{order} HTTP/1.1" {status} {n} "-" "Mozilla/5.0"\n'
    '{IPV4} - - [{clf_ts}] "POST /login HTTP/1.1" 302 0 "-" "curl/8.5.0"',
    "{ts} INFO  request_id={uuid} user={EMAIL} src={IP} latency_ms={n} version={version}\n"
    "{ts} WARN  retrying upstream {IPV4}:{port} after {n}ms (attempt 2)",
    "{ts} ERROR payment failed for card {CARD}: do_not_honor (order {order}, amount {price})",
    "2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc fq_codel state UP\n    link/ether {mac} brd "
    "ff:ff:ff:ff:ff:ff\n    inet {IPV4}/24 brd {IPV4} scope global eth0\n    inet6 {IPV6}/64 scope link",
    # chat prompts
    'Can you rewrite this message so it sounds more professional? "hey {first}, send the contract to {EMAIL} '
    'asap, and call me on {PHONE} if legal pushes back"',
    "Please summarize the following ticket and remove anything sensitive: customer {name}, card {CARD}, "
    "phone {PHONE}, complaint: {issue}.",
    "Why does this JWT fail to verify? {JWT} I generated it with {lib} {version} and the secret from our config.",
    "Extract the IBANs from this text and tell me which bank they belong to: {IBAN} and {IBAN}. Transfer "
    "reference {invoice}, value date {date}.",
    "Convert these rows to JSON: {name}, {EMAIL}, {PHONE}; {name}, {EMAIL}, {PHONE}.",
    "Debug this: my script says {badcard} is a valid card number, but it should fail the Luhn check. The "
    "expected output for {CARD} is True.",
    "Is {IPV6} in our allow-list? And what about {IPV4}? The firewall logged both at {time}.",
    "I accidentally pushed our AWS key {AWS} to a public repo in commit {sha7}. What should I do first?",
    "My SSN is {SSN} and my date of birth is {date}. Can you check if this tax form looks right?",
    # decoys only
    "Release {version} ({date})\n- Fixed a crash when parsing build {sha} on {weekday}.\n- Bumped the SDK to "
    "{version}; minimum supported version is now {version}.\n- Order exports include ids like {order} and "
    "timestamps like {ts}.\n- Tests: card {badcard} is rejected and SSN {badssn} fails validation.",
    "Shipping update: parcel {tracking} left the warehouse at {time} on {date}; delivery to zip {zip} is "
    "expected within {n} days. Total {price}, order {order}.",
    "Checksum of the release tarball (sha256): {sha256}. Artifact id {uuid}, uploaded {ts}, device {mac}.",
]

TARGET_BYTES_PER_LABEL = 400

# --- rendering -------------------------------------------------------------------

_FORMATTER = string.Formatter()


def render_plain(rng, template):
    return "".join(lit + (FIELDS[f](rng) if f else "") for lit, f, _, _ in _FORMATTER.parse(template))


class Corpus:
    """The text as it grows, and the labelled values planted in it."""

    def __init__(self):
        self.parts = []
        self.size = 0
        self.planted = []  # (type, start, end, value)

    def add(self, s):
        self.parts.append(s)
        self.size += len(s)

    def add_document(self, rng, template):
        if self.parts:
            self.add("\n\n")
        for lit, field, _, _ in _FORMATTER.parse(template):
            self.add(lit)
            if field is None:
                continue
            if field in LABELLED:
                typ, gen = LABELLED[field]
                value = gen(rng)
                self.planted.append((typ, self.size, self.size + len(value), value))
                self.add(value)
            else:
                self.add(FIELDS[field](rng))

    def text(self):
        return "".join(self.parts) + "\n"


def build(size, seed):
    rng = Random(seed)
    corpus = Corpus()
    while corpus.size < size:
        if corpus.size < len(corpus.planted) * TARGET_BYTES_PER_LABEL:
            corpus.add_document(rng, " ".join(rng.sample(PROSE + FILLER, rng.randrange(2, 6))))
        else:
            corpus.add_document(rng, rng.choice(TEMPLATES))
    return corpus


# --- self-check ------------------------------------------------------------------

CHECKS = {
    "EMAIL_ADDRESS": lambda v: re.fullmatch(r"[A-Za-z0-9._+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}", v),
    "PHONE_NUMBER": lambda v: re.fullmatch(r"\+?[\d ()-]+", v) and 10 <= sum(c.isdigit() for c in v) <= 13,
    "CREDIT_CARD": lambda v: luhn_ok(v.replace(" ", "").replace("-", ""))
    and len(v.replace(" ", "").replace("-", "")) in (15, 16),
    "IBAN_CODE": lambda v: iban_ok(v.replace(" ", "")) and IBAN_LENGTH[v[:2]] == len(v.replace(" ", "")),
    "US_SSN": ssn_ok,
    "IP_ADDRESS": lambda v: ipaddress.ip_address(v),
    "AWS_ACCESS_KEY": lambda v: re.fullmatch(r"AKIA[A-Z0-9]{16}", v),
    "GITHUB_TOKEN": lambda v: re.fullmatch(r"ghp_[A-Za-z0-9]{36}", v),
    "STRIPE_KEY": lambda v: re.fullmatch(r"sk_live_[A-Za-z0-9]{24}", v),
    "JWT": lambda v: "alg" in json.loads(base64.urlsafe_b64decode(v.split(".")[0] + "==")) and v.count(".") == 2,
}


def self_check(text, planted):
    assert text.isascii(), "corpus must be ASCII"
    previous_end = 0
    for typ, start, end, value in planted:
        assert text[start:end] == value, (typ, start, end, value)
        assert CHECKS[typ](value), (typ, value)
        assert start >= previous_end, f"overlapping labels at {start}"
        assert not text[start - 1].isalnum() and not text[end].isalnum(), (typ, value, "not standalone")
        previous_end = end


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="directory for corpus.txt and labels.jsonl")
    ap.add_argument("--mb", type=float, default=4, help="size in MB (10^6 bytes), default 4")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    corpus = build(int(args.mb * 1_000_000), args.seed)
    text = corpus.text()
    self_check(text, corpus.planted)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "corpus.txt").write_bytes(text.encode("ascii"))
    with open(args.out / "labels.jsonl", "w", encoding="ascii") as f:
        for typ, start, end, _ in corpus.planted:
            f.write(json.dumps({"type": typ, "start": start, "end": end}) + "\n")

    counts = Counter(typ for typ, *_ in corpus.planted)
    per_type = " ".join(f"{t}={n}" for t, n in sorted(counts.items()))
    print(f"corpus: {len(text)} bytes, {len(corpus.planted)} labels "
          f"(1 per {len(text) // max(1, len(corpus.planted))} bytes): {per_type}", file=sys.stderr)


if __name__ == "__main__":
    main()
