"""A small offline renderer of Parley's kustomizations, for tests on machines without kustomize.

It implements the subset ``k8s/`` uses, with kustomize's semantics: ``resources`` (files and
directories), ``components``, ``configMapGenerator`` and ``secretGenerator`` (``envs``, without
name hashes; a Secret's values base64-encoded in ``data``),
``patches`` (strategic merge, including ``$patch: delete`` of a whole resource, or JSON 6902,
with ``target``), ``images``, ``replacements``
(with ``delimiter``/``index``/``create``) and the removal of ``local-config`` resources.
Anything else in a kustomization raises :class:`Unsupported`, so a new feature cannot be
silently ignored. ``tests/deploy/test_kustomize.py`` compares its output with
``kubectl kustomize`` wherever kubectl is installed.
"""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Doc = dict[str, Any]

LOCAL_CONFIG = "config.kubernetes.io/local-config"
_KNOWN_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "configMapGenerator",
    "secretGenerator",
    "generatorOptions",
    "patches",
    "images",
    "replacements",
}
# Strategic merge keys of the built-in lists Parley patches (k8s.io/api patchMergeKey tags);
# other lists are replaced, as kustomize does.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
}


class Unsupported(Exception):
    """The kustomization uses a feature this renderer does not implement."""


def render(root: Path, components: list[Path] | None = None) -> list[Doc]:
    """Build the kustomization in ``root`` (plus extra ``components``, as if listed last) and
    return its resources in order, local-config resources removed."""
    docs = _build(root, [], extra_components=components or [])
    return [d for d in docs if _annotations(d).get(LOCAL_CONFIG) != "true"]


def _load_kustomization(root: Path) -> Doc:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        path = root / name
        if path.exists():
            data = yaml.safe_load(path.read_text())
            unknown = set(data) - _KNOWN_KEYS
            if unknown:
                raise Unsupported(f"{path}: {sorted(unknown)}")
            return dict(data)
    raise FileNotFoundError(f"no kustomization in {root}")


def _build(root: Path, accumulated: list[Doc], extra_components: list[Path]) -> list[Doc]:
    k = _load_kustomization(root)
    docs = list(accumulated)
    for entry in k.get("resources") or []:
        path = (root / entry).resolve()
        if path.is_dir():
            docs.extend(_build(path, [], []))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for entry in [*(root / c for c in k.get("components") or []), *extra_components]:
        docs = _build(Path(entry).resolve(), docs, [])
    docs.extend(_generate(root, k))
    for patch in k.get("patches") or []:
        _apply_patch(root, docs, patch)
    for image in k.get("images") or []:
        for doc in docs:
            _set_images(doc, image)
    for replacement in k.get("replacements") or []:
        _replace(docs, replacement)
    return docs


# --- generators -------------------------------------------------------------------------------
def _generate(root: Path, k: Doc) -> Iterator[Doc]:
    options = k.get("generatorOptions", {})
    generators = [("ConfigMap", g) for g in k.get("configMapGenerator", [])]
    generators += [("Secret", g) for g in k.get("secretGenerator", [])]
    if generators and not options.get("disableNameSuffixHash"):
        raise Unsupported("generators with name hashes")
    for kind, gen in generators:
        if set(gen) - {"name", "namespace", "envs", "options", "type"}:
            raise Unsupported(f"{kind} generator keys {sorted(gen)}")
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(_read_env(root / env))
        meta: Doc = {"name": gen["name"]}
        if "namespace" in gen:
            meta["namespace"] = gen["namespace"]
        labels = {**options.get("labels", {}), **gen.get("options", {}).get("labels", {})}
        annotations = gen.get("options", {}).get("annotations", {})
        if annotations:
            meta["annotations"] = dict(annotations)
        if labels:
            meta["labels"] = labels
        if kind == "ConfigMap":
            yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}
        else:
            encoded = {key: base64.b64encode(v.encode()).decode() for key, v in data.items()}
            yield {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": meta,
                "type": gen.get("type", "Opaque"),
                "data": encoded,
            }


def _read_env(path: Path) -> dict[str, str]:
    data: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        data[key] = value
    return data


# --- patches ----------------------------------------------------------------------------------
def _apply_patch(root: Path, docs: list[Doc], patch: Doc) -> None:
    text = patch["patch"] if "patch" in patch else (root / patch["path"]).read_text()
    body = yaml.safe_load(text)
    target = patch.get("target")
    if target is None:
        if not isinstance(body, dict):
            raise Unsupported("a JSON 6902 patch needs a target")
        target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    matched = [d for d in docs if _selected(d, target)]
    if not matched:
        raise ValueError(f"patch target {target} matches no resource")
    if isinstance(body, dict) and body.get("$patch") == "delete":
        docs[:] = [d for d in docs if not any(d is m for m in matched)]
        return
    for doc in matched:
        if isinstance(body, list):
            _json6902(doc, body)
        else:
            smp = copy.deepcopy(body)
            smp.pop("apiVersion", None)
            smp.pop("kind", None)
            smp.get("metadata", {}).pop("name", None)
            builtin = "." not in doc["apiVersion"].split("/")[0] or doc["apiVersion"].startswith(
                ("apps/", "policy/", "networking.k8s.io/", "autoscaling/")
            )
            merged = _merge(doc, smp, strategic=builtin)
            doc.clear()
            doc.update(merged)


def _merge(base: Any, patch: Any, strategic: bool, key: str = "") -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = _merge(out[k], v, strategic, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    merge_key = _MERGE_KEYS.get(key) if strategic else None
    if isinstance(base, list) and isinstance(patch, list) and merge_key:
        out_list = [copy.deepcopy(item) for item in base]
        added = []
        for item in patch:
            for i, existing in enumerate(out_list):
                if existing.get(merge_key) == item.get(merge_key):
                    out_list[i] = _merge(existing, item, strategic)
                    break
            else:
                added.append(copy.deepcopy(item))
        # Strategic merge puts new list items first, in the patch's order.
        return added + out_list
    return copy.deepcopy(patch)


def _json6902(doc: Doc, ops: list[Doc]) -> None:
    for op in ops:
        if op["op"] not in ("replace", "add"):
            raise Unsupported(f"JSON patch op {op['op']}")
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        node: Any = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        last = parts[-1]
        if isinstance(node, list):
            if last == "-":
                node.append(op["value"])
            elif op["op"] == "add":
                node.insert(int(last), op["value"])
            else:
                node[int(last)] = op["value"]
        else:
            if op["op"] == "replace" and last not in node:
                raise ValueError(f"JSON patch replaces a missing path {op['path']}")
            node[last] = op["value"]


def _selected(doc: Doc, select: Doc) -> bool:
    meta = doc.get("metadata", {})
    if "kind" in select and doc.get("kind") != select["kind"]:
        return False
    if "name" in select and meta.get("name") != select["name"]:
        return False
    if "namespace" in select and meta.get("namespace") != select["namespace"]:
        return False
    if "labelSelector" in select:
        labels = meta.get("labels", {})
        for term in select["labelSelector"].split(","):
            k, _, v = term.partition("=")
            if labels.get(k.strip()) != v.strip():
                return False
    return True


# --- images -----------------------------------------------------------------------------------
def _containers(node: Any) -> Iterator[Doc]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("containers", "initContainers") and isinstance(v, list):
                yield from (c for c in v if isinstance(c, dict))
            else:
                yield from _containers(v)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _set_images(doc: Doc, image: Doc) -> None:
    for container in _containers(doc):
        ref = container.get("image")
        if not isinstance(ref, str):
            continue
        name, sep, tag = ref.partition(":")
        if name != image["name"]:
            continue
        name = image.get("newName", name)
        tag = image.get("newTag", tag)
        container["image"] = f"{name}:{tag}" if (sep or "newTag" in image) else name


# --- replacements -----------------------------------------------------------------------------
_SEGMENT = re.compile(r"\[([^\]=]+)(?:=([^\]]*))?\]|([^.\[]+)")


def _path(field_path: str) -> list[str]:
    """``a.b.[x.y/z].0`` -> ["a", "b", "x.y/z", "0"]; ``[name=v]`` stays a selector."""
    parts: list[str] = []
    for match in _SEGMENT.finditer(field_path):
        bracket, value, plain = match.groups()
        if plain is not None:
            parts.append(plain)
        elif value is not None:
            parts.append(f"[{bracket}={value}]")
        else:
            parts.append(bracket)
    return parts


def _get(node: Any, parts: list[str]) -> Any:
    for part in parts:
        node = _step(node, part, create=False)
    return node


def _step(node: Any, part: str, create: bool) -> Any:
    if isinstance(node, list):
        if part.startswith("["):
            key, _, value = part[1:-1].partition("=")
            for item in node:
                if isinstance(item, dict) and str(item.get(key)) == value:
                    return item
            raise KeyError(part)
        return node[int(part)]
    if part not in node:
        if not create:
            raise KeyError(part)
        node[part] = {}
    return node[part]


def _replace(docs: list[Doc], replacement: Doc) -> None:
    source = replacement["source"]
    sources = [d for d in docs if _selected(d, source)]
    if len(sources) != 1:
        raise ValueError(f"replacement source {source} matches {len(sources)} resources")
    value = _get(sources[0], _path(source.get("fieldPath", "metadata.name")))
    for target in replacement["targets"]:
        options = target.get("options", {})
        for doc in (d for d in docs if _selected(d, target["select"])):
            for field_path in target["fieldPaths"]:
                parts = _path(field_path)
                try:
                    parent = _get(doc, parts[:-1]) if not options.get("create") else doc
                    if options.get("create"):
                        for part in parts[:-1]:
                            parent = _step(parent, part, create=True)
                except (KeyError, IndexError) as exc:
                    raise ValueError(f"{field_path} missing in {_ident(doc)}") from exc
                last = parts[-1]
                old = parent[int(last)] if isinstance(parent, list) else parent.get(last)
                if old is None and not options.get("create"):
                    raise ValueError(f"{field_path} missing in {_ident(doc)}")
                new = value
                if "delimiter" in options:
                    pieces = str(old).split(options["delimiter"])
                    pieces[int(options.get("index", 0))] = str(value)
                    new = options["delimiter"].join(pieces)
                if isinstance(parent, list):
                    parent[int(last)] = new
                else:
                    parent[last] = new


def _annotations(doc: Doc) -> dict[str, str]:
    return dict(doc.get("metadata", {}).get("annotations") or {})


def _ident(doc: Doc) -> str:
    meta = doc.get("metadata", {})
    return f"{doc.get('kind')}/{meta.get('namespace', '')}/{meta.get('name')}"
