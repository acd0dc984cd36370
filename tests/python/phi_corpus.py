#!/usr/bin/env python3
"""Seeded generator of a labeled synthetic PHI corpus (stdlib only).

  python3 phi_corpus.py --seed 7 --docs 2000 --out corpus.jsonl

Each output line is one document:
  {"id": int, "kind": "note"|"json"|"sql_row"|"chat", "text": str,
   "entities": [{"type": T, "start": s, "end": e}]}

Text is pure ASCII so character offsets equal byte offsets; spans are [start, end)
and slice exactly the entity value (both asserted while generating). Every value
of a checksummed type is valid (Luhn, NPI 80840 rule, DEA check digit, IBAN
mod-97, VIN position 9, IMEI Luhn). Unlabeled decoys (invalid-Luhn numbers,
SSN-shaped strings with a forbidden area, dosages, lab values, times, versions,
ICD-10/CPT codes, bare years, SKUs, fractions ...) are mixed into every kind.

Output is a pure function of --seed, --docs and the two name lists
(core/src/mask/names/{first,last}.txt, or --names-dir).
"""
import argparse
import collections
import datetime
import ipaddress
import json
import os
import random
import re
import string
import sys

TYPES = [
    "PERSON", "DATE", "PHONE", "EMAIL", "URL", "IP_ADDRESS", "ZIP", "STREET_ADDRESS",
    "SSN", "MRN", "HEALTH_PLAN", "ACCOUNT", "LICENSE", "CREDIT_CARD", "NPI", "DEA",
    "IBAN", "VIN", "IMEI", "MAC_ADDRESS",
]
# Relative frequency with which a document draws each type.
TYPE_WEIGHTS = {
    "PERSON": 4, "DATE": 4, "PHONE": 3, "EMAIL": 2, "URL": 1.5, "IP_ADDRESS": 1,
    "ZIP": 1.5, "STREET_ADDRESS": 2, "SSN": 1.5, "MRN": 2, "HEALTH_PLAN": 1.5,
    "ACCOUNT": 1, "LICENSE": 1, "CREDIT_CARD": 1, "NPI": 1, "DEA": 1, "IBAN": 1,
    "VIN": 0.8, "IMEI": 0.8, "MAC_ADDRESS": 0.8,
}
assert list(TYPE_WEIGHTS) == TYPES
KIND_WEIGHTS = {"note": 35, "json": 25, "sql_row": 20, "chat": 20}
P_NO_ENTITIES = 0.30
N_ENTITY_WEIGHTS = [14, 18, 17, 14, 11, 9, 7, 5]  # for 1..8 entities
P_INVENTED_NAME = 0.15

# Uncommon but real-looking names; any that appear in the name lists are dropped at load.
INVENTED_FIRST = """Thaddeus Odalys Caspian Ysolde Anouk Bartholomew Zephyrine Leocadia Ignatius
Marisela Oluwaseun Thandiwe Evander Perpetua Casimir Rosalind Lysander Philippa Anselm Ottoline
Wendeline Cosima Barnaby Eulalia Florian Isadora Benedikt Saoirse Tiberius Henrietta Ximena
Radomir Aurelio Zofia Kwabena Ingrid Priyanka Haruki Anneliese Fenella""".split()
INVENTED_LAST = """Okonkwo Szymanski Nakashima Abernathy Villasenor Quackenbush Brannigan Oyelaran
Thistlewood Vandermeer Castellanos Przybylski Fairweather Ravensworth Kowalczyk Achterberg
Delacroix Mbeki Haverford Lindqvist Tsukamoto Marchetti Oyelowo Scarborough Wojciechowski
Featherstone Ashdown Kerrigan Montenegro Ballantyne Ekwueme Hargreaves Zielinski Ostrowski
Pemberton Valderrama Grzybowski Blackwood Yamamura Fitzwilliam""".split()

CITIES = {
    "MA": (["Boston", "Cambridge", "Worcester", "Springfield", "Lowell", "Quincy"], ["01", "02"]),
    "NY": (["Albany", "Buffalo", "Rochester", "Yonkers", "Brooklyn"], ["10", "11", "12", "14"]),
    "CA": (["Oakland", "Fresno", "San Diego", "Sacramento", "Pasadena"], ["90", "91", "94", "95"]),
    "TX": (["Austin", "Houston", "Dallas", "El Paso", "Lubbock"], ["75", "77", "78", "79"]),
    "IL": (["Chicago", "Peoria", "Naperville", "Joliet"], ["60", "61", "62"]),
    "WA": (["Seattle", "Tacoma", "Spokane", "Olympia"], ["98", "99"]),
    "FL": (["Tampa", "Orlando", "Miami", "Gainesville"], ["32", "33", "34"]),
    "OH": (["Columbus", "Dayton", "Toledo", "Akron"], ["43", "44", "45"]),
    "CO": (["Denver", "Boulder", "Aurora", "Pueblo"], ["80", "81"]),
    "GA": (["Atlanta", "Macon", "Athens", "Savannah"], ["30", "31"]),
    "PA": (["Pittsburgh", "Scranton", "Erie", "Allentown"], ["15", "16", "18", "19"]),
}
STATES = sorted(CITIES)
NANP_AREAS = """617 508 781 978 212 718 646 917 516 914 415 510 408 650 213 310 818 619 858 916
312 773 847 630 713 281 832 214 972 512 210 915 206 253 509 360 305 786 813 407 954 904
614 216 513 419 303 720 404 770 678 912 412 215 267 610 717 202 301 703 571 919 704 615
901 502 314 816 612 651 414 608 313 248 734 616 503 971 702 801 602 480 520 505 907 808""".split()
STREET_NAMES = """Main Oak Beacon Maple Elm Pine Cedar Washington Lincoln Park Lake Hill Highland
Commonwealth Huntington Tremont Boylston Massachusetts Harvard Cambridge Centre River Church
Spring Walnut Chestnut Sycamore Willow Franklin Jefferson Madison Adams Jackson Prospect Summer
Union Market School Mill Forest Meadow Sunset Ridge Orchard Vine Liberty Broadway""".split()
STREET_SUFFIXES = """Street St St. Avenue Ave Ave. Road Rd Boulevard Blvd Drive Dr Lane Ln Way
Court Ct Place Pl Terrace Parkway Pkwy Circle""".split()
EMAIL_DOMAINS = """gmail.com yahoo.com outlook.com hotmail.com icloud.com aol.com comcast.net
protonmail.com partners.org bmc.org mgh.harvard.edu kp.org uchicago.edu nyulangone.org""".split()
ORGS = """northshorehealth bayviewclinic mercyhealth stlukesmed riversidemedical
cityhospital summitcare lakesidepeds valleyortho pinecrestfamily""".split()
PAYERS = ["Blue Cross Blue Shield", "Aetna", "Cigna", "UnitedHealthcare", "Humana",
          "Tufts Health Plan", "Harvard Pilgrim", "Medicaid", "Kaiser Permanente"]
MEDS = ["metformin", "lisinopril", "atorvastatin", "amoxicillin", "metoprolol", "sertraline",
        "levothyroxine", "gabapentin", "omeprazole", "albuterol", "prednisone", "warfarin",
        "insulin glargine", "furosemide", "amlodipine", "ondansetron"]
DX = ["type 2 diabetes", "hypertension", "asthma exacerbation", "community-acquired pneumonia",
      "atrial fibrillation", "major depressive disorder", "CKD stage 3", "COPD", "cellulitis",
      "migraine", "hypothyroidism", "GERD", "osteoarthritis of the knee", "UTI"]
ICD10 = ["E11.9", "I10", "J45.909", "J18.9", "I48.91", "F32.9", "N18.3", "J44.9", "L03.115",
         "G43.909", "E03.9", "K21.9", "M17.11", "N39.0", "E78.5", "R07.9"]
CPT = ["99213", "99214", "99203", "93000", "85025", "80053", "36415", "71046", "90471", "99285"]
DEPTS = ["Cardiology", "Endocrinology", "Primary Care", "Pulmonology", "Nephrology",
         "Orthopedics", "Emergency Department", "Pediatrics", "Behavioral Health"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
MON_ABBR = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
VIN_WMI = ["1HG", "1FT", "1G1", "2T1", "3VW", "4T1", "5YJ", "JTD", "JHM", "KMH", "WBA", "WVW",
           "YV1", "SAL", "1C4", "5NP"]
VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"  # no I, O, Q
VIN_YEAR = "ABCDEFGHJKLMNPRSTVWXY123456789"
VIN_TRANSLIT = dict(zip("ABCDEFGHJKLMNPRSTUVWXYZ", [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7,
                                                    9, 2, 3, 4, 5, 6, 7, 8, 9]))
VIN_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
IBAN_LENGTHS = {"DE": 22, "GB": 22, "FR": 27, "ES": 24, "IT": 27, "NL": 18, "CH": 21, "BE": 16}


# ---------------------------------------------------------------- checksums

def luhn_check_digit(payload):
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number):
    return luhn_check_digit(number[:-1]) == number[-1]


def iban_check(country, bban):
    moved = bban + country + "00"
    digits = "".join(str(int(c, 36)) for c in moved)
    return "%02d" % (98 - int(digits) % 97)


def iban_ok(iban):
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def vin_check(vin17):
    total = 0
    for ch, w in zip(vin17, VIN_WEIGHTS):
        total += (int(ch) if ch.isdigit() else VIN_TRANSLIT[ch]) * w
    r = total % 11
    return "X" if r == 10 else str(r)


def dea_check(d6):
    d = [int(c) for c in d6]
    return str((d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10)


# ---------------------------------------------------------------- generator

class Gen:
    """All random choices for one corpus flow through self.r (one seeded RNG)."""

    def __init__(self, seed, first_names, last_names):
        self.r = random.Random(seed)
        self.first = first_names
        self.last = last_names
        known = set(first_names) | set(last_names)
        self.inv_first = [n for n in INVENTED_FIRST if n not in known]
        self.inv_last = [n for n in INVENTED_LAST if n not in known]
        self.ctx = {}  # per-document memory (e.g. the patient's last name for an echo)

    def digits(self, n, first_nonzero=False):
        s = "".join(self.r.choice(string.digits) for _ in range(n))
        if first_nonzero and s[0] == "0":
            s = self.r.choice("123456789") + s[1:]
        return s

    def letters(self, n):
        return "".join(self.r.choice(string.ascii_uppercase) for _ in range(n))

    def wchoice(self, weights):
        keys = list(weights)
        return self.r.choices(keys, weights=[weights[k] for k in keys])[0]

    # --- names
    def first_name(self):
        pool = self.inv_first if self.r.random() < P_INVENTED_NAME else self.first
        return self.r.choice(pool)

    def last_name(self):
        pool = self.inv_last if self.r.random() < P_INVENTED_NAME else self.last
        name = self.r.choice(pool)
        self.ctx["last"] = name
        return name

    def person(self, variant=""):
        if variant == "last":
            return self.last_name()
        if variant == "first":
            return self.first_name()
        if variant == "echo":  # repeat the document's last name if it has one
            return self.ctx.get("last") or self.last_name()
        f, l = self.first_name(), self.last_name()
        roll = self.r.random()
        if variant == "full" or roll < 0.75:
            return f"{f} {l}"
        if roll < 0.88:
            return f"{f} {self.r.choice(string.ascii_uppercase)}. {l}"
        return f"{l}, {f}"

    # --- identifiers
    def ssn(self, variant=""):
        while True:
            area = self.r.randint(1, 899)
            if area != 666:
                break
        group, serial = self.r.randint(1, 99), self.r.randint(1, 9999)
        if variant == "compact":
            return f"{area:03d}{group:02d}{serial:04d}"
        return f"{area:03d}-{group:02d}-{serial:04d}"

    def nanp(self):
        area = self.r.choice(NANP_AREAS)
        while True:
            ex = self.r.choice("23456789") + self.digits(2)
            if ex[1:] != "11" and ex != "555":
                break
        line = self.digits(4)
        fmt = self.r.choice(["paren", "dash", "dash", "dot", "plus1"])
        return {
            "paren": f"({area}) {ex}-{line}",
            "dash": f"{area}-{ex}-{line}",
            "dot": f"{area}.{ex}.{line}",
            "plus1": f"+1 {area} {ex} {line}",
        }[fmt]

    def intl_phone(self):
        kind = self.r.choice(["uk", "uk_spaced", "de", "fr"])
        if kind == "uk":
            return "+447" + self.r.choice("4578") + self.digits(8)
        if kind == "uk_spaced":
            return f"+44 7{self.r.choice('4578')}{self.digits(2)} {self.digits(6)}"
        if kind == "de":
            city = self.r.choice(["30", "40", "89", "69", "221"])
            return f"+49 {city} {self.digits(8 if len(city) == 2 else 7, True)}"
        # FR mobile; 63x/69x hold unassigned blocks, so avoid them
        return f"+33 6 {self.r.choice('0124578')}{self.digits(1)} " + " ".join(
            self.digits(2) for _ in range(3))

    def phone(self, variant=""):
        return self.intl_phone() if self.r.random() < 0.2 else self.nanp()

    def email(self, variant=""):
        f, l = self.r.choice(self.first).lower(), self.r.choice(self.last).lower().replace("'", "")
        local = self.r.choice([f"{f}.{l}", f"{f[0]}{l}", f"{f}{l}{self.r.randint(1, 99)}",
                               f"{f}_{l}", f"{l}.{f[0]}{self.r.randint(10, 9999)}"])
        return f"{local}@{self.r.choice(EMAIL_DOMAINS)}"

    def url(self, variant=""):
        org = self.r.choice(ORGS)
        tld = self.r.choice(["org", "com", "net", "health"])
        path = self.r.choice([
            f"/patients/{self.digits(6)}/records",
            f"/portal/appointments?id={self.digits(8)}",
            f"/billing/statement/{self.digits(7)}.pdf",
            f"/mychart/results/{self.letters(2).lower()}{self.digits(5)}",
            "/education/diabetes-care",
            f"/u/{self.r.choice(self.first).lower()}{self.digits(3)}/profile",
        ])
        if self.r.random() < 0.25:
            return f"www.{org}.{tld}{path}"
        scheme = self.r.choice(["https", "https", "http"])
        host = self.r.choice(["portal.", "www.", "my.", ""]) + f"{org}.{tld}"
        return f"{scheme}://{host}{path}"

    def ip(self, variant=""):
        if self.r.random() < 0.65:
            first = self.r.choice([10, 172, 192, self.r.randint(11, 223)])
            if first == 192:
                return f"192.168.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}"
            if first == 172:
                return f"172.{self.r.randint(16, 31)}.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}"
            return f"{first}.{self.r.randint(0, 255)}.{self.r.randint(0, 255)}.{self.r.randint(1, 254)}"
        groups = [self.r.randint(0, 0xFFFF) for _ in range(8)]
        groups[0] = self.r.choice([0x2001, 0x2600, 0x2a02, 0xFE80, 0x2607])
        if groups[0] == 0xFE80:
            groups[1:4] = [0, 0, 0]
        elif self.r.random() < 0.6:  # a zero run so that the compressed form uses ::
            start = self.r.randint(2, 5)
            for i in range(start, min(8, start + self.r.randint(1, 3))):
                groups[i] = 0
        addr = ipaddress.IPv6Address(":".join("%x" % g for g in groups))
        return addr.compressed if self.r.random() < 0.8 else addr.exploded

    def date(self, variant=""):
        d = datetime.date(1935, 1, 1) + datetime.timedelta(days=self.r.randint(0, 32800))
        fmt = variant or self.r.choice(["iso", "iso", "us", "us", "us_short", "long", "dmy", "abbr"])
        if fmt == "iso":
            return d.isoformat()
        if fmt == "us":
            return f"{d.month:02d}/{d.day:02d}/{d.year}"
        if fmt == "us_short":
            return f"{d.month}/{d.day}/{d.year % 100:02d}"
        if fmt == "long":
            return f"{MONTHS[d.month - 1]} {d.day}, {d.year}"
        if fmt == "dmy":
            return f"{d.day} {MON_ABBR[d.month - 1]} {d.year}"
        abbr = MON_ABBR[d.month - 1] + ("" if d.month == 5 else ".")
        return f"{abbr} {d.day}, {d.year}"

    def state(self):
        # One state per document, so city, state and ZIP prefix agree.
        if "state" not in self.ctx:
            self.ctx["state"] = self.r.choice(STATES)
        return self.ctx["state"]

    def city(self):
        return self.r.choice(CITIES[self.state()][0])

    def zip(self, variant=""):
        st = self.state()
        z = self.r.choice(CITIES[st][1]) + self.digits(3)
        return z + ("-" + self.digits(4) if self.r.random() < 0.25 else "")

    def street(self, variant=""):
        num = str(self.r.choice([self.r.randint(1, 99), self.r.randint(100, 999),
                                 self.r.randint(1000, 9999), self.r.randint(10000, 24999)]))
        parts = [num]
        if self.r.random() < 0.2:
            parts.append(self.r.choice(["N.", "S.", "E.", "W.", "North", "South", "East", "West"]))
        parts.append(self.r.choice(STREET_NAMES))
        parts.append(self.r.choice(STREET_SUFFIXES))
        s = " ".join(parts)
        if self.r.random() < 0.3 and variant != "nounit":
            s += self.r.choice([f", Apt {self.r.randint(1, 30)}{self.r.choice('ABCD')}",
                                f" Apt {self.r.randint(1, 999)}", f", Unit {self.r.randint(1, 40)}",
                                f", Suite {self.r.randint(1, 9)}00", f" #{self.r.randint(1, 60)}"])
        return s

    def mrn(self, variant=""):
        k = self.r.random()
        if k < 0.55:
            return self.digits(self.r.randint(6, 10))
        if k < 0.75:
            return "MRN-" + self.digits(8)
        return self.letters(self.r.choice([1, 2])) + self.digits(self.r.randint(6, 8))

    def health_plan(self, variant=""):
        k = self.r.random()
        if k < 0.45:
            return self.letters(3) + self.digits(9)
        if k < 0.8:
            return self.r.choice("WHMJKR") + self.digits(9)
        return self.letters(3) + self.digits(6) + self.r.choice(["01", "02", "A1"])

    def account(self, variant=""):
        return self.digits(self.r.randint(8, 12), first_nonzero=True)

    def license(self, variant=""):
        k = self.r.random()
        if k < 0.4:
            return self.r.choice(string.ascii_uppercase) + self.digits(8)
        if k < 0.8:
            return self.r.choice(string.ascii_uppercase) + self.digits(7)
        return self.r.choice(string.ascii_uppercase) + self.digits(12)

    def credit_card(self, variant=""):
        brand = self.r.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
        prefix, length = {
            "visa": ("4", 16), "mc": (str(self.r.randint(51, 55)), 16),
            "mc2": (str(self.r.randint(2221, 2720)), 16),
            "amex": (self.r.choice(["34", "37"]), 15),
            "discover": (self.r.choice(["6011", "65"]), 16),
        }[brand]
        body = prefix + self.digits(length - len(prefix) - 1)
        num = body + luhn_check_digit(body)
        assert luhn_ok(num)
        sep = self.r.choice([" ", "-", ""])
        groups = [4, 6, 5] if length == 15 else [4, 4, 4, 4]
        out, i = [], 0
        for g in groups:
            out.append(num[i:i + g])
            i += g
        return sep.join(out)

    def npi(self, variant=""):
        base = self.r.choice("12") + self.digits(8)
        npi = base + luhn_check_digit("80840" + base)
        assert luhn_ok("80840" + npi)
        return npi

    def dea(self, variant=""):
        d6 = self.digits(6)
        second = self.r.choice(string.ascii_uppercase + "9")
        return self.r.choice("ABFGMPRX") + second + d6 + dea_check(d6)

    def iban(self, variant=""):
        c = self.r.choice(sorted(IBAN_LENGTHS))
        if c == "DE":
            bban = self.digits(18)
        elif c == "GB":
            bban = self.letters(4) + self.digits(14)
        elif c == "FR":  # bank(5) branch(5) account(11) RIB key(2)
            bank, branch, acct = self.digits(5), self.digits(5), self.digits(11)
            key = 97 - (89 * int(bank) + 15 * int(branch) + 3 * int(acct)) % 97
            bban = f"{bank}{branch}{acct}{key:02d}"
        elif c == "ES":
            bban = self.digits(20)
        elif c == "IT":
            bban = self.r.choice(string.ascii_uppercase) + self.digits(22)
        elif c == "NL":
            bban = self.letters(4) + self.digits(10)
        elif c == "CH":
            bban = self.digits(17)
        else:  # BE: account(10) + national check (mod 97, 0 -> 97)
            acct = self.digits(10)
            chk = int(acct) % 97 or 97
            bban = f"{acct}{chk:02d}"
        iban = c + iban_check(c, bban) + bban
        assert len(iban) == IBAN_LENGTHS[c] and iban_ok(iban), iban
        if self.r.random() < 0.5:
            return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))
        return iban

    def vin(self, variant=""):
        body = (self.r.choice(VIN_WMI) + "".join(self.r.choice(VIN_CHARS) for _ in range(5))
                + "0" + self.r.choice(VIN_YEAR) + self.r.choice(VIN_CHARS) + self.digits(6))
        vin = body[:8] + vin_check(body) + body[9:]
        assert len(vin) == 17 and vin_check(vin) == vin[8] and not set(vin) & set("IOQ")
        return vin

    def imei(self, variant=""):
        body = self.r.choice(["35", "86", "01", "99"]) + self.digits(12)
        return body + luhn_check_digit(body)

    def mac(self, variant=""):
        b = [self.r.randint(0, 255) for _ in range(6)]
        b[0] &= 0xFE  # unicast
        fmt = self.r.choice(["colon", "colon", "dash", "cisco"])
        if fmt == "colon":
            return ":".join("%02X" % x for x in b)
        if fmt == "dash":
            return "-".join("%02x" % x for x in b)
        h = "".join("%02x" % x for x in b)
        return f"{h[0:4]}.{h[4:8]}.{h[8:12]}"

    def value(self, typ, variant=""):
        fn = {
            "PERSON": self.person, "DATE": self.date, "PHONE": self.phone, "EMAIL": self.email,
            "URL": self.url, "IP_ADDRESS": self.ip, "ZIP": self.zip, "STREET_ADDRESS": self.street,
            "SSN": self.ssn, "MRN": self.mrn, "HEALTH_PLAN": self.health_plan,
            "ACCOUNT": self.account, "LICENSE": self.license, "CREDIT_CARD": self.credit_card,
            "NPI": self.npi, "DEA": self.dea, "IBAN": self.iban, "VIN": self.vin,
            "IMEI": self.imei, "MAC_ADDRESS": self.mac,
        }[typ]
        v = fn(variant)
        assert v.isascii() and v == v.strip() and v, (typ, v)
        return v

    # --- unlabeled fillers and decoys
    def honorific(self):
        self.ctx["hon"] = self.r.choice(["Mr.", "Ms.", "Mrs.", "Mr.", "Ms."])
        return self.ctx["hon"]

    def bad_luhn16(self):
        n = self.r.choice("3456") + self.digits(15)
        if luhn_ok(n):
            n = n[:-1] + str((int(n[-1]) + 1) % 10)
        assert not luhn_ok(n)
        return n

    def filler(self, name):
        r = self.r
        f = {
            "city": self.city, "state": self.state,
            "hon": self.honorific,
            "age": lambda: str(r.randint(19, 88)),
            "sex": lambda: r.choice(["male", "man"] if self.ctx.get("hon") == "Mr."
                                    else ["female", "woman"]),
            "med": lambda: r.choice(MEDS), "dx": lambda: r.choice(DX),
            "payer": lambda: r.choice(PAYERS), "dept": lambda: r.choice(DEPTS),
            "dose": lambda: r.choice(["500 mg", "25 mg", "10 mg", "0.5 mL", "40 mg", "81 mg",
                                      "1 g", "2.5 mg", "100 mcg", "10 units", "0.25 mg"]),
            "ml": lambda: r.choice(["0.5", "1.5", "2", "10", "250"]),
            "freq": lambda: r.choice(["twice daily", "once daily", "at bedtime", "every 6 hours",
                                      "BID", "TID", "PRN"]),
            "frac": lambda: r.choice(["1/2", "1/4", "3/4", "1 1/2"]),
            "a1c": lambda: f"{r.randint(5, 11)}.{r.randint(0, 9)}",
            "bp": lambda: f"{r.randint(98, 168)}/{r.randint(58, 102)}",
            "hr": lambda: str(r.randint(52, 118)),
            "icd": lambda: r.choice(ICD10), "cpt": lambda: r.choice(CPT),
            "order_id": lambda: r.choice([f"A-{self.digits(6)}", f"ORD{self.digits(7)}",
                                          f"{self.digits(3)}-{self.digits(7)}"]),
            "invoice": lambda: f"INV-{r.randint(2015, 2024)}-{self.digits(5)}",
            "bad_card": self.bad_luhn16,
            "bad_card_spaced": lambda: " ".join(re.findall("....", self.bad_luhn16())),
            "bad_ssn": lambda: "%s-%02d-%04d" % (r.choice(["000", "666", "9" + self.digits(2)]),
                                                 r.randint(1, 69), r.randint(1, 9999)),
            "room": lambda: str(r.choice([r.randint(100, 999), r.randint(1000, 5999)])),
            "bed": lambda: r.choice(["A", "B", "1", "2"]),
            "page": lambda: str(r.randint(1, 4)), "pages": lambda: str(r.randint(5, 12)),
            "version": lambda: f"v{r.randint(1, 9)}.{r.randint(0, 20)}.{r.randint(0, 30)}",
            "dotted": lambda: ".".join(str(r.randint(0, 12)) for _ in range(5)),
            "time": lambda: f"{r.randint(7, 19)}:{r.choice(['00', '15', '30', '45', '05'])}",
            "time_s": lambda: f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}",
            "year": lambda: str(r.randint(1995, 2024)),
            "sku": lambda: f"{self.digits(2)}-{self.digits(4)}-{self.digits(2)}",
            "lot": lambda: f"{self.digits(2)}{self.letters(1)}{self.digits(3)}",
            "count": lambda: str(r.randint(2, 12)),
            "num": lambda: str(r.randint(1, 9)),
            "temp": lambda: f"{r.randint(97, 101)}.{r.randint(0, 9)}",
            "spo2": lambda: str(r.randint(91, 100)),
            "wbc": lambda: f"{r.randint(3, 16)}.{r.randint(0, 9)}",
            "qty": lambda: str(r.choice([30, 60, 90, 14, 28])),
            "amount": lambda: f"{r.randint(10, 2400)}.{r.randint(0, 99):02d}",
        }[name]
        v = f()
        assert v.isascii()
        return v


# ---------------------------------------------------------------- documents

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([a-z_]+))?\}")


class Doc:
    """Accumulates text and entity spans; offsets are checked as pieces are appended."""

    def __init__(self):
        self.parts, self.ents, self.pos = [], [], 0

    def add(self, text, typ=None):
        assert text.isascii(), text
        if typ:
            self.ents.append({"type": typ, "start": self.pos, "end": self.pos + len(text),
                              "_v": text})
        self.parts.append(text)
        self.pos += len(text)

    def extend(self, pieces):
        for text, typ in pieces:
            self.add(text, typ)

    def finish(self):
        text = "".join(self.parts)
        assert text.isascii() and len(text.encode()) == len(text)
        prev_end = 0
        for e in self.ents:
            assert text[e["start"]:e["end"]] == e.pop("_v")
            assert e["start"] >= prev_end, "overlapping spans"
            prev_end = e["end"]
        return text, self.ents


def count_ents(template):
    return sum(1 for m in PLACEHOLDER.finditer(template) if m.group(1).isupper())


def render(g, template):
    """'{TYPE[:variant]}' -> labeled value, '{filler}' -> unlabeled text. Returns pieces."""
    pieces, last = [], 0
    assert "{" not in PLACEHOLDER.sub("", template), "malformed placeholder: " + template
    for m in PLACEHOLDER.finditer(template):
        if m.start() > last:
            pieces.append((template[last:m.start()], None))
        name, variant = m.group(1), m.group(2) or ""
        if name.isupper():
            pieces.append((g.value(name, variant), name))
        else:
            pieces.append((g.filler(name), None))
        last = m.end()
    if last < len(template):
        pieces.append((template[last:], None))
    return pieces


# Prose sentences per type (clinical notes; JSON "notes" fields reuse them).
NOTE_TEMPLATES = {
    "PERSON": [
        "Patient: {PERSON}", "Name: {PERSON}", "{hon} {PERSON:last} is a {age}-year-old {sex} "
        "who presents with {dx}.", "Seen by {PERSON:full}, NP, in {dept}.",
        "Attending: Dr. {PERSON:full}", "Discussed with the patient's daughter, {PERSON}, "
        "who agrees with the plan.", "Dr. {PERSON:last} was consulted regarding {dx}.",
        "Referred by Dr. {PERSON:full} for {dx}.", "{hon} {PERSON:last} tolerated the procedure well.",
        "Emergency contact: {PERSON} (spouse).",
    ],
    "DATE": [
        "DOB: {DATE}", "Date of birth {DATE}.", "Admitted on {DATE} and discharged on {DATE}.",
        "Last colonoscopy {DATE}, normal.", "Follow up on {DATE} in {dept}.",
        "Date of service: {DATE}", "Symptoms started on {DATE}.", "Last tetanus booster {DATE}.",
    ],
    "PHONE": [
        "Phone: {PHONE}", "Fax: {PHONE}", "Call daughter at {PHONE} with results.",
        "Contact: {PHONE} (cell)", "Pharmacy fax {PHONE}.", "Patient can be reached at {PHONE}.",
        "Tel {PHONE} / Fax: {PHONE}",
    ],
    "EMAIL": ["Email: {EMAIL}", "Patient prefers contact via {EMAIL}.",
              "Results sent to {EMAIL} per request."],
    "URL": ["Patient portal: {URL}", "Education materials sent: {URL}.",
            "Outside records uploaded to {URL} for review."],
    "IP_ADDRESS": ["Telehealth session connected from {IP_ADDRESS}.",
                   "Portal login from IP {IP_ADDRESS} flagged by security.",
                   "Video visit client address {IP_ADDRESS}."],
    "ZIP": ["Lives in {city}, {state} {ZIP}.", "ZIP {ZIP}", "Mailing zip code {ZIP}.",
            "Relocated to {city}, {state} {ZIP} last month."],
    "STREET_ADDRESS": ["Address: {STREET_ADDRESS}, {city}, {state} {ZIP}",
                       "Lives at {STREET_ADDRESS} with her husband.",
                       "Home address {STREET_ADDRESS}\n{city}, {state} {ZIP}",
                       "Home health to visit at {STREET_ADDRESS}, {city}."],
    "SSN": ["SSN: {SSN}", "SSN {SSN:compact}", "Social Security number {SSN} on file.",
            "SSN# {SSN}"],
    "MRN": ["MRN: {MRN}", "MRN {MRN}", "Medical record number {MRN}", "medical record # {MRN}"],
    "HEALTH_PLAN": ["Member ID: {HEALTH_PLAN}", "Insurance: {payer}, subscriber ID {HEALTH_PLAN}.",
                    "health plan ID {HEALTH_PLAN}", "Verified {payer} policy number {HEALTH_PLAN}."],
    "ACCOUNT": ["Account number: {ACCOUNT}", "acct # {ACCOUNT}", "Account No. {ACCOUNT}",
                "Balance transferred to account number {ACCOUNT}."],
    "LICENSE": ["Driver's license {LICENSE} ({state}) verified at registration.",
                "license number {LICENSE}", "DL# {LICENSE}", "ID checked: driver's license {LICENSE}."],
    "CREDIT_CARD": ["Copay paid with card {CREDIT_CARD}.", "Card number: {CREDIT_CARD}",
                    "Payment on file: {CREDIT_CARD} exp 08/27."],
    "NPI": ["Referring provider NPI {NPI}.", "NPI: {NPI}", "Ordering clinician NPI {NPI}."],
    "DEA": ["Prescriber DEA {DEA}.", "DEA# {DEA}", "Controlled substance script, DEA number {DEA}."],
    "IBAN": ["Refund to be wired to IBAN {IBAN}.", "IBAN: {IBAN}",
             "International patient, bank account {IBAN}."],
    "VIN": ["MVA claim, vehicle VIN {VIN}.", "VIN: {VIN}", "Struck while driving; auto insurer lists VIN {VIN}."],
    "IMEI": ["Remote monitoring device IMEI {IMEI}.", "Glucometer paired (IMEI: {IMEI}).",
             "Cellular BP cuff IMEI {IMEI} shipped."],
    "MAC_ADDRESS": ["Infusion pump MAC {MAC_ADDRESS} reassigned.", "Device MAC address: {MAC_ADDRESS}",
                    "Telemetry pack {MAC_ADDRESS} paired to bed."],
}

CHAT_TEMPLATES = {
    "PERSON": ["Hi, my name is {PERSON} and I need to refill my prescription.",
               "This is {PERSON:full}, calling about my mother's appointment.",
               "It's {PERSON:first}. Dr. {PERSON:last} said to message here.",
               "my name is {PERSON} and I can't log in"],
    "DATE": ["My date of birth is {DATE}.", "dob {DATE}", "The appointment was on {DATE}.",
             "Can I move it to {DATE}?"],
    "PHONE": ["You can reach me at {PHONE}.", "call me back on {PHONE} please",
              "My doctor's fax is Fax: {PHONE}"],
    "EMAIL": ["my email is {EMAIL}", "Please send the form to {EMAIL}."],
    "URL": ["The link {URL} isn't working for me.", "I found this page: {URL}"],
    "IP_ADDRESS": ["IT asked for my IP, it says {IP_ADDRESS}.", "the error page shows {IP_ADDRESS}"],
    "ZIP": ["My zip is {ZIP}.", "I'm in {city}, {state} {ZIP}."],
    "STREET_ADDRESS": ["I moved to {STREET_ADDRESS}, {city}, {state} {ZIP}.",
                       "Ship it to {STREET_ADDRESS} please."],
    "SSN": ["My SSN is {SSN}.", "SSN {SSN:compact} if you need it"],
    "MRN": ["My MRN is {MRN}.", "medical record # {MRN}"],
    "HEALTH_PLAN": ["My member ID is {HEALTH_PLAN}.", "The subscriber ID on my card is {HEALTH_PLAN}."],
    "ACCOUNT": ["My account number is {ACCOUNT}.", "acct # {ACCOUNT}"],
    "LICENSE": ["My driver's license is {LICENSE}.", "DL# {LICENSE}"],
    "CREDIT_CARD": ["Can you charge my card {CREDIT_CARD}?", "card is {CREDIT_CARD}, exp 04/26"],
    "NPI": ["My doctor's NPI is {NPI}.", "the referral lists NPI {NPI}"],
    "DEA": ["The DEA number on the script is {DEA}.", "pharmacy says DEA {DEA} is invalid?"],
    "IBAN": ["Please send the refund to IBAN {IBAN}.", "my IBAN is {IBAN}"],
    "VIN": ["My car's VIN is {VIN}, for the accident claim.", "VIN {VIN}"],
    "IMEI": ["The IMEI on the monitor is {IMEI}.", "IMEI: {IMEI}"],
    "MAC_ADDRESS": ["The glucose meter's MAC is {MAC_ADDRESS}.", "router MAC {MAC_ADDRESS}"],
}

# Unlabeled content. Every kind draws decoys from here.
DECOY_SENTENCES = [
    "Take {frac} tablet of {med} {dose} {freq}.", "HbA1c {a1c}% today; BP {bp}, HR {hr}.",
    "Dx: {icd}; billed CPT {cpt}.", "Order #{order_id} was placed for {med} {dose}.",
    "Invoice {invoice} was sent to the billing office.",
    "Reference {bad_card} was declined by the processor.",
    "Claim ID {bad_ssn} is pending review.", "Room {room}, bed {bed}.",
    "Scanned document page {page} of {pages}.", "EHR client {version} crashed at {time}.",
    "Firmware {dotted} installed on the pump.", "Symptoms began in {year}.",
    "Quit smoking in {year}.", "Lot {lot}, SKU {sku}.", "{count} episodes of emesis overnight.",
    "Vitals at {time_s}: T {temp} F, SpO2 {spo2}%.", "Give {ml} mL of {med} IV.",
    "WBC {wbc}, ICD-10 {icd}.", "Dispense #{qty}, {count} refills.",
    "Gift card {bad_card_spaced} applied to balance of ${amount}.",
    "Next dose due at {time}.", "Tracking ref {bad_ssn}.",
]
FILLER_SENTENCES = [
    "Denies chest pain or shortness of breath.", "Continue {med} {dose} {freq}.",
    "Assessment: {dx}, stable.", "Plan to recheck labs in {count} weeks.",
    "No known drug allergies.", "Patient counseled on diet and exercise.",
    "Reports good adherence to {med}.", "Lungs clear to auscultation bilaterally.",
    "Will follow up with {dept}.", "Tolerating oral intake.",
]
CHAT_FILLER_USER = [
    "How do I reset my password?", "Is the pharmacy open on Sunday?",
    "Can I take {med} with food?", "I was told to take {frac} tablet, is that right?",
    "my order #{order_id} never arrived", "The app shows version {version}, is that current?",
    "What does CPT {cpt} mean on my bill?", "I've had this since {year}.",
]
CHAT_FILLER_ASSISTANT = [
    "Thanks, I can help with that.", "I've sent a message to your care team.",
    "Your next appointment is at {time}.", "Please take {med} {dose} {freq} as prescribed.",
    "That code ({icd}) is for {dx}.", "I've updated your record.",
    "Order #{order_id} is on its way.", "Invoice {invoice} shows a balance of ${amount}.",
]


def pick_types(g, n):
    types = list(TYPE_WEIGHTS)
    return g.r.choices(types, weights=[TYPE_WEIGHTS[t] for t in types], k=n)


def fill_templates(g, table, n):
    """Choose templates until n labeled values are placed (never more)."""
    out, left, guard = [], n, 0
    while left > 0 and guard < 200:
        guard += 1
        typ = pick_types(g, 1)[0]
        options = [t for t in table[typ] if 1 <= count_ents(t) <= left]
        if not options:
            continue
        t = g.r.choice(options)
        out.append(t)
        left -= count_ents(t)
    return out


def make_note(g, doc, n):
    picked = fill_templates(g, NOTE_TEMPLATES, n)
    # Templates without a closing period are field lines ("MRN: ..."): they form the header.
    header = [t for t in picked if not t.endswith(".")]
    prose = [t for t in picked if t.endswith(".")]
    prose += g.r.sample(DECOY_SENTENCES, g.r.randint(1, 3))
    prose += g.r.sample(FILLER_SENTENCES, g.r.randint(3, 7))
    if g.r.random() < 0.3:
        header.append(g.r.choice(["Room: {room}", "Dept: {dept}", "Page {page} of {pages}"]))
    g.r.shuffle(header)
    g.r.shuffle(prose)
    doc.add(g.r.choice(["PROGRESS NOTE", "DISCHARGE SUMMARY", "TELEPHONE ENCOUNTER",
                        "Clinic Note", "ED Provider Note", "HISTORY AND PHYSICAL"]) + "\n")
    for t in header:
        doc.extend(render(g, t))
        doc.add("\n")
    sections = g.r.sample(["HPI", "Assessment/Plan", "Social History", "Medications",
                           "Hospital Course"], 3)
    per = -(-len(prose) // g.r.randint(1, 3))  # ceil: split prose into 1-3 sections
    for i in range(0, len(prose), per):
        doc.add("\n" + sections[i // per] + ": ")
        for j, t in enumerate(prose[i:i + per]):
            if j:
                doc.add(" ")
            doc.extend(render(g, t))
        doc.add("\n")


# JSON / SQL field specs: type -> [(key, column, variant)]
FIELDS = {
    "PERSON": [("patient_name", "patient_name", "full"), ("full_name", "name", "full"),
               ("guarantor", "guarantor", "full"), ("last_name", "last_name", "last"),
               ("first_name", "first_name", "first")],
    "DATE": [("dob", "dob", ""), ("admit_date", "admit_date", "iso"),
             ("discharge_date", "discharge_date", "iso"), ("date_of_service", "dos", "")],
    "PHONE": [("phone", "phone", ""), ("mobile", "mobile", ""), ("fax", "fax", ""),
              ("contact_phone", "home_phone", "")],
    "EMAIL": [("email", "email", ""), ("contact_email", "email_address", "")],
    "URL": [("portal_url", "portal_url", ""), ("callback_url", "profile_url", "")],
    "IP_ADDRESS": [("client_ip", "client_ip", ""), ("last_login_ip", "login_ip", "")],
    "ZIP": [("zip", "zip", ""), ("postal_code", "postal_code", "")],
    "STREET_ADDRESS": [("street", "street", ""), ("address_line1", "address1", "")],
    "SSN": [("ssn", "ssn", "")],
    "MRN": [("mrn", "mrn", ""), ("medical_record_number", "med_rec_no", "")],
    "HEALTH_PLAN": [("member_id", "member_id", ""), ("subscriber_id", "subscriber_id", ""),
                    ("policy_number", "policy_no", "")],
    "ACCOUNT": [("account_number", "account_no", ""), ("acct_no", "acct_num", "")],
    "LICENSE": [("drivers_license", "dl_number", ""), ("license_number", "drivers_lic", "")],
    "CREDIT_CARD": [("card_number", "card_number", ""), ("cc", "cc_num", "")],
    "NPI": [("npi", "npi", ""), ("provider_npi", "prov_npi", "")],
    "DEA": [("dea_number", "dea", "")],
    "IBAN": [("iban", "iban", "")],
    "VIN": [("vin", "vin", "")],
    "IMEI": [("imei", "device_imei", "")],
    "MAC_ADDRESS": [("mac", "mac_addr", ""), ("device_mac", "wifi_mac", "")],
}
NONPHI_FIELDS = [  # (key, generator) -- unlabeled, includes the decoys
    ("status", lambda g: g.r.choice(["active", "discharged", "pending", "closed"])),
    ("encounter_type", lambda g: g.r.choice(["office", "telehealth", "inpatient", "ED"])),
    ("dept", lambda g: g.filler("dept")), ("icd10", lambda g: g.filler("icd")),
    ("cpt", lambda g: g.filler("cpt")), ("dose", lambda g: g.filler("dose")),
    ("sig", lambda g: f"{g.filler('frac')} tab {g.filler('freq')}"),
    ("bp", lambda g: g.filler("bp")), ("hba1c", lambda g: g.filler("a1c") + "%"),
    ("order_id", lambda g: g.filler("order_id")), ("invoice", lambda g: g.filler("invoice")),
    ("room", lambda g: g.filler("room")), ("client_version", lambda g: g.filler("version")),
    ("firmware", lambda g: g.filler("dotted")), ("appt_time", lambda g: g.filler("time")),
    ("logged_at", lambda g: g.filler("time_s")), ("sku", lambda g: g.filler("sku")),
    ("ref", lambda g: g.filler("bad_card")), ("claim_ref", lambda g: g.filler("bad_ssn")),
    ("lot", lambda g: g.filler("lot")),
]
NONPHI_NUMERIC = [("dx_year", "year"), ("qty", "qty"), ("page", "page"), ("refills", "count")]


class Raw:
    """A JSON fragment emitted verbatim (numbers)."""

    def __init__(self, s):
        self.s = s


def field_value(g, typ, variant):
    """A labeled JSON string value (as pieces)."""
    return [(g.value(typ, variant), typ)]


def json_pieces(obj, indent, level=0):
    """Serialize dict/list/str/Raw/pieces-list into pieces, tracking labeled spans."""
    nl = "\n" + " " * (indent * (level + 1)) if indent else ""
    end_nl = "\n" + " " * (indent * level) if indent else ""
    sep = ", " if not indent else ","
    colon = ": "
    out = []
    if isinstance(obj, dict):
        out.append(("{", None))
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append((sep, None))
            out.append((nl + json.dumps(k) + colon, None))
            out.extend(json_pieces(v, indent, level + 1))
        out.append((end_nl + "}", None))
    elif isinstance(obj, Raw):
        out.append((obj.s, None))
    elif isinstance(obj, str):
        out.append((json.dumps(obj), None))
    else:  # pieces list -> one JSON string
        for text, _ in obj:
            assert json.dumps(text) == '"' + text + '"', "value would need escaping"
        out.append(('"', None))
        out.extend(obj)
        out.append(('"', None))
    return out


def make_json(g, doc, n):
    obj = {}
    left = n
    types = pick_types(g, n)
    for typ in types:
        if left <= 0:
            break
        free = [f for f in FIELDS[typ] if f[0] not in obj]
        if not free:
            continue
        key, _, variant = g.r.choice(free)
        if typ == "STREET_ADDRESS" and "address" not in obj and left >= 2:
            obj["address"] = {"street": field_value(g, typ, ""), "city": g.city(),
                              "state": g.state(), "zip": field_value(g, "ZIP", "")}
            left -= 2
            continue
        if typ == "PERSON" and g.r.random() < 0.25 and "provider" not in obj:
            obj["provider"] = [("Dr. ", None), (g.value("PERSON", "full"), "PERSON")]
            left -= 1
            continue
        if typ == "PHONE" and g.r.random() < 0.2 and "emergency_contact" not in obj and left >= 2:
            obj["emergency_contact"] = {"name": field_value(g, "PERSON", "full"),
                                        "relationship": g.r.choice(["spouse", "son", "daughter"]),
                                        "phone": field_value(g, "PHONE", "")}
            left -= 2
            continue
        if typ in ("HEALTH_PLAN",) and "insurance" not in obj:
            obj["insurance"] = {"payer": g.filler("payer"), key: field_value(g, typ, variant)}
            left -= 1
            continue
        obj[key] = field_value(g, typ, variant)
        left -= 1
    if left > 0 and g.r.random() < 0.5:  # free-text notes field with prose inside the string
        for t in fill_templates(g, NOTE_TEMPLATES, left):
            if "\n" not in t:
                obj.setdefault("notes", [])
                if obj["notes"]:
                    obj["notes"].append((" ", None))
                obj["notes"].extend(render(g, t))
    for key, fn in g.r.sample(NONPHI_FIELDS, g.r.randint(2, 5)):
        obj[key] = fn(g)
    if g.r.random() < 0.5:
        key, name = g.r.choice(NONPHI_NUMERIC)
        obj[key] = Raw(g.filler(name))
    items = list(obj.items())
    g.r.shuffle(items)
    ident = ("id", Raw(str(g.r.randint(1, 999999))))
    obj = dict([ident] + items)
    doc.extend(json_pieces(obj, g.r.choice([0, 2, 2])))


def make_sql(g, doc, n):
    rows = g.r.choice([r for r in (1, 1, 2, 3) if r <= max(1, n)]) if n else g.r.randint(1, 3)
    k = n // rows if n else 0
    cols, seen = [], set()
    for typ in pick_types(g, k * 3):
        if len(cols) >= k:
            break
        key, col, variant = g.r.choice(FIELDS[typ])
        if col not in seen:
            seen.add(col)
            cols.append((col, typ, variant))
    nonphi = [(k2, fn) for k2, fn in g.r.sample(NONPHI_FIELDS, g.r.randint(1, 3))]
    header = ["id"] + [c for c, _, _ in cols] + [k2 for k2, _ in nonphi]
    table = []
    for _ in range(rows):
        row = [(str(g.r.randint(1, 99999)), None)]
        for col, typ, variant in cols:
            if typ == "ZIP":
                g.ctx["state"] = g.r.choice(STATES)
            row.append((g.value(typ, variant), typ))
        row += [(fn(g), None) for _, fn in nonphi]
        table.append(row)
    style = g.r.choice(["psql", "psql", "pipe", "tab"])
    if style == "psql":  # aligned psql output: header, rule, rows, row count
        widths = [max(len(header[i]), *(len(r[i][0]) for r in table)) for i in range(len(header))]
        doc.add(" " + " | ".join(h.center(w) for h, w in zip(header, widths)).rstrip() + "\n")
        doc.add("-+-".join("-" * w for w in widths).join(["-", "-"]) + "\n")
        for r in table:
            for i, (val, typ) in enumerate(r):
                doc.add(" " if i == 0 else " | ")
                doc.add(val, typ)
                if i < len(r) - 1:
                    doc.add(" " * (widths[i] - len(val)))
            doc.add("\n")
        doc.add(f"({rows} row{'s' if rows > 1 else ''})\n")
    else:
        sep = "|" if style == "pipe" else "\t"
        doc.add(sep.join(header) + "\n")
        for r in table:
            for i, (val, typ) in enumerate(r):
                if i:
                    doc.add(sep)
                doc.add(val, typ)
            doc.add("\n")


def make_chat(g, doc, n):
    turns = fill_templates(g, CHAT_TEMPLATES, n)
    user_lines = turns + g.r.sample(CHAT_FILLER_USER, g.r.randint(1, 3))
    g.r.shuffle(user_lines)
    style = g.r.choice(["User: {}\nAssistant: {}\n", "[user] {}\n[assistant] {}\n",
                        "user: {}\nassistant: {}\n"])
    u_pre, a_pre = style.split("{}")[0], style.split("{}")[1]
    echo_left = 1 if n < 8 else 0
    for line in user_lines:
        doc.add(u_pre)
        doc.extend(render(g, line))
        doc.add(a_pre)
        reply = g.r.choice(CHAT_FILLER_ASSISTANT)
        # Echo the name (a second mention of the same value), keeping within 8 entities.
        if "last" in g.ctx and echo_left and g.r.random() < 0.3:
            echo_left -= 1
            reply = "Thanks, {hon} {PERSON:echo}. " + reply
        doc.extend(render(g, reply))
        doc.add("\n")


MAKERS = {"note": make_note, "json": make_json, "sql_row": make_sql, "chat": make_chat}


def generate(seed, n_docs, first, last):
    g = Gen(seed, first, last)
    for i in range(n_docs):
        g.ctx = {}
        kind = g.wchoice(KIND_WEIGHTS)
        n = 0 if g.r.random() < P_NO_ENTITIES else g.r.choices(range(1, 9), N_ENTITY_WEIGHTS)[0]
        doc = Doc()
        MAKERS[kind](g, doc, n)
        text, ents = doc.finish()
        assert len(ents) <= 8
        yield {"id": i, "kind": kind, "text": text, "entities": ents}


def load_names(path):
    with open(path) as fh:
        return [line.strip() for line in fh if line.strip()]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_names = os.path.normpath(os.path.join(here, "..", "..", "core", "src", "mask", "names"))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--names-dir", default=default_names)
    a = ap.parse_args()
    first = load_names(os.path.join(a.names_dir, "first.txt"))
    last = load_names(os.path.join(a.names_dir, "last.txt"))

    counts, kinds, empty, nbytes = collections.Counter(), collections.Counter(), 0, 0
    with open(a.out, "w") as fh:
        for rec in generate(a.seed, a.docs, first, last):
            fh.write(json.dumps(rec) + "\n")
            kinds[rec["kind"]] += 1
            counts.update(e["type"] for e in rec["entities"])
            empty += not rec["entities"]
            nbytes += len(rec["text"])
    summary = {"docs": a.docs, "text_bytes": nbytes, "docs_without_entities": empty,
               "kinds": dict(sorted(kinds.items())), "entities": dict(sorted(counts.items())),
               "entities_total": sum(counts.values())}
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
