"""Code fingerprints of stage modules, derived from their import closure within fmrivid.

Every rule runs one stage function of ``fmrivid.<domain>.stages`` (``workflow_scripts/run_stage.py``), and its
params hold :func:`fingerprint` of that module: the SHA-256 of the source of every fmrivid module the stage module
imports, directly or through other fmrivid modules (imports inside functions included: they may run; a string
literal naming an fmrivid module, as registries name the modules they load, counts as an import), and of the
package data files those modules name (a string literal equal to the name of a file next to the module, e.g.
``"published_cc2017.tsv"``). So editing any code a rule can execute changes its params and Snakemake reruns it and
its dependents; editing a module no stage of a rule imports reruns nothing of it. Nothing is listed by hand.

The closure is found by reading the source (a line scan of its import statements), never by importing it:
planning a DAG must not import torch. Imports of other packages (numpy, torch, diffusers) are not followed: their
versions are in the provenance page and in the pinned environments.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "fmrivid"
PACKAGE_DIR = Path(__file__).resolve().parent


def module_file(name, package_dir=PACKAGE_DIR):
    """The source file of fmrivid module ``name`` (``fmrivid.a.b``), or None when it is not an fmrivid module."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = package_dir.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path, package_dir):
    rel = path.relative_to(package_dir).with_suffix("")
    parts = [PACKAGE, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _parents(name):
    """``fmrivid.a.b`` -> [``fmrivid``, ``fmrivid.a``]: importing a module runs its packages' ``__init__``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*)([\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]*)", re.M)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#]+)", re.M)
_STRING = re.compile(r"[\"']([\w.-]+\.\w+)[\"']")  # file names; also dotted module names (dynamic imports)


@lru_cache(maxsize=None)
def _scan(path, stamp):
    """(imports, string literals naming files) of the source at ``path``: a line scan, no ``ast`` (planning a DAG
    scans the closure of seven stage modules on every Snakemake start). Imports written inside strings are found
    too: the closure can only grow, never miss code that runs."""
    text = Path(path).read_text()
    found = []
    for dots, module, names in _FROM.findall(text):
        names = [n.split(" as ")[0].strip() for n in names.strip("()").replace("\\", " ").split(",")]
        found.append((len(dots), module, tuple(n for n in names if n and n.isidentifier())))
    for names in _IMPORT.findall(text):
        found += [(0, n.split(" as ")[0].strip(), ()) for n in names.split(",") if n.strip()]
    return tuple(found), frozenset(_STRING.findall(text))


def _scanned(path):
    st = Path(path).stat()
    return _scan(str(path), (st.st_mtime_ns, st.st_size))


def imported_modules(path, package_dir=PACKAGE_DIR):
    """fmrivid modules imported anywhere in the file at ``path`` (absolute and relative imports)."""
    path = Path(path)
    is_package = path.name == "__init__.py"
    own = _module_name(path, package_dir) if path.is_relative_to(package_dir) else None
    found = set()
    for level, module, names in _scanned(path)[0]:
        if level:  # relative: from the module's own package
            if own is None:
                continue
            base = own.split(".")
            base = base[: len(base) - level + (1 if is_package else 0)]
            module = ".".join(base + ([module] if module else []))
        found.add(module)
        found.update(f"{module}.{name}" for name in names)  # `from pkg import submodule`
    found.update(s for s in _scanned(path)[1] if s.startswith(PACKAGE + "."))  # importlib.import_module("fmrivid.x")
    names = set()
    for name in found:
        if module_file(name, package_dir):
            names.add(name)
            names.update(p for p in _parents(name) if module_file(p, package_dir))
    return names


def data_files(path):
    """Files next to the module at ``path`` that it names by a string literal (its package data)."""
    path = Path(path)
    named = _scanned(path)[1]
    return sorted(p for p in path.parent.iterdir()
                  if p.name in named and p.is_file() and p.suffix not in (".py", ".pyc"))


def closure(*modules, package_dir=PACKAGE_DIR):
    """Source files (sorted) of ``modules`` and every fmrivid module they import, transitively."""
    todo = []
    for name in modules:
        if module_file(name, package_dir) is None:
            raise ModuleNotFoundError(f"fingerprint: no fmrivid module {name!r} under {package_dir}")
        todo += [name, *(p for p in _parents(name) if module_file(p, package_dir))]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(imported_modules(module_file(name, package_dir), package_dir) - seen)
    files = {module_file(n, package_dir) for n in seen}
    for f in list(files):
        files.update(data_files(f))
    return sorted(files)


def _fingerprint(modules, package_dir):
    h = hashlib.sha256()
    for f in closure(*modules, package_dir=package_dir):
        h.update(str(f.relative_to(package_dir)).encode())
        h.update(b"\0")
        h.update(f.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def fingerprint(*modules, package_dir=PACKAGE_DIR):
    """SHA-256 (16 hex digits) of the import closure of ``modules`` (e.g. ``"fmrivid.decoders.stages"``)."""
    return _fingerprint(tuple(modules), Path(package_dir).resolve())


def closure_report(*modules, package_dir=PACKAGE_DIR):
    """Relative paths of the closure (for ``python -m fmrivid.fingerprint fmrivid.x.stages``)."""
    return [str(f.relative_to(package_dir)) for f in closure(*modules, package_dir=package_dir)]


if __name__ == "__main__":  # python -m fmrivid.fingerprint fmrivid.metrics.stages  -> the files it covers
    import sys

    for mod in sys.argv[1:] or ["fmrivid"]:
        print(f"{mod}: {fingerprint(mod)}")
        for rel in closure_report(mod):
            print(f"  {rel}")
