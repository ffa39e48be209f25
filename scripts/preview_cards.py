"""Render the model cards as HTML pages the way a Hub model page shows them, plus an index of the zoo.

    python scripts/preview_cards.py                     # build/card-preview/index.html and <name>.html
    python scripts/preview_cards.py --hub               # the cards `reszoo publish` uploads, figures beside them
    python scripts/preview_cards.py --screenshots       # also docs/img/card-<domain>.png (headless Chromium)

A page shows the card's YAML header as a metadata panel (license, task, tags, data, base model, the
model-index results) beside its markdown body (tables, code, images), rendered by the `markdown`
package. Images are copied into the output folder, so the pages stand alone. The index lists the zoo
by domain with each model's headline metric. tests/test_cards.py opens these pages in Chromium and
checks that every image loads and that no table cell holds JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reszoo import domains  # noqa: E402
from reszoo.cards import card_for_entry, for_hub, headline  # noqa: E402
from reszoo.registry import Entry, load_registry  # noqa: E402

CARDS = ROOT / "model_cards"
DEFAULT_OUT = ROOT / "build" / "card-preview"
# One card per domain for the README's screenshots: a residual model with a twin and a figure where there is one.
SCREENSHOTS = {"image": "resnet-mnist", "text": "minilm-l6-sentence", "speech": "tdnn-fsdd-digits",
               "rl": "ppo-lunarlander-resmlp", "gan": "sngan-mnist"}
_FRONT = re.compile(r"\A---\n(.*?)\n---\n", re.S)
_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')
_HREF = re.compile(r'(<a\b[^>]*?\bhref=")([^"#]+)(#[^"]*)?(")')

CSS = """
body { font-family: "Source Sans Pro", "DejaVu Sans", Arial, sans-serif; margin: 0; color: #111827; background: #fff; }
header { border-bottom: 1px solid #e5e7eb; padding: 14px 32px; font-size: 20px; }
header .owner { color: #6b7280; } header .tag { margin-left: 8px; }
main { display: flex; gap: 32px; padding: 24px 32px; align-items: flex-start; }
article { flex: 1 1 auto; min-width: 0; max-width: 860px; line-height: 1.55; }
aside { flex: 0 0 300px; border-left: 1px solid #e5e7eb; padding-left: 24px; font-size: 14px; }
aside h3 { font-size: 13px; text-transform: uppercase; color: #6b7280; margin: 18px 0 6px; }
.chip { display: inline-block; background: #f3f4f6; border-radius: 6px; padding: 1px 8px; margin: 2px; font-size: 13px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 14px; }
th, td { border: 1px solid #e5e7eb; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f9fafb; }
code { background: #f3f4f6; border-radius: 4px; padding: 1px 4px; font-size: 90%; }
pre { background: #f9fafb; border: 1px solid #e5e7eb; border-radius: 8px; padding: 12px; overflow-x: auto; }
pre code { background: none; padding: 0; }
img { max-width: 100%; border: 1px solid #e5e7eb; border-radius: 6px; }
h1 { font-size: 28px; } h2 { border-bottom: 1px solid #e5e7eb; padding-bottom: 4px; margin-top: 32px; }
a { color: #2563eb; }
"""


def _markdown(text: str) -> str:
    import markdown

    return markdown.markdown(text, extensions=["tables", "fenced_code", "sane_lists"])


def _copy_image(src: str, base: Path, out: Path) -> str | None:
    """Copy a card's local image into ``out/img`` (the pages stand alone); its new src, None if missing."""
    if re.match(r"^[a-z]+://", src):
        return None
    path = (base / src).resolve()
    if not path.is_file():
        return None
    name = hashlib.sha1(str(path).encode()).hexdigest()[:10] + "-" + path.name
    (out / "img").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out / "img" / name)
    return f"img/{name}"


def _rewrite(body: str, base: Path, out: Path, names: set[str]) -> str:
    """Images copied beside the pages; links to other cards point at their pages, other local links at the checkout."""
    def image(m: re.Match[str]) -> str:
        new = _copy_image(html.unescape(m[2]), base, out)
        return f"{m[1]}{html.escape(new) if new else m[2]}{m[3]}"

    def link(m: re.Match[str]) -> str:
        target = html.unescape(m[2])
        if re.match(r"^[a-z]+:", target):
            return m[0]
        if target.endswith(".md") and Path(target).stem in names and "/" not in target:
            return f"{m[1]}{Path(target).stem}.html{m[3] or ''}{m[4]}"
        return f"{m[1]}{(base / target).resolve().as_uri()}{m[3] or ''}{m[4]}"

    return _HREF.sub(link, _SRC.sub(image, body))


def _chips(values: Any) -> str:
    items = values if isinstance(values, list) else [values] if values else []
    return "".join(f'<span class="chip">{html.escape(str(v))}</span>' for v in items)


def _panel(meta: dict[str, Any]) -> str:
    """The Hub page's side panel: what the YAML header says."""
    parts = []
    for key, title in (("pipeline_tag", "Task"), ("library_name", "Library"), ("license", "License"),
                       ("datasets", "Datasets"), ("base_model", "Base model"), ("tags", "Tags")):
        if meta.get(key):
            parts.append(f"<h3>{title}</h3><div>{_chips(meta[key])}</div>")
    rows = []
    for model in meta.get("model-index") or []:
        for result in model.get("results") or []:
            data = result.get("dataset") or {}
            for metric in result.get("metrics") or []:
                rows.append(f"<tr><td>{html.escape(str(data.get('name', '')))}</td>"
                            f"<td>{html.escape(str(metric.get('name') or metric.get('type')))}</td>"
                            f"<td>{html.escape(str(metric.get('value')))}</td></tr>")
    if rows:
        parts.append("<h3>Evaluation results</h3><table><tr><th>dataset</th><th>metric</th><th>value</th></tr>"
                     + "".join(rows) + "</table>")
    return "".join(parts)


def page(title: str, body_html: str, panel_html: str = "", owner: str = "") -> str:
    head = f'<span class="owner">{html.escape(owner)}/</span>' if owner else ""
    aside = f"<aside>{panel_html}</aside>" if panel_html else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><header>{head}<b>{html.escape(title)}</b></header>"
            f"<main><article>{body_html}</article>{aside}</main></body></html>\n")


def render_card(text: str, *, title: str, base: Path, out: Path, names: set[str], owner: str = "") -> str:
    """One card (front matter + markdown) as a Hub-like page; ``base``: the folder its relative links start from."""
    import yaml

    match = _FRONT.match(text)
    meta = yaml.safe_load(match.group(1)) if match else {}
    body = text[match.end():] if match else text
    return page(title, _rewrite(_markdown(body), base, out, names), _panel(meta or {}), owner)


def _entries() -> list[Entry]:
    return list({e.name: e for e in load_registry().values()}.values())


def index_page(entries: list[Entry]) -> str:
    """The zoo by domain: each model with its task, headline metric and twin."""
    sections = []
    for name in domains.names():
        members = [e for e in entries if e.domain == name]
        if not members:
            continue
        rows = "".join(
            f'<tr><td><a href="{e.name}.html">{html.escape(e.name)}</a></td><td>{html.escape(e.task)}</td>'
            f"<td>{html.escape(headline(e) or '')}</td>"
            f"<td>{'plain twin of ' + html.escape(e.twin) if e.twin and e.arch_args.get('residual', True) is False else html.escape(e.twin or '')}</td></tr>"
            for e in members)
        sections.append(f"<h2>{html.escape(domains.get(name).title)}</h2><table><tr><th>model</th><th>task</th>"
                        f"<th>headline</th><th>twin</th></tr>{rows}</table>")
    body = ("<h1>The reszoo model zoo</h1><p>Every model of the registry, by domain, with its headline result; "
            "each name opens its card.</p>" + "".join(sections))
    return page("reszoo model zoo", body)


def render_all(out: Path = DEFAULT_OUT, *, hub: bool = False) -> dict[str, Path]:
    """Write ``out/<name>.html`` for every card and ``out/index.html``; ``{name: page}``.

    Default: the committed cards (model_cards/, images linked in the checkout); ``hub``: the cards
    ``reszoo publish`` uploads, read with their repo's files (the bundled mirror) beside them."""
    out.mkdir(parents=True, exist_ok=True)
    entries = _entries()
    names = {e.name for e in entries}
    pages = {}
    for entry in entries:
        if hub:
            if entry.weights is None:
                continue
            text = str(card_for_entry(for_hub(entry, entry.weights.repo), repo_id=entry.weights.repo))
            base = ROOT / "weights" / entry.weights.repo
        else:
            text, base = (CARDS / f"{entry.name}.md").read_text(encoding="utf-8"), CARDS
        owner = entry.weights.repo.split("/")[0] if entry.weights else ""
        pages[entry.name] = out / f"{entry.name}.html"
        pages[entry.name].write_text(render_card(text, title=entry.name, base=base, out=out, names=names, owner=owner),
                                     encoding="utf-8")
    (out / "index.html").write_text(index_page(entries), encoding="utf-8")
    return pages


def find_chromium() -> str | None:
    """Debian's headless-capable Chromium (``apt-get install -y chromium``), or another Chrome on PATH."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def chromium_args(chromium: str, *extra: str) -> list[str]:
    """A headless Chromium command line that runs as root, in a container, with no GPU and no network use."""
    return [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--disable-extensions", "--disable-background-networking", "--mute-audio", *extra]


def screenshot(chromium: str, page_path: Path, png: Path, *, width: int = 1200, height: int = 1500,
               timeout: float = 60) -> Path:
    """A PNG of ``page_path`` as a browser window of ``width`` x ``height`` shows it."""
    import tempfile

    png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-home-") as home:  # its profile and caches, not beside the PNG
        subprocess.run(chromium_args(chromium, f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                                     "--virtual-time-budget=5000", page_path.resolve().as_uri()),
                       check=True, capture_output=True, timeout=timeout, env={**os.environ, "HOME": home})
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--hub", action="store_true", help="render the cards as uploaded to the Hub")
    parser.add_argument("--screenshots", action="store_true",
                        help="write docs/img/card-<domain>.png, one card per domain (needs chromium)")
    args = parser.parse_args()
    pages = render_all(args.out, hub=args.hub)
    print(f"{len(pages)} card pages and index.html in {args.out}")
    if args.screenshots:
        chromium = find_chromium()
        if chromium is None:
            print("no chromium found: `apt-get install -y chromium`", file=sys.stderr)
            return 1
        for domain, name in SCREENSHOTS.items():
            png = screenshot(chromium, pages[name], ROOT / "docs" / "img" / f"card-{domain}.png")
            print(f"{png.relative_to(ROOT)}: {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
