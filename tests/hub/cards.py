"""What the Hub checks in a repo card's YAML metadata (`POST /api/validate-yaml`), and how it reads the
metadata into `cardData` and tags. pyyaml is imported lazily: without it only the presence of metadata
is checked."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["HUB_LICENSES", "as_list", "card_metadata", "validate_card"]

# License ids the Hub accepts in card metadata (https://huggingface.co/docs/hub/repositories-licenses).
HUB_LICENSES = frozenset(
    "apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0"
    " bigcode-openrail-m afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc"
    " cc0-1.0 cc-by-2.0 cc-by-2.5 cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0"
    " cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0 cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0"
    " cdla-sharing-1.0 cdla-permissive-1.0 cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1"
    " eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c"
    " ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib"
    " pddl lgpl-lr deepfloyd-if-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 gemma unknown other".split()
)
_YAML_BLOCK = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def _front_matter(text: str) -> str | None:
    match = _YAML_BLOCK.search(text)
    return match.group(2) if match else None


def card_metadata(text: str) -> dict[str, Any]:
    """YAML front matter of a README as a dict; empty when absent or unparsable (pyyaml imported lazily)."""
    try:
        import yaml

        data = yaml.safe_load(_front_matter(text) or "")
    except Exception:
        return {}
    return data if isinstance(data, dict) else {}


def validate_card(content: str) -> tuple[list[str], list[str]]:
    """(errors, warnings) for a README's metadata, as `/api/validate-yaml` reports them."""
    block = _front_matter(content)
    if block is None or not block.strip():
        return [], ["Empty or missing yaml metadata in repo card (https://huggingface.co/docs/hub/model-cards)"]
    try:
        import yaml
    except ImportError:  # without pyyaml only the presence of metadata is checked
        return [], []
    try:
        meta = yaml.safe_load(block)
    except yaml.YAMLError as err:
        return [f"Invalid YAML in metadata: {err}"], []
    if not isinstance(meta, dict):
        return ["Metadata must be a YAML mapping"], []
    licenses = as_list(meta.get("license"))
    errors = [f'"license" must be a Hub license id, got {x!r}' for x in licenses if x not in HUB_LICENSES]
    relation = meta.get("base_model_relation")
    if relation is not None:  # how a model derives from its base_model (the Hub's model tree)
        if relation not in ("adapter", "merge", "quantized", "finetune"):
            errors.append(f'"base_model_relation" must be one of adapter, merge, quantized, finetune, got {relation!r}')
        if not meta.get("base_model"):
            errors.append('"base_model_relation" needs a "base_model"')
    models = meta.get("model-index", [])
    for i, model in enumerate(models if isinstance(models, list) else [None]):
        if not isinstance(model, dict) or not isinstance(model.get("name"), str):
            errors.append(f'"model-index[{i}].name" is required')
            continue
        for j, result in enumerate(model.get("results") or []):
            at = f"model-index[{i}].results[{j}]"
            for key, sub in (("task", "type"), ("dataset", "type"), ("dataset", "name")):
                if not isinstance(result, dict) or not isinstance((result.get(key) or {}).get(sub), str):
                    errors.append(f'"{at}.{key}.{sub}" is required')
            metrics = result.get("metrics") if isinstance(result, dict) else None
            if not metrics or not all(isinstance(m, dict) and isinstance(m.get("type"), str) and "value" in m
                                      for m in metrics):
                errors.append(f'"{at}.metrics" must be a non-empty list of {{type, value}}')
    return errors, []


