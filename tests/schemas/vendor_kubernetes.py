"""Write tests/schemas/kubernetes-strict.json: the Kubernetes JSON schemas of the kinds
deploy/k8s uses, and only the definitions they reach, descriptions left out.

Source: the "-local-strict" schemas generated from Kubernetes' OpenAPI by
https://github.com/yannh/kubernetes-json-schema (strict: unknown fields are errors), as
the PyPI package kubernetes-validate ships them (its kubernetes-json-schema/ folder).
Re-run when the Kubernetes version or the kinds change::

    python tests/schemas/vendor_kubernetes.py PATH/kubernetes-json-schema/v1.31.0-local-strict
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

KINDS = {
    "apps/v1/Deployment": "deployment-apps-v1.json",
    "batch/v1/Job": "job-batch-v1.json",
    "v1/Service": "service-v1.json",
    "v1/ConfigMap": "configmap-v1.json",
    "policy/v1/PodDisruptionBudget": "poddisruptionbudget-policy-v1.json",
    "autoscaling/v2/HorizontalPodAutoscaler": "horizontalpodautoscaler-autoscaling-v2.json",
}
REF = re.compile(r"^.*#/\$defs/(.+)$")


def _local(node, reached: set[str]):
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in ("description", "$id", "x-kubernetes-group-version-kind"):
                continue
            if key == "$ref" and (m := REF.match(value)):
                reached.add(m.group(1))
                value = f"#/$defs/{m.group(1)}"
            out[key] = _local(value, reached)
        return out
    if isinstance(node, list):
        return [_local(v, reached) for v in node]
    return node


def main(source: Path, target: Path) -> None:
    defs = json.loads((source / "_definitions.json").read_text())["$defs"]
    reached: set[str] = set()
    kinds = {k: _local(json.loads((source / f).read_text()), reached) for k, f in KINDS.items()}
    for schema in kinds.values():
        schema.pop("$schema", None)
    kept: dict = {}
    todo = set(reached)
    while todo:
        name = todo.pop()
        found: set[str] = set()
        kept[name] = _local(defs[name], found)
        todo |= found - kept.keys()
    document = {
        "$comment": f"yannh/kubernetes-json-schema {source.name}, pruned (tests/schemas/"
        "vendor_kubernetes.py); Apache License 2.0 (Kubernetes' OpenAPI).",
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": dict(sorted(kept.items())),
        "kinds": kinds,
    }
    target.write_text(json.dumps(document, separators=(",", ":"), sort_keys=False) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).with_name("kubernetes-strict.json"))
