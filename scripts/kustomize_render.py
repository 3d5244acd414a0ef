#!/usr/bin/env python3
"""Renders a kustomization the way `kubectl kustomize` does, for the subset k8s/ uses, where kubectl is
not installed: `resources` (files and directories), `components`, `images` (newName/newTag) and
`patches` with a `target` (kind/name) and an inline JSON 6902 patch (add, replace, remove). Anything else
in a kustomization is an error, so a manifest cannot silently depend on a feature this skips.
Usage: kustomize_render.py DIR  (prints the YAML stream)."""
import os
import sys

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "components", "images", "patches"}


def load(directory):
    with open(os.path.join(directory, "kustomization.yaml")) as f:
        k = yaml.safe_load(f)
    unknown = set(k) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: unsupported fields {sorted(unknown)}")
    return k


def build(directory):
    """The resources of the kustomization in `directory`, with its images and patches applied."""
    k = load(directory)
    objects = []
    for entry in k.get("resources", []) + k.get("components", []):
        path = os.path.normpath(os.path.join(directory, entry))
        if os.path.isdir(path):
            objects += build(path)
        else:
            with open(path) as f:
                objects += [o for o in yaml.safe_load_all(f) if o]
    for image in k.get("images", []):
        for o in objects:
            for c in containers(o):
                name, _, tag = c["image"].partition(":")
                if name == image["name"]:
                    c["image"] = image.get("newName", name) + ":" + str(image.get("newTag", tag or "latest"))
    for p in k.get("patches", []):
        target = p["target"]
        ops = yaml.safe_load(p["patch"])
        matched = [o for o in objects if o["kind"] == target.get("kind", o["kind"])
                   and o["metadata"]["name"] == target.get("name", o["metadata"]["name"])]
        if not matched:
            raise ValueError(f"{directory}: patch target {target} matches nothing")
        for o in matched:
            for op in ops:
                apply(o, op)
    return objects


def containers(o):
    spec = o.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("containers", []) + spec.get("initContainers", [])


def apply(obj, op):
    parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].lstrip("/").split("/")]
    parent = obj
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    if op["op"] == "add":
        if isinstance(parent, list):
            parent.insert(len(parent) if last == "-" else int(last), op["value"])
        else:
            parent[last] = op["value"]
    elif op["op"] == "replace":
        if isinstance(parent, list):
            parent[int(last)] = op["value"]
        else:
            if last not in parent:
                raise ValueError(f"replace of missing {op['path']}")
            parent[last] = op["value"]
    elif op["op"] == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    else:
        raise ValueError(f"unsupported patch op {op['op']}")


if __name__ == "__main__":
    print(yaml.safe_dump_all(build(sys.argv[1]), sort_keys=True), end="")
