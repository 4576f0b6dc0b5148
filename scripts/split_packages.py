#!/usr/bin/env python3
"""Split the flat ``sandbox`` package into domain packages (issue 20), reproducibly.

Run once, from the repository root of a clean checkout::

    python scripts/split_packages.py            # move, rewrite, then ruff (imports, format)
    python scripts/split_packages.py --dry-run  # only check and say what it would do

What it does, in order:

1. **Checks, before touching anything**: the tree is clean, every module of ``MODULES``
   exists, none of the new packages exists yet, every top-level module of ``sandbox/`` is
   either mapped or kept (``KEPT``), every sub-directory is known, and each hand-made
   rewrite (``SPECIAL``) still finds its text.  Any failure stops the script with the list
   of what is wrong: a module added on main since must be given a place in ``MODULES``.
2. ``git mv`` of every module (and of ``sandbox/migrations`` and ``sandbox/templates``),
   and a docstring-only ``__init__.py`` per new package (no re-exports).
3. Every tracked text file is rewritten, in one pass per file: dotted names
   (``sandbox.jobs`` → ``sandbox.jobs.submit``, in imports, ``monkeypatch`` targets,
   ``python -m``, docs), paths (``sandbox/jobs.py``, also as ``../sandbox/jobs.py`` in links,
   and ``"sandbox" / "jobs.py"`` in tests), and ``from sandbox import jobs`` →
   ``from sandbox.jobs import submit as jobs``.  Then ``SPECIAL``.
4. ruff sorts the imports and formats the Python files it changed (when ruff is found).
5. It looks for any old name or path left and fails if one is.

Translations need no rewrite beyond this: ``i18n.check`` finds messages by walking the
source tree, and the ``.po`` files name source files only in comments (rewritten in 3).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: Old module → new module.  Every top-level module of ``sandbox`` is here or in KEPT.
MODULES: dict[str, str] = {
    # config: where settings and the data directory come from (imports nothing of ours)
    "sandbox.settings": "sandbox.config.settings",
    "sandbox.datadir": "sandbox.config.datadir",
    # store: the database, its migrations and tables (imports no domain)
    "sandbox.database": "sandbox.store.database",
    "sandbox.models": "sandbox.store.models",
    "sandbox.nodes.models": "sandbox.store.node_models",
    # isolation: the job sandbox (imports nothing of jobs)
    "sandbox.isolation": "sandbox.isolation.pool",
    "sandbox.bwrap": "sandbox.isolation.bwrap",
    "sandbox.seccomp": "sandbox.isolation.seccomp",
    "sandbox.child": "sandbox.isolation.child",
    # ingest: parsing and checking an upload in memory (imports nothing of ours)
    "sandbox.ingest": "sandbox.ingest.parse",
    "sandbox.ingest_schema": "sandbox.ingest.schema",
    "sandbox.ingest_text": "sandbox.ingest.text",
    "sandbox.ingest_values": "sandbox.ingest.values",
    "sandbox.ingest_suggest": "sandbox.ingest.suggest",
    # runtime: what every request and job is handed
    "sandbox.core": "sandbox.runtime.veil",
    "sandbox.keyserver": "sandbox.runtime.keyserver",
    # data: datasets and their encrypted storage, catalogue, classification
    "sandbox.datasets": "sandbox.data.datasets",
    "sandbox.objects": "sandbox.data.objects",
    "sandbox.cell_secrets": "sandbox.data.cell_secrets",
    "sandbox.catalog": "sandbox.data.catalog",
    "sandbox.classification": "sandbox.data.classification",
    "sandbox.important_data": "sandbox.data.important_data",
    # accounts: principals, their tokens and keys
    "sandbox.tenants": "sandbox.accounts.tenants",
    "sandbox.tokens": "sandbox.accounts.tokens",
    "sandbox.key_rotation": "sandbox.accounts.key_rotation",
    # jobs: from submission to outcome
    "sandbox.jobs": "sandbox.jobs.submit",
    "sandbox.job_kinds": "sandbox.jobs.kinds",
    "sandbox.job_queue": "sandbox.jobs.queue",
    "sandbox.job_progress": "sandbox.jobs.progress",
    "sandbox.runner": "sandbox.jobs.runner",
    "sandbox.code_runs": "sandbox.jobs.code_runs",
    "sandbox.reviewed_code": "sandbox.jobs.reviewed_code",
    "sandbox.outcomes": "sandbox.jobs.outcomes",
    "sandbox.held_outputs": "sandbox.jobs.held_outputs",
    "sandbox.artifacts": "sandbox.jobs.artifacts",
    "sandbox.refunds": "sandbox.jobs.refunds",
    "sandbox.leases": "sandbox.jobs.leases",
    "sandbox.workers": "sandbox.jobs.workers",
    "sandbox.suspension": "sandbox.jobs.suspension",
    # grants: an enterprise's consent
    "sandbox.consent": "sandbox.grants.consent",
    # oversight: what operators and security officers read
    "sandbox.oversight": "sandbox.oversight.audit_log",
    "sandbox.attention": "sandbox.oversight.attention",
    "sandbox.keyaudit": "sandbox.oversight.keyaudit",
    "sandbox.keyaudit_reasons": "sandbox.oversight.keyaudit_reasons",
    "sandbox.receipts": "sandbox.oversight.receipts",
    "sandbox.receipt_format": "sandbox.oversight.receipt_format",
    # nodes: the node protocol's document is the API's
    "sandbox.nodes.openapi": "sandbox.api.nodes_openapi",
    # demo
    "sandbox.demo": "sandbox.demo.walkthrough",
    "sandbox.demo_data": "sandbox.demo.data",
    "sandbox.demo_keep": "sandbox.demo.keep",
    "sandbox.demo_oversight": "sandbox.demo.oversight",
}

#: Top-level modules that stay where they are.
KEPT = {
    "sandbox.client",  # the Python client: what users import, on its own (imports nothing)
    "sandbox.service",  # starting and stopping the whole service: above every domain
}

#: Directories moved whole (not Python packages).
DIRECTORIES = {
    "sandbox/migrations": "sandbox/store/migrations",
    "sandbox/templates": "sandbox/oversight/templates",
}

#: Sub-directories of sandbox/ that stay (existing sub-packages, static data).
KNOWN_DIRECTORIES = {"api", "cli", "console", "nodes", "migrations", "templates"}

#: Each new package's docstring (its ``__init__.py``: a docstring, nothing else).
PACKAGES = {
    "sandbox.config": "Where Veil's configuration comes from: the one settings object "
    "(``VEIL_*``) and the data directory, private to the user Veil runs as.",
    "sandbox.store": "The database: engine, sessions and migrations (Alembic, "
    "``migrations/``), and the sandbox layer's tables (datasets, versions, jobs, code "
    "requests, nodes).  It imports no domain package.",
    "sandbox.isolation": "Running a job's computation in its own bubblewrap sandbox: the "
    "sandbox's command line, its seccomp filter, the pool of sandboxed processes, and the "
    "child program that runs inside.  It imports nothing of jobs: it runs what it is given.",
    "sandbox.ingest": "Reading an upload in memory: its text encoding, its values converted "
    "and checked against the dataset's declaration, and column-class suggestions.",
    "sandbox.runtime": "What every request and job is handed: the ``Veil`` object "
    "(settings, database, key service, clock, sandboxes), and the key server's wiring.",
    "sandbox.data": "Datasets: declared, uploaded and stored encrypted (the object store, "
    "each dataset's cell-key secret), their catalogue (tiers 0 and 1), their classification "
    "and the catalogue of important data.",
    "sandbox.accounts": "Principals and what they hold: enterprises (with their keys), "
    "providers and officers, their API tokens, and an enterprise's key rotation.",
    "sandbox.jobs": "Jobs from submission to outcome: submit, kinds, the queue and the "
    "workers, running them (and tier 5's reviewed code), their outputs, refunds and "
    "leases, and the suspension of a provider that stops them.",
    "sandbox.grants": "An enterprise's consent: grants to providers, narrowed, extended and "
    "revoked.",
    "sandbox.oversight": "What operators and security officers read: the audit log, what "
    "needs attention, the key server's audit log explained, and usage receipts.",
    "sandbox.demo": "``veil demo``: the main path end to end on an embedded dataset, through "
    "the real API, and ``--keep``.",
}

#: Hand-made rewrites: (file after the move, old text, new text).
SPECIAL: list[tuple[str, str, str]] = [
    (
        "sandbox/oversight/receipt_format.py",
        'jinja2.PackageLoader("sandbox", "templates")',
        'jinja2.PackageLoader("sandbox.oversight", "templates")',
    ),
    ("pyproject.toml", '"templates/*.html"', '"oversight/templates/*.html"'),
    (
        "tests/sandbox/test_isolation.py",
        """        "    'sandbox': sorted(os.listdir(checkout + '/sandbox')),\\n"\n""",
        """        "    'sandbox': sorted(os.listdir(checkout + '/sandbox')),\\n"\n"""
        """        "    'isolation': sorted(os.listdir(checkout + '/sandbox/isolation')),\\n"\n""",
    ),
    (
        "tests/sandbox/test_isolation.py",
        """    assert seen["sandbox"] == ["child.py"]\n""",
        """    assert seen["sandbox"] == ["isolation"]\n"""
        """    assert seen["isolation"] == ["child.py"]\n""",
    ),
]

TEXT_SUFFIXES = {
    ".py", ".md", ".toml", ".cfg", ".ini", ".txt", ".po", ".html", ".mako", ".yml", ".yaml",
    ".json", ".sh", ".js", ".css", "",
}  # fmt: skip


def path_of(module: str) -> str:
    return module.replace(".", "/") + ".py"


def fail(problems: list[str]) -> None:
    print("split_packages: nothing was changed, because:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.exit(1)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def check(allow_dirty: bool) -> None:
    """Everything the split assumes, checked before anything moves."""
    problems = []
    if not allow_dirty and git("status", "--porcelain", "--untracked-files=no").strip():
        problems.append("the working tree has changes: commit or stash them first")
    for old, new in MODULES.items():
        if not (ROOT / path_of(old)).is_file():
            problems.append(f"{path_of(old)} is missing ({old} → {new}): already split?")
        if (ROOT / path_of(new)).exists():
            problems.append(f"{path_of(new)} exists already")
    for package in PACKAGES:
        if (ROOT / package.replace(".", "/") / "__init__.py").exists():
            problems.append(f"package {package} exists already")
    for module in KEPT:
        if not (ROOT / path_of(module)).is_file():
            problems.append(f"{path_of(module)} (kept) is missing")
    for source in DIRECTORIES:
        if not (ROOT / source).is_dir():
            problems.append(f"{source}/ is missing")
    placed = set(MODULES) | KEPT
    for path in sorted((ROOT / "sandbox").glob("*.py")):
        module = f"sandbox.{path.stem}"
        if path.stem != "__init__" and module not in placed:
            problems.append(f"{module} is new: give it a place in MODULES (or KEPT)")
    for path in sorted((ROOT / "sandbox").iterdir()):
        if path.is_dir() and path.name != "__pycache__" and path.name not in KNOWN_DIRECTORIES:
            problems.append(f"sandbox/{path.name}/ is new: add it to KNOWN_DIRECTORIES")
    for target, old, _new in SPECIAL:
        source = _source_of(target)
        text = (ROOT / source).read_text(encoding="utf-8") if (ROOT / source).is_file() else ""
        if old not in text:
            problems.append(f"{source} no longer has the text SPECIAL rewrites: {old.strip()!r}")
    if problems:
        fail(problems)


def _source_of(target: str) -> str:
    """The path a file has before the move (SPECIAL names files after it)."""
    for old, new in MODULES.items():
        if path_of(new) == target:
            return path_of(old)
    return target


# ---------------------------------------------------------------- rewriting text

_NAMES = sorted(MODULES, key=len, reverse=True)
_OLD_PATHS = {path_of(old).removeprefix("sandbox/"): path_of(new) for old, new in MODULES.items()}
_OLD_PATHS |= {
    old.removeprefix("sandbox/"): new for old, new in DIRECTORIES.items()
}  # fmt: skip
_PATH_NAMES = sorted(_OLD_PATHS, key=len, reverse=True)

#: ``sandbox.jobs`` (not ``sandbox.jobsx``, not ``x.sandbox.jobs``).
DOTTED = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, _NAMES)) + r")(?!\w)")
#: ``sandbox/jobs.py``, also after ``./`` or ``../`` (links), not inside another path.
SLASHED = re.compile(
    r"(?:(?<=\./)|(?<![\w./-]))sandbox/(" + "|".join(map(re.escape, _PATH_NAMES)) + r")(?![\w])"
)
#: ``"sandbox" / "jobs.py"`` (pathlib joins in tests).
JOINED = re.compile(
    r"""(["'])sandbox\1 / (["'])("""
    + "|".join(re.escape(p.removesuffix(".py")) for p in _PATH_NAMES if p.count("/") == 0)
    + r""")\.py\2"""
)
#: ``from sandbox import a, b as c`` (also parenthesised over several lines).
FROM_IMPORT = re.compile(
    r"^(?P<indent>[ \t]*)from (?P<package>sandbox(?:\.\w+)*) import "
    r"(?P<names>\([^)]*\)|[^\n#]*?)(?P<comment>[ \t]*#[^\n]*)?$",
    re.M,
)


def _dotted(match: re.Match[str]) -> str:
    return MODULES[match[1]]


def _slashed(match: re.Match[str]) -> str:
    return _OLD_PATHS[match[1]]


def _joined(match: re.Match[str]) -> str:
    quote = match[2]
    parts = path_of(MODULES[f"sandbox.{match[3]}"]).split("/")
    return " / ".join(f"{quote}{part}{quote}" for part in parts)


def _from_import(match: re.Match[str]) -> str:
    package, indent = match["package"], match["indent"]
    comment = match["comment"] or ""
    names = [n.strip() for n in match["names"].strip("()").split(",") if n.strip()]
    if "\n" in match["names"] and "#" in match["names"]:
        raise SystemExit(f"a comment inside `from {package} import (...)`: split it by hand")
    kept, moved = [], []
    for name in names:
        original, _, alias = (part.strip() for part in name.partition(" as "))
        new = MODULES.get(f"{package}.{original}")
        if new is None:
            kept.append(name)
            continue
        parent, _, leaf = new.rpartition(".")
        bound = alias or original
        moved.append(f"from {parent} import {leaf}" + (f" as {bound}" if bound != leaf else ""))
    if not moved:
        return match[0]
    lines = ([f"from {package} import {', '.join(kept)}"] if kept else []) + moved
    return "\n".join(f"{indent}{line}{comment}" for line in lines)


def rewrite(text: str, python: bool) -> str:
    text = DOTTED.sub(_dotted, text)
    text = SLASHED.sub(_slashed, text)
    text = JOINED.sub(_joined, text)
    return FROM_IMPORT.sub(_from_import, text) if python or "from sandbox" in text else text


def text_files() -> list[Path]:
    files = []
    for name in git("ls-files", "-z").split("\0"):
        path = ROOT / name
        if not name or not path.is_file() or path.is_symlink():
            continue
        if path.suffix not in TEXT_SUFFIXES and path.parent.name != "scripts":
            continue
        if name == "scripts/split_packages.py":
            continue  # this script names the old modules on purpose
        files.append(path)
    return files


# ---------------------------------------------------------------- moving


def move() -> None:
    for old, new in MODULES.items():
        (ROOT / path_of(new)).parent.mkdir(parents=True, exist_ok=True)
        git("mv", path_of(old), path_of(new))
    for source, destination in DIRECTORIES.items():
        (ROOT / destination).parent.mkdir(parents=True, exist_ok=True)
        git("mv", source, destination)
    for package, doc in PACKAGES.items():
        init = ROOT / package.replace(".", "/") / "__init__.py"
        init.write_text(f'"""{_wrap(doc)}"""\n', encoding="utf-8")
        git("add", str(init.relative_to(ROOT)))


def _wrap(doc: str, width: int = 92) -> str:
    lines, line = [], ""
    for word in doc.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return "\n".join([*lines, line])


def rewrite_all() -> list[Path]:
    changed = []
    for path in text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        new = rewrite(text, python=path.suffix == ".py")
        relative = str(path.relative_to(ROOT))
        for target, old, replacement in SPECIAL:
            if target == relative:
                new = new.replace(old, replacement)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def long_lines(changed: list[Path], limit: int = 100) -> list[str]:
    """Lines the longer names pushed past the limit: ruff wraps code, not prose or comments."""
    found, new = [], (*MODULES.values(), *map(path_of, MODULES.values()))
    for path in changed:
        if path.suffix != ".py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if len(line) > limit and any(name in line for name in new):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    return found


def tidy(changed: list[Path]) -> None:
    """ruff: imports sorted again (their module names changed), lines formatted."""
    ruff = ROOT / ".venv" / "bin" / "ruff"
    command = str(ruff) if ruff.exists() else shutil.which("ruff")
    files = [str(p.relative_to(ROOT)) for p in changed if p.suffix == ".py"]
    files += [
        str(p.relative_to(ROOT))
        for p in (ROOT / "sandbox").rglob("__init__.py")
        if str(p.relative_to(ROOT)) not in files
    ]
    if command is None:
        print("ruff not found: run `ruff check --select I --fix . && ruff format .` yourself")
        return
    subprocess.run([command, "check", "--select", "I", "--fix", "-q", *files], cwd=ROOT)
    subprocess.run([command, "format", "-q", *files], cwd=ROOT, check=True)


def leftovers() -> list[str]:
    """Old names or paths still somewhere (after the rewrite there should be none)."""
    found = []
    for path in text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in DOTTED.finditer(text):
            if match[1] not in PACKAGES:  # a new package may have an old module's name
                found.append(f"{path.relative_to(ROOT)}: {match[0]}")
        for pattern in (SLASHED, JOINED):
            for match in pattern.finditer(text):
                found.append(f"{path.relative_to(ROOT)}: {match[0]}")
        for match in FROM_IMPORT.finditer(text):
            if _from_import(match) != match[0]:
                found.append(f"{path.relative_to(ROOT)}: {match[0].strip()}")
    return found


def _would_change(path: Path) -> bool:
    text = path.read_text(encoding="utf-8", errors="replace")
    return rewrite(text, python=path.suffix == ".py") != text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="check, say what would change")
    parser.add_argument("--allow-dirty", action="store_true", help="skip the clean-tree check")
    args = parser.parse_args()
    check(args.allow_dirty)
    if args.dry_run:
        would = [p for p in text_files() if _would_change(p)]
        print(f"{len(MODULES)} modules to move, {len(PACKAGES)} packages to create, "
              f"{len(would)} files to rewrite")  # fmt: skip
        for old, new in MODULES.items():
            print(f"  {old:28} → {new}")
        return
    move()
    changed = rewrite_all()
    long = long_lines(changed)
    tidy(changed)
    left = leftovers()
    print(f"moved {len(MODULES)} modules and {len(DIRECTORIES)} directories, created "
          f"{len(PACKAGES)} packages, rewrote {len(changed)} files")  # fmt: skip
    if long:
        print("lines longer than 100 after the rename (rewrap the prose, check ruff's wrap):")
        for line in long:
            print(f"  {line}")
    if left:
        print("old names or paths are left (fix them by hand):", file=sys.stderr)
        for line in left:
            print(f"  {line}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
