"""Custom resources against their CRDs, as the API server handles them: unknown fields pruned
(unless `x-kubernetes-preserve-unknown-fields`), nulls dropped where the field is not nullable,
then the structural schema validated (types, `required`, `enum`, bounds, int-or-string), with the
API server's kind of message. The CRDs are the operators' released ones (`crds/SOURCE.md`).
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

CRDS = Path(__file__).with_name("crds")
TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


class SchemaError(ValueError):
    """The API server's 422 Invalid: the object does not fit its CRD's schema."""


@functools.cache
def schemas() -> dict[str, tuple[str, dict[str, Any]]]:
    """The storage version's kind and `openAPIV3Schema` of each CRD, by plural."""
    import yaml

    texts = [gzip.decompress(path.read_bytes()).decode() for path in sorted(CRDS.glob("*.yaml.gz"))]
    chart = resources.files("dask_kubernetes") / "operator/deployment/helm/dask-kubernetes-operator/crds"
    texts.append((chart / "daskcluster.yaml").read_text())
    found = {}
    for text in texts:
        for crd in yaml.safe_load_all(text):
            if not crd:
                continue
            (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
            names = crd["spec"]["names"]
            found[names["plural"]] = (f"{names['kind']}.{crd['spec']['group']}", version["schema"]["openAPIV3Schema"])
    return found


def admit(plural: str, obj: dict[str, Any]) -> None:
    """Prune `obj` (in place) and validate it against its CRD; no-op for a plural without one.

    Raises:
        SchemaError: The API server's refusal, every violation listed.
    """
    if plural not in schemas():
        return
    kind, schema = schemas()[plural]
    errors: list[str] = []
    for field in ("spec", "status"):
        if field in obj and field in schema.get("properties", {}):
            obj[field] = _check(obj[field], schema["properties"][field], field, errors)
    for field in schema.get("required") or []:
        if field not in obj:
            errors.append(f"{field}: Required value")
    if errors:
        raise SchemaError(f'{kind} "{obj["metadata"]["name"]}" is invalid: {"; ".join(errors)}')


def _check(value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> Any:
    """`value` pruned, its violations of `schema` appended to `errors`."""
    if schema.get("x-kubernetes-int-or-string"):
        if not TYPES["integer"](value) and not isinstance(value, str):
            errors.append(f"{path}: Invalid value: {value!r}: must be an integer or a string")
        return value
    kind = schema.get("type")
    if kind is not None and not TYPES[kind](value):
        errors.append(f'{path}: Invalid value: "{type(value).__name__}": {path} in body must be of type {kind}')
        return value
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(f'"{v}"' for v in schema["enum"])
        errors.append(f'{path}: Unsupported value: "{value}": supported values: {supported}')
    if "minimum" in schema and value < schema["minimum"]:
        errors.append(
            f"{path}: Invalid value: {value}: {path} in body should be greater than or equal to {schema['minimum']}"
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
    if isinstance(value, list) and "items" in schema:
        return [_check(item, schema["items"], f"{path}[{i}]", errors) for i, item in enumerate(value)]
    if isinstance(value, dict):
        return _check_object(value, schema, path, errors)
    return value


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str]) -> dict[str, Any]:
    properties, extra = schema.get("properties") or {}, schema.get("additionalProperties")
    keep_unknown = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
    kept = {}
    for key, item in value.items():
        sub = properties.get(key, extra if isinstance(extra, dict) else None)
        if item is None and not (sub or {}).get("nullable"):
            continue  # the API server drops a null it has no nullable field for
        if sub is not None:
            kept[key] = _check(item, sub, f"{path}.{key}", errors)
        elif keep_unknown:
            kept[key] = item
    for key in schema.get("required") or []:
        if key not in kept:
            errors.append(f"{path}.{key}: Required value")
    return kept
