"""Custom resources checked against their own projects' schemas: npm ``@kubernetes-models/*`` (generated from the
Gateway API, KEDA and prometheus-operator CRDs) validate types, enums, formats and required fields.

The packages are pinned and installed once into a cache outside the repository, as the Grafana schema is
(tests/dashboards/test_dashboard.py); a failed install fails the test.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from tests import npm

NPM_PACKAGES = {
    "@kubernetes-models/gateway-api": "2.0.0",
    "@kubernetes-models/keda": "2.0.0",
    "@kubernetes-models/prometheus-operator": "6.0.0",
}
NPM_DIR = npm.CACHE / "kubernetes-models"

#: kind -> (module, class) of the model that validates it.
MODELS = {
    "HTTPRoute": ("@kubernetes-models/gateway-api/gateway.networking.k8s.io/v1", "HTTPRoute"),
    "ScaledObject": ("@kubernetes-models/keda/keda.sh/v1alpha1", "ScaledObject"),
    "ServiceMonitor": ("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", "ServiceMonitor"),
    "PrometheusRule": ("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", "PrometheusRule"),
}

SCRIPT = """
import { readFileSync } from "node:fs";
const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
const models = JSON.parse(process.argv[3]);
const errors = [];
for (const obj of objects) {
  const [module, name] = models[obj.kind];
  const Model = (await import(module))[name];
  try { new Model(obj).validate(); } catch (e) { errors.push(`${obj.kind} ${obj.metadata.name}: ${e.message}`); }
}
console.log(JSON.stringify(errors));
"""


def validate(objects: list[dict[str, Any]]) -> list[str]:
    """The models' complaints about ``objects`` (only kinds in MODELS are checked); empty when all pass."""
    checked = [obj for obj in objects if obj["kind"] in MODELS]
    if not checked:
        return []
    where = npm.installed(NPM_DIR, NPM_PACKAGES)
    (where / "objects.json").write_text(json.dumps(checked))
    (where / "validate.mjs").write_text(SCRIPT)
    result = subprocess.run(
        ["node", "validate.mjs", "objects.json", json.dumps(MODELS)],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    errors: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return errors
