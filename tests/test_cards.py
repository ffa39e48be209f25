"""Generated model cards: the Hub refuses bad metadata, the committed cards are up to date, fine-tuned
models name their base; what a visitor reads (a summary, no raw JSON, the residual-vs-plain section, the
images, snippets that import reszoo once), every offline card's snippet run, and the cards rendered as Hub
pages opened in headless Chromium. (Every entry's card, its Hub validation and its model-index for every
metric are checked in test_contract.py.)"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

import reszoo
from reszoo.cards import card_for_entry, for_hub, headline
from reszoo.hub import bundled_mirror
from reszoo.registry import info, load_registry

ROOT = Path(__file__).resolve().parent.parent
NAMES = reszoo.list_models()


def test_bad_license_is_rejected_by_the_hub(hub):
    card = ModelCard("---\nlicense: not-a-license\nlibrary_name: reszoo\n---\n# x\n")
    with pytest.raises(ValueError):
        card.validate()


def test_model_cards_folder_is_up_to_date():
    out = subprocess.run([sys.executable, "scripts/make_cards.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "stale cards; run `python scripts/make_cards.py`:\n" + out.stdout


def test_fine_tuned_card_names_base_model_repo(tmp_path, monkeypatch):
    import dataclasses

    base = info(NAMES[0])
    child = dataclasses.replace(base, name="child-model", base_model=base.name, usage=None)
    from reszoo.cards import card_for_entry

    card = card_for_entry(child, repo_id="someone/child-model")
    assert card.data.base_model == (base.weights.repo if base.weights else base.name)
    assert 'reszoo.load("hf://someone/child-model")' in card.text


# --------------------------------------------------------------------------- what a visitor reads

CARDS = ROOT / "model_cards"
ENTRIES = {e.name: e for e in load_registry().values()}
_CODE = re.compile(r"```python\n(.*?)```", re.S)


def _body(text: str) -> str:
    return text.split("\n---\n", 1)[1]


def _json_like(text: str) -> bool:
    """A serialised mapping or list: what a card must never show a reader."""
    text = text.strip().strip("`").strip()
    return bool(re.match(r"^[\[{]", text)) or '{"' in text or "{'" in text or '": ' in text


def raw_json(markdown: str) -> list[str]:
    """Table cells and prose lines (code blocks aside) of a card that hold JSON."""
    found = []
    for line in _CODE.sub("", markdown).splitlines():
        if line.startswith("|"):
            found += [c for c in re.split(r"(?<!\\)\|", line.strip())[1:-1] if _json_like(c)]
        elif _json_like(line) and not line.startswith("#"):
            found.append(line)
    return found


def _bundled(name: str) -> bool:
    """Whether the model's weights (and an adapter's base's) are in the bundled mirror: its card runs offline."""
    entry = ENTRIES[name]
    if entry.weights is None or not (bundled_mirror() / entry.weights.repo / entry.weights.file).is_file():
        return False
    return entry.base is None or _bundled(entry.base)


def test_no_card_shows_raw_json():
    for name in NAMES:
        text = (CARDS / f"{name}.md").read_text()
        assert not raw_json(_body(text)), (name, raw_json(_body(text)))
        hub = str(card_for_entry(for_hub(ENTRIES[name], "someone/x"), repo_id="someone/x"))
        assert not raw_json(_body(hub)), (name, raw_json(_body(hub)))
    # A fine-tuned model's facts, nested ones too, become tables and sentences.
    child = dataclasses.replace(ENTRIES["resnet-mnist"], name="child", base_model="resnet-mnist", twin=None, extra={
        "history": [{"epoch": 1, "accuracy": 0.9}, {"epoch": 2, "accuracy": 0.95}], "versions": {"torch": "2.9"},
        "per_class": {"cat": {"precision": 0.9, "recall": 0.8}}, "sizes": [1, 2, 3]})
    text = str(card_for_entry(child, repo_id="someone/child"))
    assert not raw_json(_body(text)), raw_json(_body(text))
    assert "| epoch | accuracy |" in text and "| cat | 0.9 | 0.8 |" in text and "| sizes | 1, 2, 3 |" in text


def test_the_json_check_finds_json():
    assert raw_json("| a | {\"x\": 1} |\n| b | `[1, 2]` |\n{'k': 2}\n") == [' {"x": 1} ', " `[1, 2]` ", "{'k': 2}"]


@pytest.mark.parametrize("name", [n for n in NAMES if info(n).twin])
def test_every_twin_card_compares_residual_and_plain(name):
    entry = ENTRIES[name]
    text = (CARDS / f"{name}.md").read_text()
    section = text.split("## Residual vs plain\n", 1)[1].split("\n## ", 1)[0]
    residual, plain = (entry.twin, name) if entry.arch_args.get("residual", True) is False else (name, entry.twin)
    assert f"| residual: {residual} | plain: {plain} |" in section
    metric = ENTRIES[residual].metrics[0]
    assert f"| {metric.name or metric.metric} " in section  # both models' numbers at the same budget, row by row
    assert f"[{entry.twin}]({entry.twin}.md)" in section and "[docs/residual-study.md](../docs/residual-study.md)" in section


def test_seeds_of_a_pair_are_a_table():
    for name in ("ppo-lunarlander-resmlp", "ppo-lunarlander-resmlp-plain"):  # both cards of the pair
        text = (CARDS / f"{name}.md").read_text()
        assert "| seed 0 | 269.4 | 260.12 |" in text and "| seed 3 | 263.42 +- 43.23 | 233.20 +- 15.55 |" in text
        assert "| **mean over seeds** | **266.33** | **248.84** |" in text
    # Without a summary over seeds, the other seeds' results are the table.
    residual, plain = (ENTRIES[n] for n in ("ppo-lunarlander-resmlp", "ppo-lunarlander-resmlp-plain"))
    registry = {**ENTRIES, **{e.name: dataclasses.replace(e, extra={k: v for k, v in e.extra.items() if k != "over_seeds"})
                              for e in (residual, plain)}}
    text = str(card_for_entry(registry[residual.name], registry=registry, card_dir=CARDS))
    assert "Other training seeds" in text and "| seed 1 | 260.95 +- 22.84 | 231.62 +- 44.41 |" in text


def test_images_are_embedded_from_where_they_are():
    for name in NAMES:
        entry, text = ENTRIES[name], (CARDS / f"{name}.md").read_text()
        links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
        for link in links:
            assert link.startswith("https://") or (CARDS / link).resolve().is_file(), (name, link)
        shown = {Path(link).name for link in links}
        assert set(entry.figures.values()) <= shown, name
        grid = entry.extra.get("sample grid")
        if grid:
            assert Path(grid.split()[0]).name in shown, name
    hub = str(card_for_entry(for_hub(ENTRIES["sngan-mnist"], "reszoo/sngan-mnist"), repo_id="reszoo/sngan-mnist"))
    assert "![" not in hub and "`docs/img/sngan-mnist.png` in reszoo's source tree (not shipped in this repo)" in hub
    rl = str(card_for_entry(for_hub(ENTRIES["sac-pendulum-resmlp"], "o/x"), repo_id="o/x"))
    assert "![learning curve](learning_curve.png)" in rl


def test_a_card_opens_with_a_summary():
    for name in NAMES:
        entry = ENTRIES[name]
        body = _body((CARDS / f"{name}.md").read_text())
        summary = body.split(f"# {name}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert 3 <= len(summary) <= 4 and all(line.startswith("- ") for line in summary), name
        if entry.metrics:
            assert headline(entry) and f"**{entry.metrics[0].value:.4g}**" in summary[1], name


def test_every_snippet_imports_reszoo_once():
    for name in NAMES:
        (code,) = _CODE.findall((CARDS / f"{name}.md").read_text())
        imports = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Import)
                   and any((a.asname or a.name.split(".")[0]) == "reszoo" for a in n.names)]
        assert len(imports) == 1, (name, code)


# --------------------------------------------------------------------------- the snippets run

_RUNNER = r"""
import contextlib, io, json, sys, traceback
results = {}
for name, path, code in json.load(sys.stdin):
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, path, "exec"), {"__name__": "__main__"})
        results[name] = {"ok": True, "out": out.getvalue()}
    except BaseException:
        results[name] = {"ok": False, "out": out.getvalue(), "error": traceback.format_exc(limit=4)}
print()
print(json.dumps(results))
"""
OFFLINE_CARDS = [n for n in NAMES if _bundled(n)]


@pytest.fixture(scope="module")
def snippet_runs(tmp_path_factory) -> dict:
    """Every offline card's "How to use" block, run as a user would: from the repo root, offline, with an
    empty cache, each in a fresh namespace of one Python process (importing torch once keeps it fast)."""
    tmp = tmp_path_factory.mktemp("snippets")
    jobs = [(n, f"model_cards/{n}.md", _CODE.findall((CARDS / f"{n}.md").read_text())[0]) for n in OFFLINE_CARDS]
    env = {k: v for k, v in os.environ.items() if k not in ("RESZOO_REGISTRY", "RESZOO_MIRROR", "RESZOO_NO_BUNDLED")}
    env |= {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"), "RESZOO_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", _RUNNER], input=json.dumps(jobs), cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", OFFLINE_CARDS)
def test_the_snippet_of_an_offline_card_runs(name, snippet_runs):
    result = snippet_runs[name]
    assert result["ok"], f"model_cards/{name}.md shows code that fails:\n{result['error']}"


def test_offline_cards_are_the_bundled_models():
    assert {"resnet-mnist", "ppo-lunarlander-resmlp-plain", "sngan-fashion-mnist", "tdnn-fsdd-digits"} <= set(OFFLINE_CARDS)
    assert "resnet50-imagenet" not in OFFLINE_CARDS


# --------------------------------------------------------------------------- in a real browser

_CHECK_PAGE = """<!doctype html><meta charset=utf-8><pre id="result">pending</pre><script>
const pages = %s;
function check(doc) {
  const images = [...doc.images].map(i => ({src: i.getAttribute("src"), ok: i.complete && i.naturalWidth > 0}));
  const cells = [...doc.querySelectorAll("td, th")].map(c => c.textContent.trim());
  const json = cells.filter(t => /^[\\[{]/.test(t) || t.includes('{"') || t.includes("{'") || t.includes('": '));
  return {images, tables: doc.querySelectorAll("table").length, json};
}
async function run() {
  const results = {};
  for (const page of pages) {
    const frame = document.createElement("iframe");
    frame.style.width = "1200px"; frame.style.height = "900px";
    const loaded = new Promise(resolve => frame.onload = resolve);
    frame.src = page;
    document.body.appendChild(frame);
    await loaded;  // the load event waits for the page's images
    results[page] = check(frame.contentDocument);
    frame.remove();
  }
  document.getElementById("result").textContent = JSON.stringify(results);
}
run();
</script>
"""


@pytest.fixture(scope="module")
def preview(tmp_path_factory):
    """scripts/preview_cards.py's pages: the committed cards, and the cards as uploaded to the Hub."""
    pytest.importorskip("markdown", reason="the preview renders markdown with the `markdown` package (test extra)")
    from scripts.preview_cards import render_all

    out = tmp_path_factory.mktemp("preview")
    return out, render_all(out), render_all(out / "hub", hub=True)


def _chromium() -> str:
    from scripts.preview_cards import find_chromium

    found = find_chromium()
    if found is None:
        pytest.skip("no chromium binary: `apt-get install -y chromium` (Debian's headless Chromium) runs the browser checks")
    return found


def test_the_preview_index_lists_the_zoo_by_domain(preview):
    out, pages, _ = preview
    index = (out / "index.html").read_text()
    for title in ("image", "text", "speech", "reinforcement-learning", "generative (GAN)"):
        assert f"<h2>{title}</h2>" in index
    assert '<a href="resnet-mnist.html">resnet-mnist</a>' in index and "top-1 accuracy 99.46 (MNIST, test)" in index
    assert set(pages) == {e.name for e in ENTRIES.values()}


def test_card_pages_load_every_image_and_show_no_json_in_a_browser(preview, tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from scripts.preview_cards import chromium_args

    chromium = _chromium()
    out, pages, hub_pages = preview
    urls = [f"{p.name}" for p in pages.values()] + [f"hub/{p.name}" for p in hub_pages.values()] + ["index.html"]
    (out / "check.html").write_text(_CHECK_PAGE % json.dumps(urls))

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/check.html"
        run = subprocess.run(chromium_args(chromium, "--dump-dom", "--virtual-time-budget=60000", url),
                             capture_output=True, text=True, timeout=180, env={**os.environ, "HOME": str(tmp_path)})
    finally:
        server.shutdown()
        server.server_close()
    found = re.search(r'<pre id="result">(.*?)</pre>', run.stdout, re.S)
    assert found and found.group(1) != "pending", run.stdout[-2000:] + run.stderr[-2000:]
    results = json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))
    assert set(results) == set(urls)
    for page, result in results.items():
        assert all(image["ok"] for image in result["images"]), (page, result["images"])
        assert not result["json"], (page, result["json"])
        assert result["tables"] >= 1, page
    for name, entry in ENTRIES.items():  # the figures and sample grids are there, and loaded
        expected = len(entry.figures) + ("sample grid" in entry.extra)
        assert len(results[f"{name}.html"]["images"]) == expected, name
    assert len(results["hub/ppo-cartpole-resmlp.html"]["images"]) == 1  # the figure beside the card in its repo


def test_a_card_screenshot_is_a_picture(preview, tmp_path):
    from PIL import Image

    from scripts.preview_cards import screenshot

    chromium = _chromium()
    _, pages, _ = preview
    png = screenshot(chromium, pages["sngan-mnist"], tmp_path / "card.png", width=900, height=1200)
    with Image.open(png) as image:
        assert image.size == (900, 1200)
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # text and a sample grid on a white page, not a blank one
