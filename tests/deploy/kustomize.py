"""Render deploy/kubernetes kustomizations in Python, as `kubectl kustomize` would.

Only the subset deploy/ uses: `resources` (files and folders), `patches` given by `path`
(strategic merge of a whole resource, matched by kind and name) and `images` (a new tag or
name for a container image). Anything else in a kustomization.yaml is an error here, so a
manifest change that needs more cannot pass the tests unrendered.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]

_KNOWN = {"apiVersion", "kind", "resources", "patches", "images"}
# Strategic-merge keys of the lists deploy/ patches (from the Kubernetes API's patchMergeKey);
# any other list is replaced whole, as strategic merge does for lists without a key.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
}


def load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def render(directory: Path) -> list[Resource]:
    """The resources of the kustomization in ``directory``, patched and with images set."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - _KNOWN
    if unknown:
        raise ValueError(f"{directory}: kustomization fields this renderer lacks: {unknown}")
    if spec.get("kind") != "Kustomization":
        raise ValueError(f"{directory}: kind must be Kustomization")
    resources: list[Resource] = []
    for entry in spec.get("resources", []):
        path = directory / entry
        resources.extend(render(path) if path.is_dir() else load_documents(path))
    for patch in spec.get("patches", []):
        if set(patch) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: FILE` is supported")
        for doc in load_documents(directory / patch["path"]):
            _merge(find(resources, doc["kind"], doc["metadata"]["name"]), doc)
    for image in spec.get("images", []):
        _set_image(resources, image)
    return resources


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    if len(matches) != 1:
        raise LookupError(f"{len(matches)} resources {kind}/{name}")
    return matches[0]


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _merge(current, value)
        elif isinstance(value, list) and isinstance(current, list) and key in _MERGE_KEYS:
            merge_key = _MERGE_KEYS[key]
            added = []
            for item in value:
                same = [c for c in current if c.get(merge_key) == item.get(merge_key)]
                if same:
                    _merge(same[0], item)
                else:
                    added.append(copy.deepcopy(item))
            # New items go first, as kubectl's strategic merge places them.
            current[:0] = added
        else:
            target[key] = copy.deepcopy(value)


def _split_image(image: str) -> tuple[str, str]:
    """Name and tag (``""`` when none); a registry port is part of the name."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, ""


def _set_image(resources: list[Resource], override: dict[str, str]) -> None:
    unknown = set(override) - {"name", "newName", "newTag"}
    if unknown:
        raise ValueError(f"images: fields this renderer lacks: {unknown}")
    for resource in resources:
        pod = resource.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, tag = _split_image(container["image"])
            if name != override["name"]:
                continue
            name = override.get("newName", name)
            tag = override.get("newTag", tag)
            container["image"] = f"{name}:{tag}" if tag else name
