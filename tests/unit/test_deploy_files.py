"""deploy/: compose.yaml and the kustomize manifests, checked without Docker or a cluster.

Each file is validated against its specification's JSON schema (vendored in
tests/schemas/, see its README), then against what Clarion needs of it: migrations
before anything else starts, health checks that exercise the process, one worker for
every queue, one beat.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from clarion.cli import build_parser
from clarion.cli_processes import worker_queues
from clarion.core import queues

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SCHEMAS = ROOT / "tests" / "schemas"

# The fields of KEDA's ScaledObject CRD (keda.sh/v1alpha1) the manifests use, as typed
# there; unknown fields are refused like in the strict Kubernetes schemas.
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "namespace": {"type": "string"}},
        },
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "name": {"type": "string"},
                        "envSourceContainerName": {"type": "string"},
                    },
                },
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in (
                        "minReplicaCount",
                        "maxReplicaCount",
                        "pollingInterval",
                        "cooldownPeriod",
                        "idleReplicaCount",
                    )
                },
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            # KEDA's trigger metadata is a map of strings.
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}
# The Redis lists scaler's parameters (https://keda.sh/docs/latest/scalers/redis-lists/).
REDIS_TRIGGER = {"address", "addressFromEnv", "databaseIndex", "listName", "listLength"}


def docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def consumed(commands: list[list[str]]) -> set[str]:
    found: set[str] = set()
    for argv in commands:
        if argv[:2] == ["clarion", "worker"]:
            args = build_parser().parse_args(argv[1:])
            found |= set(worker_queues(args.lanes, args.queues))
    return found


def hostname_of(argv: list[str]) -> str:
    return argv[argv.index("--hostname") + 1]


# --- compose ---------------------------------------------------------------------------


def test_compose_is_valid_against_the_compose_specification():
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(compose()))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_schema_check_catches_a_broken_file():
    # The check above would pass vacuously if the schema accepted anything.
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    broken = compose()
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_finished"
    broken["services"]["api"]["restart_policy"] = "always"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_compose_runs_migrate_first_and_restarts_and_checks_the_rest():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["clarion", "migrate"]
    assert "migrate" not in services["migrate"]["depends_on"]
    clarion = {n: s for n, s in services.items() if s.get("command", [""])[0] == "clarion"}
    for name, service in clarion.items():
        if name == "migrate":
            continue
        assert service["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"
        }, name
        assert service["restart"] == "unless-stopped", name
    api = services["api"]["healthcheck"]["test"]
    assert "http://127.0.0.1:8000/readyz" in " ".join(api)
    workers = {n: s for n, s in clarion.items() if s["command"][:2] == ["clarion", "worker"]}
    assert len(workers) >= 4
    for name, service in workers.items():
        node = hostname_of(service["command"]).replace("%h", "$$HOSTNAME")
        check = service["healthcheck"]["test"]
        assert check[0] == "CMD-SHELL" and check[1].startswith(f"clarion ping {node} "), name
    assert consumed([s["command"] for s in workers.values()]) == set(queues.ALL_QUEUES)
    redis = services["redis"]["command"]
    assert redis[redis.index("--appendonly") + 1] == "yes"
    flower = services["flower"]["environment"]
    assert flower["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
    assert "CLARION_SECRET_KEY" in flower  # the shared environment is merged in, not lost


def test_the_procfile_runs_a_worker_for_every_queue():
    commands = [
        shlex.split(line.split(":", 1)[1])
        for line in (DEPLOY / "Procfile").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert consumed(commands) == set(queues.ALL_QUEUES)


# --- kubernetes --------------------------------------------------------------------------


def kustomization(path: Path) -> dict:
    return yaml.safe_load((path / "kustomization.yaml").read_text())


def resources(path: Path) -> list[dict]:
    """Every object a kustomization lists (and those of the bases it lists), unpatched."""
    found = []
    for entry in kustomization(path)["resources"]:
        target = (path / entry).resolve()
        found += resources(target) if target.is_dir() else docs(target)
    return found


def k8s_validator(obj: dict) -> jsonschema.protocols.Validator:
    if obj["apiVersion"] == "keda.sh/v1alpha1":
        return jsonschema.Draft202012Validator(SCALED_OBJECT)
    bundle = json.loads((SCHEMAS / "kubernetes-strict.json").read_text())
    kind = f"{obj['apiVersion']}/{obj['kind']}"
    assert kind in bundle["kinds"], f"no vendored schema for {kind}"
    schema = {**bundle["kinds"][kind], "$defs": bundle["$defs"]}
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("overlay", [K8S / "base", K8S / "overlays" / "example"])
def test_every_listed_file_exists_and_every_patch_has_a_target(overlay):
    spec = kustomization(overlay)
    for entry in spec["resources"]:
        assert (overlay / entry).exists(), entry
    objects = {(o["kind"], o["metadata"]["name"]) for o in resources(overlay)}
    for patch in spec.get("patches", []):
        for target in docs(overlay / patch["path"]):
            assert (target["kind"], target["metadata"]["name"]) in objects, patch


def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    objects = resources(K8S / "overlays" / "example")
    for patch in kustomization(K8S / "overlays" / "example").get("patches", []):
        objects += docs(K8S / "overlays" / "example" / patch["path"])
    assert {o["kind"] for o in objects} >= {
        "Deployment",
        "Job",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "ScaledObject",
    }
    for obj in objects:
        errors = list(k8s_validator(obj).iter_errors(obj))
        assert not errors, (obj["kind"], obj["metadata"]["name"], [e.message for e in errors])


def test_the_kubernetes_schema_check_catches_a_broken_manifest():
    api = next(o for o in resources(K8S / "base") if o["metadata"]["name"] == "clarion-api")
    broken = json.loads(json.dumps(api))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["paht"] = "/readyz"  # a typo: strict schemas refuse
    container["resources"]["requests"] = "256Mi"
    assert len(list(k8s_validator(broken).iter_errors(broken))) >= 2


def deployments() -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in resources(K8S / "base") if o["kind"] == "Deployment"}


def container(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_the_deployments_do_what_clarion_needs():
    found = deployments()
    api = found["clarion-api"]
    assert container(api)["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container(api)["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # Longer than the preStop pause plus the drain of requests in flight.
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 30
    beat = found["clarion-beat"]
    assert beat["spec"]["replicas"] == 1 and beat["spec"]["strategy"] == {"type": "Recreate"}
    workers = {
        n: d for n, d in found.items() if container(d)["command"][:2] == ["clarion", "worker"]
    }
    assert consumed([container(d)["command"] for d in workers.values()]) == set(queues.ALL_QUEUES)
    for name, deployment in workers.items():
        command = container(deployment)["command"]
        node = hostname_of(command).replace("%h", "$HOSTNAME")
        probe = container(deployment)["livenessProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"] and probe[2].startswith(f"clarion ping {node} "), name
    for name, deployment in found.items():
        pod = deployment["spec"]["template"]["spec"]
        for c in pod["containers"] + pod.get("initContainers", []):
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), (name, c["name"])
            assert re.fullmatch(r"\d+Mi", c["resources"]["limits"]["memory"]), (name, c["name"])
        if name != "clarion-flower":  # Flower needs no database
            assert pod["initContainers"][0]["command"] == ["clarion", "migrate", "--check"]
    kinds = {(o["kind"], o["metadata"]["name"]) for o in resources(K8S / "base")}
    assert ("Job", "clarion-migrate") in kinds and (
        "HorizontalPodAutoscaler",
        "clarion-api",
    ) in kinds
    budgets = {n for k, n in kinds if k == "PodDisruptionBudget"}
    assert "clarion-api" in budgets and "clarion-beat" not in budgets


def test_keda_watches_exactly_the_queues_each_scaled_worker_consumes():
    found = deployments()
    scaled = [o for o in docs(K8S / "overlays" / "example" / "keda.yaml")]
    assert scaled
    for obj in scaled:
        target = found[obj["spec"]["scaleTargetRef"]["name"]]
        args = build_parser().parse_args(container(target)["command"][1:])
        lists = set()
        for trigger in obj["spec"]["triggers"]:
            assert trigger["type"] == "redis" and set(trigger["metadata"]) <= REDIS_TRIGGER
            assert trigger["metadata"]["addressFromEnv"] == "KEDA_REDIS_ADDRESS"
            lists.add(trigger["metadata"]["listName"])
        assert lists == set(worker_queues(args.lanes, args.queues)), obj["metadata"]["name"]
    config = next(o for o in resources(K8S / "base") if o["kind"] == "ConfigMap")
    assert "KEDA_REDIS_ADDRESS" in config["data"]
