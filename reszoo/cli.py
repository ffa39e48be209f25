"""``reszoo`` command line: list, info, card, predict, pull, push, publish, verify, plus domain commands.

Errors print one line, ``reszoo: error: ...``, and exit with status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__, domains
from .domains import Command

# Workflow commands: module with add_parser(subparsers) and run(args), and the help line shown
# before it is imported (only the command being run imports its module). Each domain adds its own
# (Domain.commands).
_EXTRA_COMMANDS = {
    "finetune": Command("reszoo.finetune.cli", "fine-tune a model (classifier or recogniser) on your own data"),
    "analyze": Command("reszoo.analysis.cli", "gradient flow, branch ratio, lesions of a model: JSON, plots"),
    "export": Command("reszoo.export", "export a model to ONNX, TorchScript or torch.export, checked against it"),
}
_CORE_COMMANDS = ("list", "info", "card", "predict", "pull", "push", "publish", "verify")


def extra_commands() -> dict[str, Command]:
    """The workflow commands and every discovered domain's, by name; a name claimed twice is an error."""
    commands = dict(_EXTRA_COMMANDS)
    owner = {name: "reszoo" for name in (*_CORE_COMMANDS, *commands)}
    for domain_name in domains.names():
        for name, command in domains.get(domain_name).commands.items():
            if name in owner:
                from .errors import RegistryError

                raise RegistryError(f"command {name!r} of domain {domain_name!r} is already a command of {owner[name]}; "
                                    "rename it in its Domain.commands")
            owner[name], commands[name] = f"domain {domain_name!r}", command
    return commands


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        return
    cols = list(dict.fromkeys(k for r in rows for k in r))
    cells = [[_cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, list) and len(value) > 4:  # an embedding: its head and size, not 384 numbers
        return "[" + ", ".join(_cell(v) for v in value[:3]) + f", ... ({len(value)} values)]"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    if value is None:
        return ""
    return str(value)


# --------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import info, list_models

    rows = []
    for name in list_models(args.pattern, domain=args.domain, task=args.task):
        e = info(name)
        head = e.metrics[0] if e.metrics else None
        rows.append({
            "name": name, "domain": e.domain, "task": e.task, "arch": e.arch, "license": e.license,
            "metric": f"{head.metric}={head.value:.4g} ({head.dataset})" if head else "",
        })
    if args.json:
        print(json.dumps([info(r["name"]).to_dict() for r in rows], indent=2))
    else:
        _print_rows(rows, False)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import yaml

    from .registry import info

    data = info(args.name).to_dict()
    if "labels" in data and len(data["labels"]) > 12 and not args.json:
        data["labels"] = data["labels"][:12] + [f"... ({len(data['labels'])} labels)"]
    print(json.dumps(data, indent=2) if args.json else yaml.safe_dump(data, sort_keys=False, width=100).rstrip())
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    from .cards import card

    text = str(card(args.name))
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        print(text)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    """Rows for every input: a table (or ``--json``) on stdout, or streamed to ``--out``. An input that
    cannot be read is an error row; the run goes on, and exits 1 at the end, naming the first one.
    Under torchrun, each process runs a shard and process 0 writes every row (:mod:`reszoo.distributed`)."""
    from . import distributed
    from .errors import InputError

    if args.resume and not args.out:
        raise InputError("--resume continues an --out file; give --out FILE")
    if args.compile != "auto" and not args.optimize:
        raise InputError(f"--compile {args.compile} applies to the fast path; add --optimize")
    rank, _, processes = distributed.world()
    if processes > 1:
        distributed.join()
    try:
        return _predict(args, rank, processes)
    finally:
        distributed.leave()


def _predict(args: argparse.Namespace, rank: int, processes: int) -> int:
    from . import distributed
    from .api import load
    from .predict import Options, list_inputs, make_task, predict_groups
    from .rows import RowWriter

    model = load(args.name, device=distributed.device_for(args.device), mirror=args.mirror, optimize=args.optimize)
    if args.optimize and args.compile != "auto":
        from .optimize import optimize

        optimize(model, compile=args.compile == "always")
    out_dir = args.out_dir if args.out_dir is not None else "generated"
    task = make_task(model, Options(top_k=args.top_k, reference=args.reference, out_dir=out_dir, column=args.column))
    writer = RowWriter(args.out, task.fields, resume=args.resume) if args.out and rank == 0 else None
    rows: list[dict[str, Any]] = []
    inputs = failed = written = 0
    first_error = None
    try:
        common = dict(task=task, batch_size=args.batch_size, num_workers=args.num_workers)
        if processes > 1:
            skip = distributed.share(writer.done if writer else set())
            items = list_inputs(list(args.inputs), task, skip)
            distributed.check_inputs(len(items))
            groups = distributed.gathered_groups(
                predict_groups(model, list(args.inputs), skip=skip, shard=(rank, processes), progress=False, **common),
                len(items), args.batch_size)
        else:
            groups = predict_groups(model, list(args.inputs), skip=writer.done if writer else (), **common)
        for group, error in groups:
            inputs += 1
            if error is not None:
                failed += 1
                name, message = group[0]["input"], group[0]["error"]
                first_error = first_error or (message if name in message else f"{name}: {message}")
            if writer is not None:
                writer.write(group)
                written += len(group)
            else:
                rows += group
    finally:
        if writer is not None:
            writer.close()
    if rank != 0:
        return 0  # process 0 reports for all
    if writer is None:
        _print_rows(rows, args.json)
    elif args.out != "-":
        skipped = f", {len(writer.done)} already there" if writer.done else ""
        shards = f" by {processes} processes" if processes > 1 else ""
        print(f"{written} rows for {inputs} inputs written to {args.out}{shards}{skipped}", file=sys.stderr)
    if failed:
        noun = "input" if inputs == 1 else "inputs"
        print(f"reszoo: error: {failed} of {inputs} {noun} could not be predicted (see their error rows); "
              f"first: {first_error}", file=sys.stderr)
        return 1
    return 0


def _same_bytes(a: Path, b: Path) -> bool:
    import filecmp

    return os.path.samefile(a, b) or filecmp.cmp(a, b, shallow=False)


def _copy_into_mirror(src: Path, dest: Path, *, force: bool, label: str) -> bool:
    """Copy ``src`` to ``dest``; False when ``dest`` already holds the same bytes. An existing,
    different file is replaced only with ``force``; the copy goes through a temporary file and a
    rename, so an interrupted pull never leaves half a file where a mirror expects a whole one."""
    from tqdm.auto import tqdm

    from .errors import ReszooError
    from .hub import regular_file

    if regular_file(dest) is not None:  # a folder, FIFO or dangling link there is reported as such
        if _same_bytes(src, dest):
            return False
        if not force:
            raise ReszooError(f"{dest} already exists and differs from {label}; pass --force to replace it")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        size = src.stat().st_size
        with open(src, "rb") as source, os.fdopen(fd, "wb") as out, tqdm(
            total=size, unit="B", unit_scale=True, desc=label, disable=size < (1 << 20)
        ) as bar:
            while chunk := source.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def cmd_pull(args: argparse.Namespace) -> int:
    from .domains import aux_files
    from .errors import ReszooError
    from .hub import fetch_file, fetch_weights
    from .names import check_revision
    from .registry import info

    if args.revision is not None:
        check_revision(args.revision, "--revision", ReszooError)
        if args.to:  # a mirror holds the registry's pinned files only: it records no revision to tell them apart
            raise ReszooError("--revision with --to would put an unpinned file where loads expect the pinned one; "
                              "pull other revisions into the cache (no --to)")
    names = list(args.names)
    for name in names:  # a LoRA adapter is nothing without its base: pulled too (appended once)
        base = info(name).base
        if base is not None and base not in names:
            names.append(base)
    for name in names:
        entry = info(name)
        if entry.weights is None:
            print(f"{entry.name}: no weights to pull")
            continue
        w = entry.weights
        files = [(w.repo, w.file, fetch_weights(w, revision=args.revision))]
        for repo, rev, filename in aux_files(entry):
            # --revision applies to the weights' repo; a mirror copy cannot serve a revision asked for.
            exact = args.revision is not None and repo == w.repo and args.revision != w.revision
            files.append((repo, filename, fetch_file(repo, filename, revision=args.revision if exact else rev,
                                                     exact_revision=exact)))
        for repo, filename, path in files:
            if args.to:
                dest = Path(args.to) / repo / filename  # repo and file names are checked: inside --to
                copied = _copy_into_mirror(path, dest, force=args.force, label=f"{repo}/{filename}")
                print(f"{entry.name}: {dest}" + ("" if copied else " (already there)"))
            else:
                print(f"{entry.name}: {path}")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from .api import load
    from .saving import push

    model = load(args.model, mirror=args.mirror)
    commit = push(model, args.repo_id, private=args.private or None, commit_message=args.message)
    print(f"pushed {args.model} to {args.repo_id} at commit {commit}")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from .publish import publish  # imported by this command only (it brings the Hub client and ruamel.yaml)

    report = publish(args.names, org=args.org, registry=args.registry, dry_run=args.dry_run, mirror=args.mirror,
                     private=args.private or None, collections=not args.no_collections)
    print("\n".join(report.lines()))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Re-hash every cached or mirrored copy of the registry's pinned files."""
    from .hub import mirror_dirs, cached_files, sha256_of
    from .registry import info, list_models

    names = args.names or list_models()
    pins: dict[tuple[str, str], tuple[str, str | None]] = {}
    for name in names:
        w = info(name).weights
        if w and w.sha256:
            pins[(w.repo, w.file)] = (w.sha256, w.revision)
    checked, bad = 0, 0
    candidates = [(repo, rev, f, p) for repo, rev, f, p in cached_files({r for r, _ in pins}) if (repo, f) in pins]
    candidates += [(r, "mirror", f, d / r / f) for d in mirror_dirs(args.mirror) for (r, f) in pins if (d / r / f).is_file()]
    for repo, rev, filename, path in candidates:
        expected, pinned_rev = pins[(repo, filename)]
        if rev not in ("mirror", pinned_rev):
            continue  # other revisions of the file have no pin to check against
        actual = sha256_of(path)
        ok = actual == expected
        checked += 1
        bad += not ok
        print(f"{'ok ' if ok else 'BAD'} {repo}/{filename} ({rev[:12]}) {path}" + ("" if ok else f" expected {expected} got {actual}"))
    print(f"{checked} file(s) checked, {bad} bad")
    return 1 if bad else 0


# --------------------------------------------------------------------------- parser


def _count(low: int) -> Any:
    """An argparse type: a whole number >= ``low`` (a usage error otherwise, status 2)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; of the domain commands, only ``command`` is imported and built."""
    parser = argparse.ArgumentParser(prog="reszoo", description="A model zoo of residual networks.")
    parser.add_argument("--version", action="version", version=f"reszoo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list registry entries")
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern on names and aliases")
    p.add_argument("--domain", choices=domains.names())
    p.add_argument("--task")
    p.add_argument("--json", action="store_true", help="full entries as JSON")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("info", help="show a registry entry")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("card", help="print (or write) the generated model card")
    p.add_argument("name")
    p.add_argument("--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("predict", help="run a model on inputs: files, folders, tables of texts, texts, ...",
                       description="Batch prediction; the rows of each kind of model: docs/inference.md.")
    p.add_argument("name", help="registry name, hf://owner/repo[@rev] or a saved-model folder")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders (searched recursively), text files/tables, texts, observations, labels")
    p.add_argument("--top-k", type=_count(1), default=5, help="classes (tokens, actions) per input (default 5)")
    p.add_argument("--batch-size", type=_count(1), default=32, help="inputs per batch (default 32)")
    p.add_argument("--num-workers", type=_count(0), default=0, help="processes reading inputs (default 0: this one)")
    p.add_argument("--out", default=None, help="stream rows to FILE.jsonl, .csv or .tsv (- for JSON lines on stdout)")
    p.add_argument("--resume", action="store_true", help="continue --out: skip the inputs it already has")
    p.add_argument("--column", default=None, help="the column of texts in CSV/TSV/JSONL inputs (default: text)")
    p.add_argument("--reference", default=None, help="embedding models: compare every input with this one")
    p.add_argument("--out-dir", default=None, help="generators: where the images go (default: generated/)")
    p.add_argument("--optimize", action="store_true",
                   help="the fast path: batch norms folded, channels-last, bf16 where the hardware has it, compiled "
                        "where the input count pays (docs/inference.md)")
    p.add_argument("--compile", choices=("auto", "always", "never"), default="auto",
                   help="with --optimize: torch.compile with frozen weights when the inputs pay for it (auto), "
                        "always, or never")
    p.add_argument("--device", default=None)
    p.add_argument("--mirror", default=None, help="mirror folder (default $RESZOO_MIRROR)")
    p.add_argument("--json", action="store_true", help="print the rows as one JSON array (without --out)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("pull", help="download and verify weights (into the cache, or a mirror folder)")
    p.add_argument("names", nargs="+")
    p.add_argument("--to", help="fill this mirror folder (<dir>/<owner>/<repo>/<file>) for offline sites")
    p.add_argument("--revision", default=None,
                   help="a commit, branch or tag instead of the registry's pin (fetched from the Hub, never from a mirror)")
    p.add_argument("--force", action="store_true", help="replace files in --to that differ from the pulled ones")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("push", help="publish a model (weights, config, card) to the Hub")
    p.add_argument("model", help="registry name, hf:// URI or saved-model folder")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true")
    p.add_argument("--message", default=None)
    p.add_argument("--mirror", default=None)
    p.set_defaults(func=cmd_push)

    p = sub.add_parser("publish", help="publish the models trained here to the Hub and pin registry.yaml to the commits",
                       description="Create ORG/<repo> for every entry whose weights are in the bundled mirror (or the "
                                   "NAMES given), upload weights, config.json, card and figures in one commit, write the "
                                   "commit into the entry's weights.revision, regenerate model_cards/ and update one Hub "
                                   "collection per domain. Idempotent. See docs/publishing.md.")
    p.add_argument("names", nargs="*", help="registry names (default: every entry whose weights are in weights/)")
    p.add_argument("--org", required=True, help="the Hub user or organisation to publish to")
    p.add_argument("--dry-run", action="store_true", help="print the plan; upload and write nothing")
    p.add_argument("--registry", default=None, help="the registry.yaml to publish and pin (default: reszoo's)")
    p.add_argument("--mirror", default=None, help="a mirror folder holding weights not in weights/ (default $RESZOO_MIRROR)")
    p.add_argument("--private", action="store_true", help="create new repos private")
    p.add_argument("--no-collections", action="store_true", help="leave the Hub collections as they are")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("verify", help="re-hash cached and mirrored weights against the registry pins")
    p.add_argument("names", nargs="*")
    p.add_argument("--mirror", default=None)
    p.set_defaults(func=cmd_verify)

    for name, extra in extra_commands().items():
        if name == command:
            importlib.import_module(extra.module).add_parser(sub)
        else:
            sub.add_parser(name, help=extra.help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    from .errors import ReszooError

    try:  # the domains are discovered here: a broken install is one line too
        parser = build_parser(command)
    except ReszooError as err:
        print(f"reszoo: error: {err}", file=sys.stderr)
        return 1
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ReszooError, ValueError, FileNotFoundError, IsADirectoryError, PermissionError) as err:
        print(f"reszoo: error: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `reszoo list | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("reszoo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
