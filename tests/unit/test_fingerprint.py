"""fmrivid.fingerprint: the closure follows every way fmrivid code reaches other fmrivid code."""

from fmrivid.fingerprint import closure, fingerprint


def _pkg(tmp_path, files):
    root = tmp_path / "fmrivid"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_closure_follows_lazy_relative_dynamic_imports_and_data_files(tmp_path):
    root = _pkg(tmp_path, {
        "__init__.py": "",
        "a/__init__.py": "",
        "a/stages.py": "import numpy\nfrom fmrivid.b import helper\n\ndef f():\n    from . import lazy\n",
        "a/lazy.py": "from fmrivid.c import (\n    x,\n    y as z,\n)\n",
        "a/unused.py": "",
        "b/__init__.py": "",
        "b/helper.py": "import importlib\nM = importlib.import_module('fmrivid.d')\nDATA = 'table.tsv'\n",
        "b/table.tsv": "x\n",
        "c.py": "",
        "d/__init__.py": "",
    })
    rel = {str(p.relative_to(root)) for p in closure("fmrivid.a.stages", package_dir=root)}
    assert rel == {"__init__.py", "a/__init__.py", "a/stages.py", "a/lazy.py", "b/__init__.py", "b/helper.py",
                   "b/table.tsv", "c.py", "d/__init__.py"}


def test_fingerprint_changes_with_any_file_of_the_closure_only(tmp_path):
    root = _pkg(tmp_path, {"__init__.py": "", "s.py": "from fmrivid import t\n", "t.py": "X = 1\n", "u.py": ""})
    before = fingerprint("fmrivid.s", package_dir=root)
    (root / "u.py").write_text("Y = 2\n")  # outside the closure
    assert fingerprint("fmrivid.s", package_dir=root) == before
    (root / "t.py").write_text("X = 1  # a comment is code too\n")
    assert fingerprint("fmrivid.s", package_dir=root) != before


def test_every_stage_module_closure_holds_what_its_registry_loads():
    rel = {str(p).split("fmrivid/", 1)[1] for p in closure("fmrivid.decoders.stages")}
    assert {"decoders/semantic.py", "decoders/structure.py", "decoders/registry.py", "runner.py"} - rel == {"runner.py"}
