#!/usr/bin/env python3
"""Offline checks for helm/base: CRD sanity and the example manifests.

    python3 helm/base/hack/lint-crds.py

1. Every crds/*.yaml is one apiextensions.k8s.io/v1 CRD named
   <plural>.<group>, stored in a file of that name, with exactly one storage
   version, and a structural schema (every node typed, no properties next to
   additionalProperties, list-map keys required or defaulted, required fields
   declared).
2. Every manifest in tests/examples/ is accepted by the OpenAPI part of the
   schema of the version it names (types, enums, required fields, unknown
   fields as `kubectl apply` rejects them, bounds and patterns). CEL rules
   are not evaluated here; the API server does that.
3. Every manifest in tests/invalid/ is rejected - unless its first comment
   line says "Rejected by a CEL rule", which only an API server can check.

Only PyYAML is needed. Exits non-zero on the first category of failure.
"""

import pathlib
import re
import sys

import yaml

BASE = pathlib.Path(__file__).resolve().parent.parent
ROOT_FIELDS = {"apiVersion", "kind", "metadata"}
problems = []


def problem(msg):
    problems.append(msg)


# --------------------------------------------------------------------------
# CRDs
# --------------------------------------------------------------------------


def check_structural(node, path, root=False):
    if not isinstance(node, dict):
        problem(f"{path}: schema is not a mapping")
        return
    if "type" not in node and not node.get("x-kubernetes-int-or-string"):
        problem(f"{path}: no type")
    t = node.get("type")
    props = node.get("properties")
    if props is not None and t != "object":
        problem(f"{path}: properties on a non-object")
    if props is not None and "additionalProperties" in node:
        problem(f"{path}: both properties and additionalProperties")
    for key in node.get("required", []):
        if props is None or key not in props:
            problem(f"{path}: required field {key!r} is not a property")
    if t == "array":
        items = node.get("items")
        if not isinstance(items, dict):
            problem(f"{path}: array without a single items schema")
        else:
            check_structural(items, path + "[]")
            if node.get("x-kubernetes-list-type") == "map":
                keys = node.get("x-kubernetes-list-map-keys") or []
                if not keys:
                    problem(f"{path}: list-type map without map keys")
                for k in keys:
                    ip = items.get("properties", {})
                    if k not in ip:
                        problem(f"{path}: map key {k!r} is not an item property")
                    elif k not in items.get("required", []) and "default" not in ip[k]:
                        problem(f"{path}: map key {k!r} is neither required nor defaulted")
    for name, sub in (props or {}).items():
        if root and name == "metadata" and set(sub) - {"type"}:
            problem(f"{path}.metadata: only `type: object` is allowed at the root")
        check_structural(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        check_structural(node["additionalProperties"], path + "{}")
    for bad in ("oneOf", "anyOf", "allOf", "not"):
        if bad in node:
            problem(f"{path}: {bad} is not used in these CRDs (keep schemas plainly structural)")


def load_crds():
    served = {}  # (apiVersion, kind) -> schema
    for f in sorted((BASE / "crds").glob("*.yaml")):
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problem(f"{f.name}: {e}")
            continue
        if len(docs) != 1:
            problem(f"{f.name}: want exactly one document, got {len(docs)}")
            continue
        crd = docs[0]
        if crd.get("apiVersion") != "apiextensions.k8s.io/v1" or crd.get("kind") != "CustomResourceDefinition":
            problem(f"{f.name}: not an apiextensions.k8s.io/v1 CustomResourceDefinition")
            continue
        spec = crd["spec"]
        group, names = spec["group"], spec["names"]
        name = f"{names['plural']}.{group}"
        if crd["metadata"]["name"] != name:
            problem(f"{f.name}: metadata.name should be {name}")
        if f.name != name + ".yaml":
            problem(f"{f.name}: file should be named {name}.yaml")
        if names.get("listKind") != names["kind"] + "List":
            problem(f"{f.name}: listKind should be {names['kind']}List")
        if spec.get("scope") not in ("Namespaced", "Cluster"):
            problem(f"{f.name}: bad scope")
        if group.endswith(".k8s.io") and "api-approved.kubernetes.io" not in crd["metadata"].get("annotations", {}):
            problem(f"{f.name}: protected group needs the api-approved.kubernetes.io annotation")
        if group == "gateway.networking.k8s.io":
            ann = crd["metadata"].get("annotations", {})
            for a in ("gateway.networking.k8s.io/bundle-version", "gateway.networking.k8s.io/channel"):
                if a not in ann:
                    problem(f"{f.name}: missing annotation {a}")
        versions = spec["versions"]
        if sum(1 for v in versions if v.get("storage")) != 1:
            problem(f"{f.name}: exactly one version must have storage: true")
        for v in versions:
            schema = v.get("schema", {}).get("openAPIV3Schema")
            if schema is None:
                problem(f"{f.name} {v['name']}: no schema")
                continue
            check_structural(schema, f"{f.name}:{v['name']}", root=True)
            if v.get("served"):
                served[(f"{group}/{v['name']}", names["kind"])] = schema
    return served


# --------------------------------------------------------------------------
# Manifests against the OpenAPI part of a schema
# --------------------------------------------------------------------------

TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
}


def validate(value, s, path, errs, root=False):
    t = s.get("type")
    if value is None:
        if not s.get("nullable"):
            errs.append(f"{path}: null")
        return
    if s.get("x-kubernetes-int-or-string"):
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errs.append(f"{path}: want int or string")
        return
    if t == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errs.append(f"{path}: want integer, got {type(value).__name__}")
            return
    elif t == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            errs.append(f"{path}: want number")
            return
    elif t in TYPES and not isinstance(value, TYPES[t]):
        errs.append(f"{path}: want {t}, got {type(value).__name__}")
        return
    if "enum" in s and value not in s["enum"]:
        errs.append(f"{path}: {value!r} not in {s['enum']}")
    if isinstance(value, str):
        if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", 1 << 62):
            errs.append(f"{path}: length {len(value)} out of bounds")
        if "pattern" in s and not re.search(s["pattern"], value):
            errs.append(f"{path}: {value!r} does not match {s['pattern']}")
    if isinstance(value, int) and not isinstance(value, bool):
        if value < s.get("minimum", -(1 << 63)) or value > s.get("maximum", 1 << 63):
            errs.append(f"{path}: {value} out of bounds")
    if isinstance(value, list):
        if len(value) < s.get("minItems", 0) or len(value) > s.get("maxItems", 1 << 62):
            errs.append(f"{path}: {len(value)} items out of bounds")
        for i, item in enumerate(value):
            validate(item, s["items"], f"{path}[{i}]", errs)
    if isinstance(value, dict):
        if s.get("x-kubernetes-preserve-unknown-fields") and "properties" not in s:
            return
        props = s.get("properties")
        for key in s.get("required", []):
            if key not in value and "default" not in (props or {}).get(key, {}):
                errs.append(f"{path}.{key}: required")
        if len(value) < s.get("minProperties", 0) or len(value) > s.get("maxProperties", 1 << 62):
            errs.append(f"{path}: {len(value)} properties out of bounds")
        for key, sub in value.items():
            if props is not None and key in props:
                if not (root and key == "metadata"):
                    validate(sub, props[key], f"{path}.{key}", errs)
            elif isinstance(s.get("additionalProperties"), dict):
                validate(sub, s["additionalProperties"], f"{path}.{key}", errs)
            elif root and key in ROOT_FIELDS:
                continue
            elif not s.get("x-kubernetes-preserve-unknown-fields"):
                errs.append(f"{path}.{key}: unknown field")


def manifests(directory):
    for f in sorted((BASE / "tests" / directory).glob("*.yaml")):
        text = f.read_text()
        for i, doc in enumerate(yaml.safe_load_all(text)):
            if doc is not None:
                yield f, i, doc, text


def main():
    served = load_crds()
    if problems:
        return report("CRD checks")
    for f, i, doc, _ in manifests("examples"):
        schema = served.get((doc.get("apiVersion"), doc.get("kind")))
        where = f"examples/{f.name}#{i} ({doc.get('apiVersion')} {doc.get('kind')})"
        if schema is None:
            problem(f"{where}: no CRD serves this version and kind")
            continue
        errs = []
        validate(doc, schema, "", errs, root=True)
        problems.extend(f"{where}: {e}" for e in errs)
    for f, i, doc, text in manifests("invalid"):
        if text.lstrip().startswith("# Rejected by a CEL rule"):
            continue
        schema = served.get((doc.get("apiVersion"), doc.get("kind")))
        if schema is None:
            continue
        errs = []
        validate(doc, schema, "", errs, root=True)
        if not errs:
            problem(f"invalid/{f.name}#{i}: accepted by the schema but should be rejected")
    return report("manifest checks")


def report(stage):
    if problems:
        print(f"{stage} failed:")
        for p in problems:
            print("  " + p)
        return 1
    n_crds = len(list((BASE / "crds").glob("*.yaml")))
    print(f"ok: {n_crds} CRDs structural; examples accepted; invalid manifests rejected")
    return 0


if __name__ == "__main__":
    sys.exit(main())
