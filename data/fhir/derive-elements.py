#!/usr/bin/env python3
"""Writes elements.tsv: the root elements of every FHIR R4 and R5 resource type.

Usage: derive-elements.py R4_PACKAGE_DIR R5_PACKAGE_DIR > elements.tsv
where each directory holds an unpacked FHIR npm package (`package/`):
hl7.fhir.r4.examples 4.0.1 (it carries the base StructureDefinitions) and
hl7.fhir.r5.core 5.0.0, both from registry.npmjs.org (see ../SOURCES.md).
"""
import glob
import json
import sys


def root_elements(package_dir):
    by_type = {}
    for path in glob.glob(f"{package_dir}/package/StructureDefinition-*.json"):
        with open(path) as f:
            sd = json.load(f)
        if sd.get("kind") != "resource" or sd.get("derivation") != "specialization":
            continue
        if sd.get("abstract"):
            continue
        by_type[sd["type"]] = [
            e["path"].split(".")[1]
            for e in sd["snapshot"]["element"]
            if e["path"].count(".") == 1
        ]
    return by_type


r4, r5 = root_elements(sys.argv[1]), root_elements(sys.argv[2])
print("# Root elements of every FHIR R4 (4.0.1) and R5 (5.0.0) resource type, for checking")
print("# the element names a policy file gives. DERIVED: see data/SOURCES.md (fhir/).")
print("# type<TAB>R4 elements<TAB>R5 elements (comma-separated; empty: not a type of that version)")
for t in sorted(set(r4) | set(r5)):
    print(f"{t}\t{','.join(r4.get(t, []))}\t{','.join(r5.get(t, []))}")
