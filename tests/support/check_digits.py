"""Independent check of LOINC and SNOMED CT check digits, with python-stdnum.

usage:
  check_digits.py extract SHARED_DATA_DIR   > codes.tsv
      every distinct LOINC and SNOMED CT code in the US Core examples
      (fhir-examples/us-core) and the bundled Synthea data (bulk/synthea-10,
      bulk/bds-r4-10), with its check digit as stdnum computes it
  check_digits.py verify codes.tsv
      every code passes, its recorded check digit is stdnum's, and every
      code with one digit changed fails; prints a JSON summary, exit 1 on
      any disagreement
  check_digits.py verdicts < lines
      reads `system<TAB>code` lines, prints `valid` or `invalid` for each

LOINC terms: stdnum.luhn (LOINC's mod 10 is Luhn over the digits before the
hyphen). LOINC answers and parts (LA..., LP...) carry letters, which stdnum's
Luhn does not take; they use the OpenMRS variant LOINC names (every
character weighs its ASCII code minus 48), transcribed below from its
published description, so for those the check is a second implementation,
not stdnum. SNOMED CT: stdnum.verhoeff. Needs python-stdnum (tested: 2.2).
"""

import glob
import json
import os
import sys

from stdnum import luhn, verhoeff

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

# LOINC Users' Guide 12C: issued with check digits that fail the algorithm.
LOINC_ISSUED_WRONG = {
    "11491-6", "11501-6", "5895-7", "5896-5", "5897-3", "5928-1", "6028-3",
    "6415-5", "6580-7", "6645-7", "6646-5", "6647-3", "6648-1", "6649-9",
}


def openmrs_check_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        weight = ord(ch) - 48
        total += 2 * weight - 9 * (weight // 5) if i % 2 == 0 else weight
    return (10 - (abs(total) + 10) % 10) % 10


def loinc_check_digit(body):
    """(check digit, method) for the part before the hyphen."""
    if body.isdigit():
        return int(luhn.calc_check_digit(body)), "stdnum.luhn"
    return openmrs_check_digit(body), "openmrs-luhn"


def is_valid(system, code):
    if system == LOINC:
        body, _, check = code.rpartition("-")
        if not body or len(check) != 1 or not check.isdigit():
            return False
        if code in LOINC_ISSUED_WRONG:
            return True
        if body.isdigit():
            return luhn.is_valid(body + check)
        prefix, digits = body[:2], body[2:]
        if prefix not in ("LA", "LP") or not digits.isdigit():
            return False
        return openmrs_check_digit(body) == int(check)
    if system == SNOMED:
        return code.isdigit() and 6 <= len(code) <= 18 and code[0] != "0" and verhoeff.is_valid(code)
    raise ValueError(system)


def check_digit(system, code):
    if system == LOINC:
        return loinc_check_digit(code.rpartition("-")[0])
    return int(verhoeff.calc_check_digit(code[:-1])), "stdnum.verhoeff"


def mutants(code):
    """The code with one digit changed, every position, every other digit."""
    for i, ch in enumerate(code):
        if ch.isdigit():
            for d in "0123456789":
                if d != ch:
                    yield code[:i] + d + code[i + 1:]


def walk(value, out):
    if isinstance(value, dict):
        system, code = value.get("system"), value.get("code")
        if system in (LOINC, SNOMED) and isinstance(code, str):
            out.add((system, code))
        for v in value.values():
            walk(v, out)
    elif isinstance(value, list):
        for v in value:
            walk(v, out)


def extract(shared):
    sources = {
        "us-core-examples": sorted(glob.glob(os.path.join(shared, "fhir-examples/us-core/*.json"))),
        "synthea-10": sorted(glob.glob(os.path.join(shared, "bulk/synthea-10/*.ndjson"))),
        "bds-r4-10": sorted(glob.glob(os.path.join(shared, "bulk/bds-r4-10/*.ndjson"))),
    }
    seen = {}
    for name, files in sources.items():
        for path in files:
            with open(path, encoding="utf-8") as f:
                docs = [json.loads(line) for line in f if line.strip()] if path.endswith(".ndjson") else [json.load(f)]
            found = set()
            for doc in docs:
                walk(doc, found)
            for key in found:
                seen.setdefault(key, set()).add(name)
    print("# LOINC and SNOMED CT codes found in ../shared/data (see SOURCES.md here), with the")
    print("# check digit python-stdnum computes (openmrs-luhn: LOINC answers/parts, see check_digits.py).")
    print("# Written by: tests/support/check_digits.py extract ../shared/data")
    print("system\tcode\tcheck_digit\tmethod\tsources")
    for (system, code), names in sorted(seen.items()):
        digit, method = check_digit(system, code)
        print(f"{system}\t{code}\t{digit}\t{method}\t{','.join(sorted(names))}")


def read_tsv(path):
    with open(path, encoding="utf-8") as f:
        lines = [l.rstrip("\n") for l in f if l.strip() and not l.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, l.split("\t"))) for l in lines[1:]]


def verify(path):
    rows = read_tsv(path)
    failures, mutations, exceptions = [], 0, 0
    for row in rows:
        system, code = row["system"], row["code"]
        if not is_valid(system, code):
            failures.append(f"{code}: fails")
        digit, method = check_digit(system, code)
        if (str(digit), method) != (row["check_digit"], row["method"]):
            failures.append(f"{code}: recorded {row['check_digit']} ({row['method']}), stdnum {digit} ({method})")
        for mutant in mutants(code):
            if system == LOINC and mutant in LOINC_ISSUED_WRONG:
                exceptions += 1
                continue
            mutations += 1
            if is_valid(system, mutant):
                failures.append(f"{code} -> {mutant}: passes")
    summary = {
        "stdnum": __import__("stdnum").__version__,
        "codes": len(rows),
        "loinc": sum(r["system"] == LOINC for r in rows),
        "snomed": sum(r["system"] == SNOMED for r in rows),
        "mutations_rejected": mutations - sum("passes" in f for f in failures),
        "mutations": mutations,
        "skipped_issued_exceptions": exceptions,
        "failures": failures,
    }
    print(json.dumps(summary, indent=1))
    return 1 if failures else 0


def verdicts():
    for line in sys.stdin:
        line = line.rstrip("\n")
        if line:
            system, code = line.split("\t", 1)
            print("valid" if is_valid(system, code) else "invalid")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "extract":
        extract(argv[2])
        return 0
    if len(argv) == 3 and argv[1] == "verify":
        return verify(argv[2])
    if len(argv) == 2 and argv[1] == "verdicts":
        return verdicts()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
