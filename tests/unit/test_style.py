"""The rules are snakefmt-clean (the formatter Snakemake recommends; settings in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_rules_and_snakefile_are_snakefmt_clean():
    exe = shutil.which("snakefmt") or str(Path(sys.executable).parent / "snakefmt")
    proc = subprocess.run([exe, "--check", "--diff", "rules", "Snakefile"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, f"run `snakefmt rules Snakefile`:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"


def test_common_smk_reads_nothing_defined_in_a_later_rule_file():
    """rules/common.smk is included first: a name it uses must not be one that a rule file defines."""
    import re

    later = set()
    for smk in sorted((REPO / "rules").glob("*.smk")):
        if smk.name != "common.smk":
            later |= set(re.findall(r"^([A-Z_][A-Z0-9_]*)\s*=", smk.read_text(), flags=re.M))
            later |= set(re.findall(r"^def (\w+)\(", smk.read_text(), flags=re.M))
    common = (REPO / "rules/common.smk").read_text()
    used = set(re.findall(r"\b([A-Za-z_]\w*)\b", re.sub(r'""".*?"""|#[^\n]*', "", common, flags=re.S)))
    assert later, "no module-level names found in the rule files"
    assert not used & later, f"rules/common.smk uses names defined later: {sorted(used & later)}"
