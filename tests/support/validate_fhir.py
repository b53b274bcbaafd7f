#!/usr/bin/env python3
"""Validate FHIR R4 resources (fhirlake's AuditEvents and Provenance).

Usage: validate_fhir.py [--schema fhir.schema.json] [FILE ...]
Each FILE (or stdin when none, or "-") holds one resource, a JSON array of
resources, or NDJSON. Prints one line per problem to stderr, naming the input
and the element, and exits 0 when every resource is valid, 1 when one is not,
2 when the validator itself cannot run (usage, unreadable input, or
fhir.resources missing: pip install fhir.resources==8.3.0).

Checks, in order:
1. The fhir.resources models of FHIR R4B (whose AuditEvent and Provenance are
   R4's, unchanged): element names, cardinality, types, primitive formats.
2. What those models leave out: R4's required bindings (AuditEvent.action,
   outcome, agent.network.type; Provenance.entity.role), ele-1 (no empty
   element), ext-1 (an extension has a value or extensions, not both),
   absolute extension URLs, and sev-1 (an entity has a name or a query, not
   both).
3. With --schema (or FHIRLAKE_FHIR_SCHEMA): the official R4 JSON schema
   (fhir.schema.json, http://hl7.org/fhir/json-schema/4.0), with the
   jsonschema package.
"""
import argparse
import json
import os
import re
import sys

try:
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError
except ImportError as e:  # the caller tells "not installed" from "invalid" by the code
    print(f"validate_fhir.py: fhir.resources is not installed ({e}); "
          "pip install fhir.resources==8.3.0", file=sys.stderr)
    sys.exit(2)

REQUIRED_CODES = {
    ("AuditEvent", "action"): {"C", "R", "U", "D", "E"},
    ("AuditEvent", "outcome"): {"0", "4", "8", "12"},
    ("AuditEvent", "agent.network.type"): {"1", "2", "3", "4", "5"},
    ("Provenance", "entity.role"): {"derivation", "revision", "quotation", "source", "removal"},
}
ABSOLUTE_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S+$")


def values_at(node, path):
    """Every value at a dotted element path, through arrays."""
    if not path:
        yield node
        return
    head, _, rest = path.partition(".")
    items = node if isinstance(node, list) else [node]
    for item in items:
        if isinstance(item, dict) and head in item:
            child = item[head]
            for c in child if isinstance(child, list) else [child]:
                yield from values_at(c, rest)


def r4_rules(resource):
    problems = []
    kind = resource.get("resourceType")
    for (rtype, path), allowed in REQUIRED_CODES.items():
        if rtype == kind:
            for value in values_at(resource, path):
                if value not in allowed:
                    problems.append(f"{path}: {value!r} is not one of {sorted(allowed)} (required binding)")

    def walk(node, where):
        if node is None or node == "" or node == [] or node == {}:
            problems.append(f"{where}: empty element (ele-1)")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
        elif isinstance(node, dict):
            if re.search(r"(?:extension|modifierExtension)\[\d+\]$", where):
                has_value = any(k.startswith("value") for k in node)
                if has_value == ("extension" in node):
                    problems.append(f"{where}: an extension needs a value or extensions, not both (ext-1)")
                url = node.get("url", "")
                nested = re.search(r"extension\[\d+\]\.extension\[\d+\]$", where)
                if not nested and not ABSOLUTE_URI.match(url):
                    problems.append(f"{where}.url: {url!r} is not an absolute URI")
            for key, child in node.items():
                walk(child, f"{where}.{key}")

    walk(resource, kind or "resource")
    if kind == "AuditEvent":
        for i, entity in enumerate(resource.get("entity", [])):
            if "name" in entity and "query" in entity:
                problems.append(f"entity[{i}]: name and query together (sev-1)")
    return problems


def load(name):
    text = sys.stdin.read() if name == "-" else open(name, encoding="utf-8").read()
    text = text.strip()
    if not text:
        return []
    try:
        doc = json.loads(text)
        return doc if isinstance(doc, list) else [doc]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", default=os.environ.get("FHIRLAKE_FHIR_SCHEMA"),
                        help="the R4 fhir.schema.json to validate against as well")
    parser.add_argument("files", nargs="*", default=["-"])
    args = parser.parse_args()

    schema_for = None
    if args.schema:
        try:
            import jsonschema
            with open(args.schema, encoding="utf-8") as f:
                definitions = json.load(f)["definitions"]
        except (ImportError, OSError, ValueError, KeyError) as e:
            print(f"validate_fhir.py: cannot use the schema {args.schema}: {e}", file=sys.stderr)
            return 2
        validators = {}

        def schema_for(rtype):
            # The resource's own definition, so errors name elements rather
            # than the schema's top-level oneOf.
            if rtype not in validators:
                ref = {"$ref": f"#/definitions/{rtype}", "definitions": definitions}
                validators[rtype] = jsonschema.Draft6Validator(ref) if rtype in definitions else None
            return validators[rtype]

    invalid = checked = 0
    for name in args.files:
        try:
            resources = load(name)
        except (OSError, ValueError) as e:
            print(f"validate_fhir.py: {name}: unreadable: {e}", file=sys.stderr)
            return 2
        for index, resource in enumerate(resources):
            label = f"{name}#{index} {resource.get('resourceType', '?')}/{resource.get('id', '?')}"
            problems = []
            try:
                model = get_fhir_model_class(resource.get("resourceType", ""))
            except (KeyError, ValueError):
                model = None
                problems.append(f"resourceType {resource.get('resourceType')!r} is not an R4 resource")
            if model is not None:
                try:
                    model.model_validate(resource)
                except ValidationError as e:
                    for err in e.errors():
                        where = ".".join(str(p) for p in err["loc"])
                        problems.append(f"{where}: {err['msg']}")
            problems.extend(r4_rules(resource))
            validator = schema_for(resource.get("resourceType", "")) if schema_for else None
            if validator is not None:
                for err in validator.iter_errors(resource):
                    where = ".".join(str(p) for p in err.absolute_path)
                    problems.append(f"schema: {where}: {err.message[:300]}")
            checked += 1
            if problems:
                invalid += 1
                for p in problems:
                    print(f"{label}: {p}", file=sys.stderr)
    print(f"validate_fhir.py: {checked} resources, {invalid} invalid", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
