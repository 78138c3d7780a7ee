"""The conda envs in envs/ are pinned exactly, agree with requirements.lock and pyproject.toml, are complete
(every dependency of every entry is pinned too), every rule names one, and the workflow scripts import the
fmrivid of their own checkout (so they work inside a conda env where fmrivid is not installed)."""

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
ENVS = sorted((REPO / "envs").glob("*.yaml"))
EXACT_CONDA = re.compile(r"^([A-Za-z0-9_.\-]+)==(\d+(?:\.\d+)+)$")


def lock_pins():
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[canonicalize_name(req.name)] = spec.version
    return pins


def pyproject_pins():
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = data["project"]["dependencies"] + sum(data["project"]["optional-dependencies"].values(), [])
    return {canonicalize_name(Requirement(d).name): next(iter(Requirement(d).specifier)).version for d in deps}


def read_env(path):
    env = yaml.safe_load(path.read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert len(pips) == 1, f"{path.name}: expected one pip section"
    return env, conda, [Requirement(p) for p in pips[0]]


def closure(names):
    """Every distribution the given ones need in this environment (markers evaluated, extras followed)."""
    seen, todo = set(), [(canonicalize_name(n), frozenset()) for n in names]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for r in metadata.distribution(name).requires or []:
            req = Requirement(r)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in (extras or {""})):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    return {n for n, _ in seen}


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_is_pinned_and_agrees_with_the_lock(path):
    env, conda, pip = read_env(path)
    assert env["channels"] == ["conda-forge", "nodefaults"], path.name
    assert env["name"] == f"fmrivid-{path.stem}"
    for dep in conda:
        assert EXACT_CONDA.match(dep), f"{path.name}: conda entry {dep!r} is not pinned exactly (name==x.y.z)"
    conda_pins = dict(d.split("==") for d in conda)
    assert conda_pins["python"] == ".".join(map(str, sys.version_info[:3])), "python differs from the venv's"
    for name, version in conda_pins.items():
        if name != "python":
            assert metadata.version(name) == version, f"{path.name}: {name}=={version} differs from the venv's"
    lock, project = lock_pins(), pyproject_pins()
    names = [canonicalize_name(r.name) for r in pip]
    assert len(names) == len(set(names)), f"{path.name}: duplicate pip entries"
    for req in pip:
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{path.name}: {req} is not pinned with =="
        name, version = canonicalize_name(req.name), specs[0].version
        assert lock.get(name) == version, f"{path.name}: {req} but requirements.lock has {lock.get(name)}"
        if name in project:
            assert project[name] == version, f"{path.name}: {req} but pyproject.toml pins {project[name]}"


@pytest.mark.parametrize("path", ENVS, ids=lambda p: p.name)
def test_env_pins_every_dependency_of_its_entries(path):
    """pip must not pick versions on its own: the dependencies of every entry are pinned too."""
    _, conda, pip = read_env(path)
    listed = {canonicalize_name(r.name) for r in pip} | {canonicalize_name(d.split("==")[0]) for d in conda}
    needed = closure(r.name for r in pip if r.marker is None or r.marker.evaluate())
    missing = sorted(needed - listed)
    assert not missing, f"{path.name}: unpinned dependencies: " + ", ".join(
        f"{n}=={metadata.version(n)}" for n in missing)


def test_platform_specific_entries_carry_markers():
    """CUDA wheels exist on Linux only: entries that torch pulls in on Linux keep that marker."""
    for path in ENVS:
        for req in read_env(path)[2]:
            name = canonicalize_name(req.name)
            if name.startswith(("nvidia-", "cuda-")) or name == "triton":
                assert req.marker is not None and "Linux" in str(req.marker), f"{path.name}: {req}"


def test_every_rule_names_an_existing_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        for block in re.split(r"\n(?=\s*rule \w+:)", text):
            m = re.match(r"\s*rule (\w+):", block)
            if not m:
                continue
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            assert env, f"{smk.name}: rule {m.group(1)} has no conda: env"
            assert (smk.parent / env.group(1)).resolve().parent == REPO / "envs", (m.group(1), env.group(1))
            assert (smk.parent / env.group(1)).exists(), (m.group(1), env.group(1))


def test_workflow_scripts_import_the_fmrivid_next_to_them(tmp_path):
    """Inside a conda env fmrivid is not installed: each script must find the package of its own checkout.

    A copy of the repository is made; a script run from it (with a stand-in `snakemake` object whose
    scriptdir is the copy's) must import fmrivid from the copy, not from the installed package.
    """
    import shutil

    copy = tmp_path / "repo"
    shutil.copytree(REPO / "fmrivid", copy / "fmrivid", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "workflow_scripts", copy / "workflow_scripts")
    (copy / "fmrivid" / "__init__.py").write_text(
        (copy / "fmrivid" / "__init__.py").read_text() + "\nCHECKOUT_MARKER = 'copy'\n")
    scripts = sorted((copy / "workflow_scripts").glob("*.py"))
    assert scripts
    for script in scripts:
        head = script.read_text().split("from fmrivid")[0].split("import fmrivid")[0]
        assert "sys.path.insert(0, str(Path(snakemake.scriptdir).parent))" in head, (
            f"{script.name}: put the checkout on sys.path before importing fmrivid")
    # Run the script for real (as rule splits), from an unrelated working directory, as Snakemake would.
    table = tmp_path / "clips.tsv"
    table.write_text("clip_id\tfile\tcaption\tsplit\na\ta.mp4\ta red circle\ttrain\nb\tb.mp4\ta cat\ttest\n")
    out = tmp_path / "splits.tsv"
    probe = (
        "import runpy, types\nfrom snakemake.iocontainers import Namedlist\n"
        f"smk = types.SimpleNamespace(scriptdir={str(copy / 'workflow_scripts')!r}, threads=1, rule='splits',\n"
        f"    input=Namedlist(fromdict={{'table_path': {str(table)!r}}}), output=Namedlist([{str(out)!r}]),\n"
        "    params=Namedlist(fromdict={'stage': {'module': 'fmrivid.preprocess.stages', 'code': '-'}}),\n"
        f"    wildcards=Namedlist(), log=[{str(tmp_path / 'splits.log')!r}])\n"
        f"runpy.run_path({str(copy / 'workflow_scripts' / 'run_stage.py')!r}, init_globals={{'snakemake': smk}})\n"
        "import fmrivid\nprint(fmrivid.__file__, getattr(fmrivid, 'CHECKOUT_MARKER', None))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(copy / "fmrivid" / "__init__.py"), "copy"], proc.stdout
    assert out.read_text().splitlines()[0].split("\t")[:2] == ["clip_id", "split"]


def _imports(path, top_level_only=False):
    """Modules imported by a Python file (absolute names; relative imports resolved inside fmrivid)."""
    import ast

    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = path.relative_to(REPO).with_suffix("").parts[:-node.level]
                mod = ".".join(base + ((node.module,) if node.module else ()))
            else:
                mod = node.module
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    return out


def _fmrivid_file(module):
    p = REPO.joinpath(*module.split("."))
    return p.with_suffix(".py") if p.with_suffix(".py").exists() else (p / "__init__.py" if p.is_dir() else None)


def _third_party_imports(files):
    """Top-level third-party modules imported by `files` and the fmrivid modules they import (transitively)."""
    seen, todo, found = set(), list(files), set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        for mod in _imports(f):
            top = mod.split(".")[0]
            if top == "fmrivid":
                if (ff := _fmrivid_file(mod)) is not None:
                    todo.append(ff)
            elif top not in sys.stdlib_module_names and top != "snakemake":
                found.add(top)
    return found


def test_each_rule_env_has_what_its_modules_import():
    """A rule's env holds every third-party package imported by the code it can run: the import closure of its
    stage module within fmrivid (fmrivid.fingerprint.closure, the same files its code fingerprint covers)."""
    from fmrivid.fingerprint import closure

    dists = metadata.packages_distributions()
    problems = []
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            m = re.match(r"\s*rule (\w+):", block)
            env = re.search(r"conda:\s*\n\s*\"([^\"]+)\"", block)
            domain = re.search(r"stage=stage\(\"(\w+)\"\)", block)
            if not m or not env or not domain:
                continue
            files = [f for f in closure(f"fmrivid.{domain.group(1)}.stages", "fmrivid.runner") if f.suffix == ".py"]
            needed = _third_party_imports(files)
            _, conda, pip = read_env(smk.parent / env.group(1))
            have = {canonicalize_name(r.name) for r in pip}
            for top in sorted(needed):
                provided = {canonicalize_name(d) for d in dists.get(top, [])}
                if provided and not provided & have:
                    problems.append(f"{smk.name}: rule {m.group(1)} imports {top} ({', '.join(sorted(provided))}) "
                                    f"missing from {env.group(1)}")
    assert not problems, "\n".join(problems)
