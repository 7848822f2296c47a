"""deploy/kubernetes: schema-valid, and consistent with the worker, the image and the topics."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream_infer.config import Settings, load_settings
from tests.deploy.common import (
    KUBERNETES,
    ROOT,
    SCHEMAS,
    alerts,
    dockerfile_stages,
    stage_env,
)
from tests.deploy.kustomize import Resource, find, render

KUSTOMIZATIONS = ["base", "gpu", "keda/kafka-lag", "keda/desired-replicas", "monitoring"]
# The oldest Kubernetes release the manifests claim (PodDisruptionBudget policy/v1, seccomp
# fields, sizeLimit...), and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_scaledobjects.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}
# No CRD schema in tests/data for it; test_service_monitor checks what matters.
UNSCHEMED = {("monitoring.coreos.com/v1", "ServiceMonitor")}
POD_NAME = "stream-infer-3"
SECRET_COMMON = (
    '{"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512", '
    '"sasl.username": "svc", "sasl.password": "s3cret", '
    '"ssl.ca.location": "/etc/stream-infer/kafka/ca.crt"}'
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Resource]]:
    return {name: render(KUBERNETES / name) for name in KUSTOMIZATIONS}


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields rejected, as the API server's strict validation does.

    A structural schema prunes unknown fields silently; a typo in a manifest would pass a
    plain jsonschema check and then vanish in the cluster.
    """
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_validator(resource: Resource) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load((SCHEMAS / CRDS[(resource["apiVersion"], resource["kind"])]).read_text())
    version = resource["apiVersion"].split("/")[1]
    (entry,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = _strict(entry["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def _statefulset(resources: list[Resource]) -> Resource:
    return find(resources, "StatefulSet", "stream-infer")


def _worker(resources: list[Resource]) -> dict[str, Any]:
    (container,) = _statefulset(resources)["spec"]["template"]["spec"]["containers"]
    return container


def _settings(
    resources: list[Resource], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings a pod of these manifests starts with: ConfigMap file plus env."""
    pod = _statefulset(resources)["spec"]["template"]["spec"]
    container = _worker(resources)
    args = container["args"]
    config_path = Path(args[args.index("--config") + 1])
    mount = next(m for m in container["volumeMounts"] if config_path.is_relative_to(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    configmap = find(resources, "ConfigMap", volume["configMap"]["name"])
    key = str(config_path.relative_to(mount["mountPath"]))
    file = tmp_path / "config.yaml"
    file.write_text(configmap["data"][key])
    for var in container["env"]:
        source = var.get("valueFrom", {})
        if "value" in var:
            value = var["value"]
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            value = POD_NAME
        elif source.get("secretKeyRef", {}).get("key") == "kafka-common.json":
            # The Secret's files, as the pod would have them mounted (the CA must exist).
            mounted = tmp_path / "kafka-secret"
            mounted.mkdir(exist_ok=True)
            (mounted / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
            value = SECRET_COMMON.replace("/etc/stream-infer/kafka", str(mounted))
        else:
            raise AssertionError(f"no test value for {var}")
        monkeypatch.setenv(var["name"], value)
    return load_settings(file)


def test_every_kustomization_is_rendered() -> None:
    found = {str(p.parent.relative_to(KUBERNETES)) for p in KUBERNETES.rglob("kustomization.yaml")}
    assert found == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_core_kinds_are_valid(rendered: dict[str, list[Resource]], name: str, version: str) -> None:
    custom = CRDS.keys() | UNSCHEMED
    core = [r for r in rendered[name] if (r["apiVersion"], r["kind"]) not in custom]
    for resource in core:
        kubernetes_validate.validate(resource, version, strict=True)
    if name in ("base", "gpu"):
        kinds = {r["kind"] for r in core}
        assert kinds == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_custom_resources_match_their_crds(rendered: dict[str, list[Resource]], name: str) -> None:
    for resource in rendered[name]:
        kind = (resource["apiVersion"], resource["kind"])
        if kind in CRDS:
            _crd_validator(resource).validate(resource)
        elif "." in resource["apiVersion"].split("/")[0]:
            assert kind in UNSCHEMED, f"no schema for custom resource {kind}"


def test_crd_validation_rejects_unknown_fields(rendered: dict[str, list[Resource]]) -> None:
    scaled = copy.deepcopy(rendered["keda/kafka-lag"][0])
    scaled["spec"]["maxReplicas"] = 6  # the field is maxReplicaCount
    with pytest.raises(jsonschema.ValidationError, match="maxReplicas"):
        _crd_validator(scaled).validate(scaled)
    rule = copy.deepcopy(find(rendered["monitoring"], "PrometheusRule", "stream-infer"))
    (alert, *_) = [r for r in rule["spec"]["groups"][0]["rules"] if "alert" in r]
    alert["for"] = "ten minutes"
    with pytest.raises(jsonschema.ValidationError):
        _crd_validator(rule).validate(rule)


def test_the_worker_starts_with_the_pod_name_as_its_id(
    rendered: dict[str, list[Resource]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(rendered["base"], tmp_path, monkeypatch)
    assert settings.processing.worker_id == POD_NAME
    # The Secret's JSON is merged into the file's kafka.common, the file keeps the rest.
    assert settings.kafka.common["sasl.username"] == "svc"
    assert settings.kafka.consumer["session.timeout.ms"] == 45000
    (port,) = _worker(rendered["base"])["ports"]
    assert port["containerPort"] == settings.metrics.port


def test_statefulset_shuts_down_and_probes_as_the_worker_does(
    rendered: dict[str, list[Resource]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(rendered["base"], tmp_path, monkeypatch)
    statefulset = _statefulset(rendered["base"])
    spec = statefulset["spec"]
    pod = spec["template"]["spec"]
    container = _worker(rendered["base"])
    assert spec["podManagementPolicy"] == "Parallel"
    assert "replicas" not in spec, "KEDA owns the replica count"
    grace = pod["terminationGracePeriodSeconds"]
    assert grace >= settings.processing.shutdown_timeout_s + 5
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    assert {p["path"] for p in probes.values()} == {"/healthz"}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in (*probes.values(), container["readinessProbe"]["httpGet"]):
        assert probe["port"] == container["ports"][0]["name"]
    # Kubernetes' <SERVICE>_PORT variables would reach the worker as unknown STREAM_INFER_*.
    assert pod["enableServiceLinks"] is False
    assert pod["automountServiceAccountToken"] is False
    limits, requests = container["resources"]["limits"], container["resources"]["requests"]
    assert {"cpu", "memory"} <= set(limits) & set(requests)
    assert settings.model.intra_op_threads == int(limits["cpu"])


def test_pod_runs_the_image_user_on_a_read_only_root(
    rendered: dict[str, list[Resource]],
) -> None:
    pod = _statefulset(rendered["base"])["spec"]["template"]["spec"]
    container = _worker(rendered["base"])
    stages = dockerfile_stages()
    for stage in ("runtime", "gpu"):
        (user,) = [i["value"] for i in stages[stage] if i["instruction"] == "USER"]
        assert user.split(":")[0] == str(pod["securityContext"]["runAsUser"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # Every place the image writes to is a writable volume.
    scratch = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    writable = [Path(m["mountPath"]) for m in container["volumeMounts"] if m["name"] in scratch]
    cache_dir = Path(stage_env(stages["runtime"])["STREAM_INFER_CACHE_DIR"])
    for needed in (cache_dir, Path("/tmp")):
        assert any(needed.is_relative_to(m) for m in writable), needed


def test_kafka_secret_is_optional_files_and_one_variable(
    rendered: dict[str, list[Resource]],
) -> None:
    pod = _statefulset(rendered["base"])["spec"]["template"]["spec"]
    container = _worker(rendered["base"])
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["optional"] is True
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    assert "/etc/stream-infer/kafka/" in SECRET_COMMON  # the README's example path
    assert mount["mountPath"] == "/etc/stream-infer/kafka"
    refs = [v for v in container["env"] if "secretKeyRef" in v.get("valueFrom", {})]
    assert [v["name"] for v in refs] == ["STREAM_INFER_KAFKA__COMMON"]
    assert refs[0]["valueFrom"]["secretKeyRef"]["name"] == volume["secret"]["secretName"]
    assert refs[0]["valueFrom"]["secretKeyRef"]["optional"] is True


def test_service_and_budget_select_the_workers(rendered: dict[str, list[Resource]]) -> None:
    resources = rendered["base"]
    statefulset = _statefulset(resources)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    service = find(resources, "Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == _worker(resources)["ports"][0]["name"]
    budget = find(resources, "PodDisruptionBudget", "stream-infer")
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_gpu_overlay_asks_for_one_gpu(
    rendered: dict[str, list[Resource]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pod = _statefulset(rendered["gpu"])["spec"]["template"]["spec"]
    container = _worker(rendered["gpu"])
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    assert container["image"].endswith("-gpu")
    assert _worker(rendered["base"])["image"] == container["image"].removesuffix("-gpu")
    settings = _settings(rendered["gpu"], tmp_path, monkeypatch)
    assert settings.model.device == "cuda"
    assert settings.processing.worker_id == POD_NAME
    # The patch adds to the base; probes and mounts are still there.
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert len(container["volumeMounts"]) == len(_worker(rendered["base"])["volumeMounts"])


def _input_partitions(settings: Settings) -> int:
    declared = {}
    for path in (ROOT / "topics").glob("*.yaml"):
        for decl in yaml.safe_load_all(path.read_text()):
            for topic in decl if isinstance(decl, list) else [decl]:
                declared[topic["name"]] = topic["partitions"]
    return sum(declared[name] for name in settings.topics.inputs)


@pytest.mark.parametrize("name", ["keda/kafka-lag", "keda/desired-replicas"])
def test_scaled_objects_follow_the_group_up_to_its_partitions(
    rendered: dict[str, list[Resource]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    settings = _settings(rendered["base"], tmp_path, monkeypatch)
    (scaled,) = rendered[name]
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", "stream-infer")
    assert spec["maxReplicaCount"] == _input_partitions(settings) == 6
    assert spec["minReplicaCount"] >= 1
    (trigger,) = spec["triggers"]
    meta = trigger["metadata"]
    if trigger["type"] == "kafka":
        assert meta["bootstrapServers"] == settings.kafka.bootstrap_servers
        assert meta["consumerGroup"] == settings.kafka.group_id
        assert meta["topic"] == ",".join(settings.topics.inputs)
        assert meta["offsetResetPolicy"] == "earliest"
        assert meta["allowIdleConsumers"] == "false"
        assert int(meta["lagThreshold"]) > 0
    else:
        assert trigger["type"] == "prometheus"
        group = settings.kafka.group_id
        assert meta["query"] == f'max(stream_infer_desired_replicas{{group="{group}"}})'
        assert meta["threshold"] == "1"
        assert trigger["metricType"] == "AverageValue"
        assert spec["fallback"]["replicas"] <= spec["maxReplicaCount"]


def test_service_monitor_scrapes_the_job_the_alerts_watch(
    rendered: dict[str, list[Resource]],
) -> None:
    monitor = find(rendered["monitoring"], "ServiceMonitor", "stream-infer")
    service = find(rendered["base"], "Service", "stream-infer")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    # Without spec.jobLabel, the operator names the job after the Service.
    assert "jobLabel" not in monitor["spec"]
    down = next(a for a in alerts() if a["alert"] == "StreamInferWorkerDown")
    assert f'job="{service["metadata"]["name"]}"' in down["expr"]
