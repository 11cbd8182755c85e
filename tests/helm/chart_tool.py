#!/usr/bin/env python3
"""Lints, renders and validates the Helm chart for tests/helm_chart.rs.

Uses the Helm v4 SDK that the PyPI package helm-python-sdk carries (no helm
binary) and kubernetes-validate's schemas. Prints one JSON document; the Rust
test makes the assertions, so this script judges nothing itself.

    chart_tool.py CHART [--values FILE] [--set-json JSON] [--kube VERSION ...]

Output: {"lint": {...}, "rejected": null | "message",
         "manifests": [{"template", "kind", "name", "doc", "validation": {VERSION: "ok" | "no schema" | "error: ..."}}],
         "notes": "..."}
"""

import argparse
import json
import sys

import helm_python
import kubernetes_validate
import yaml


def merge(base, over):
    """Deep merge of --set-json over the values file, as helm --set does."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def validate(doc, version):
    try:
        kubernetes_validate.validate(doc, version, strict=True)
        return "ok"
    except kubernetes_validate.SchemaNotFoundError:
        return "no schema"
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        return f"error: {path}: {e.message}"
    except Exception as e:  # a schema the validator cannot read is a failure too
        return f"error: {type(e).__name__}: {e}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("chart")
    parser.add_argument("--values")
    parser.add_argument("--set-json", default="{}")
    parser.add_argument("--kube", action="append", default=[])
    parser.add_argument("--name", default="scorer")
    parser.add_argument("--namespace", default="fraud")
    args = parser.parse_args()

    values = {}
    if args.values:
        with open(args.values, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    merge(values, json.loads(args.set_json))

    out = {"lint": None, "rejected": None, "manifests": [], "notes": ""}
    out["lint"] = helm_python.lint(args.chart, values, strict=True, namespace=args.namespace)
    chart = helm_python.Chart.load(args.chart)
    try:
        rendered = chart.render(values, name=args.name, namespace=args.namespace, is_install=True)
    except helm_python.HelmError as e:
        out["rejected"] = str(e)
        json.dump(out, sys.stdout)
        return
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            out["notes"] = text
            continue
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            out["manifests"].append(
                {
                    "template": template,
                    "kind": doc.get("kind"),
                    "name": (doc.get("metadata") or {}).get("name"),
                    "doc": doc,
                    "validation": {v: validate(doc, v) for v in args.kube},
                }
            )
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
