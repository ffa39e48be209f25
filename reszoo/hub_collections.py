"""The Hub collections of ``reszoo publish``: one per domain (``reszoo: <domain> models``), created
or updated, one item per published repo whose note gives the headline result and the
residual-vs-plain comparison; other items of a collection are left alone."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import network
from .errors import HubError
from .registry import Entry

__all__ = ["CollectionPlan", "collection_title", "item_note", "sync_collection"]

NOTE_LIMIT = 500  # characters the Hub keeps of a collection item's note
DESCRIPTION_LIMIT = 150  # of a collection's description


@dataclass
class CollectionPlan:
    """The collection of one domain and what publishing does to its items."""

    domain: str
    title: str
    slug: str | None
    items: list[tuple[str, str]]  # (repo, note), in the zoo's order
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def collection_title(domain: str) -> str:
    """The title of a domain's collection (titles are unique per owner: publishing finds it again)."""
    from .domains import get as get_domain

    return f"reszoo: {get_domain(domain).title} models"


def item_note(entries: list[Entry], reg: Mapping[str, Entry]) -> str:
    """A collection item's note: the repo's models, each with its headline, and its twin's."""
    from .cards import headline

    parts = []
    for entry in entries:
        text = f"{entry.name}: {headline(entry) or entry.task}"
        twin = reg.get(entry.twin) if entry.twin else None
        if twin is not None and twin.name not in {e.name for e in entries} and twin.metrics:
            kind = "residual twin" if entry.arch_args.get("residual", True) is False else "plain twin (no skips)"
            text += f"; {kind} {twin.name}: {twin.metrics[0].value:.4g}"
        parts.append(text)
    note = ". ".join(parts) + "."
    return note if len(note) <= NOTE_LIMIT else note[: NOTE_LIMIT - 1] + "…"


def _description(domain: str) -> str:
    from .domains import get as get_domain

    text = (f"{get_domain(domain).title.capitalize()} models of reszoo, the zoo of residual networks, each beside its "
            "plain twin (no skip connections) where it has one.")
    return text[:DESCRIPTION_LIMIT]


def _find_collection(api: Any, org: str, title: str) -> Any | None:
    with network.hub_call(org):
        for found in api.list_collections(owner=org, limit=1000):
            if found.title == title:
                return api.get_collection(found.slug)
    return None


def sync_collection(api: Any, org: str, domain: str, items: list[tuple[str, str]], *, dry_run: bool) -> CollectionPlan:
    """Create or update the domain's collection: items added, notes updated; others' items are left alone."""
    title = collection_title(domain)
    if dry_run:
        try:
            collection = _find_collection(api, org, title)
        except HubError:
            collection = None
    else:
        with network.hub_call(org):
            collection = api.create_collection(title, namespace=org, description=_description(domain), exists_ok=True)
            if collection.description != _description(domain):
                api.update_collection_metadata(collection.slug, description=_description(domain))
    plan = CollectionPlan(domain, title, collection.slug if collection else None, items)
    have = {item.item_id: item for item in collection.items} if collection else {}
    for repo, note in items:
        current = have.get(repo)
        if current is None:
            plan.added.append(repo)
            if not dry_run:
                with network.hub_call(repo):
                    api.add_collection_item(plan.slug, repo, "model", note=note, exists_ok=True)
        elif current.note != note:
            plan.updated.append(repo)
            if not dry_run:
                with network.hub_call(repo):
                    api.update_collection_item(plan.slug, current.item_object_id, note=note)
        else:
            plan.unchanged.append(repo)
    return plan
