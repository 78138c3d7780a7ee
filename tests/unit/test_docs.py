"""The documentation says what the code does: README size and contents, the generated config reference, and the
SLURM groups named in the README and in the SLURM profile."""

import re
from pathlib import Path

import fmrivid.config as fc

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
README_MAX_BYTES = 24_576  # the README is a front door, not the manual


def test_config_reference_is_current():
    """config/README.md is generated from the schema: a schema change without regenerating it fails here."""
    current = (REPO / "config" / "README.md").read_text()
    assert current == fc.reference_markdown(), (
        f"config/README.md is stale (the config schema changed): run `{fc.REFERENCE_COMMAND}` "
        "(or python -m fmrivid.config > config/README.md) and commit the result")


def test_readme_links_the_config_reference():
    assert "config/README.md" in README.read_text()


def test_readme_is_a_front_door():
    size = README.stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size:,} bytes, over {README_MAX_BYTES:,}: move detail to the place it documents "
        "(config/README.md, a module docstring, benchmarks/) instead of growing the front door")


def _contents_and_headings(text):
    """The entries of the contents list (the first bullet list of links to #anchors) and the `## ` headings."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # '# comment' lines in code blocks are not headings
    block = re.search(r"^\*\*Contents\*\*.*?\n((?:\s*[-*] \[.*\]\(#.*\)\n)+)", text, flags=re.M | re.S)
    assert block, "README.md needs a contents list: a line **Contents** followed by '- [Title](#anchor)' lines"
    entries = re.findall(r"[-*] \[(.+?)\]\(#(.+?)\)", block.group(1))
    headings = re.findall(r"^## (.+?)\s*$", text, flags=re.M)
    return entries, headings


def _anchor(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_contents_list_matches_its_headings():
    entries, headings = _contents_and_headings(README.read_text())
    assert [title for title, _ in entries] == headings, "the contents list and the ## headings differ"
    assert [anchor for _, anchor in entries] == [_anchor(h) for h in headings], "a contents link has a wrong anchor"
    assert README.read_text().find("**Contents**") < README.read_text().find("\n## "), "contents near the top"


def test_readme_images_exist():
    text = README.read_text()
    sources = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text) + re.findall(r"<img\s[^>]*src=\"([^\"]+)\"", text)
    assert sources, "README.md shows a picture of the report on its first screen"
    for src in sources:
        if not src.startswith(("http://", "https://")):
            path = REPO / src
            assert path.is_file(), f"README.md shows {src}, which does not exist"
            assert path.stat().st_size < 250_000, f"{src} is over 250 KB"


def rule_groups():
    """The `group:` names declared by the rules."""
    groups = set()
    for smk in (REPO / "rules").glob("*.smk"):
        groups |= set(re.findall(r"group:\s*\n\s+\"(\w+)\"", smk.read_text()))
    return groups


def _backticked_list(text, start, end):
    """The backticked names of the first bullet of each line between `start` and `end` (two marker strings)."""
    i = text.index(start)
    block = text[i + len(start): text.index(end, i)]
    return set(re.findall(r"^\W*[-*] `(\w+)`", block, flags=re.M))


def test_rule_groups_are_the_documented_groups():
    groups = rule_groups()
    assert len(groups) >= 5, groups  # the regex still finds the rules' groups
    readme = _backticked_list(README.read_text(), "<!-- groups -->", "<!-- /groups -->")
    profile = _backticked_list((REPO / "config/profiles/slurm/config.yaml").read_text(),
                               "# Groups (", "# (end of groups)")
    assert readme == groups, (
        f"README.md's group list (between <!-- groups --> markers) says {sorted(readme)}; the rules declare "
        f"{sorted(groups)}")
    assert profile == groups, (
        f"config/profiles/slurm/config.yaml's group list says {sorted(profile)}; the rules declare {sorted(groups)}")
