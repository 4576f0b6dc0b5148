"""The Chinese documentation: every page exists, reads in Chinese, links its English
original (which links back), and every relative link in it leads somewhere real."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Chinese page → its English original.
ORIGINALS = {
    "README.zh-CN.md": "README.md",
    "docs/zh-CN/quick-start.md": "README.md",
    "docs/zh-CN/datasets.md": "docs/datasets.md",
    "docs/zh-CN/private-queries.md": "docs/private-queries.md",
    "docs/zh-CN/sql.md": "docs/sql.md",
    "docs/zh-CN/oversight.md": "docs/oversight.md",
    "docs/zh-CN/console.md": "docs/console.md",
    "docs/zh-CN/programme.md": "docs/programme.md",
    "docs/zh-CN/verdicts.md": "docs/verdicts.md",
    "docs/zh-CN/commitments.md": "docs/commitments.md",
}
PAGES = sorted(ORIGINALS)

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!!)\[([^\]\n]*)\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
LATIN = re.compile(r"[A-Za-z]")


def prose(text: str) -> str:
    """The text a reader reads: code blocks, inline code and link targets left out."""
    text = INLINE_CODE.sub("", FENCE.sub("", text))
    return LINK.sub(lambda m: m.group(1), text)


def links(text: str) -> list[str]:
    """Every link target outside code."""
    return [m.group(2) for m in LINK.finditer(INLINE_CODE.sub("", FENCE.sub("", text)))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens
    (letters of any script, CJK included, are kept)."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8")))}


def read(page: str) -> str:
    return (REPO / page).read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES)
def test_the_page_exists_and_reads_mostly_in_chinese(page: str) -> None:
    text = prose(read(page))
    cjk, latin = len(CJK.findall(text)), len(LATIN.findall(text))
    # A Chinese character carries about a word; product names and terms stay in Latin.
    assert cjk > 300, f"{page}: only {cjk} Chinese characters"
    assert cjk / (cjk + latin) > 0.6, f"{page}: {cjk} Chinese characters, {latin} Latin letters"


def test_an_english_page_would_not_pass_as_chinese() -> None:
    text = prose((REPO / "docs/oversight.md").read_text(encoding="utf-8").split("\n", 2)[2])
    assert len(CJK.findall(text)) < 0.05 * len(LATIN.findall(text))


@pytest.mark.parametrize("page", PAGES)
def test_the_first_line_links_the_english_original(page: str) -> None:
    first = read(page).lstrip().splitlines()[0]
    targets = [(REPO / page).parent / t for t in links(first)]
    assert first.startswith("English:"), f"{page} starts with {first!r}"
    assert (REPO / ORIGINALS[page]).resolve() in [t.resolve() for t in targets]


@pytest.mark.parametrize("page", sorted(p for p in PAGES if p.startswith("docs/")))
def test_the_english_original_links_its_chinese_version(page: str) -> None:
    original = ORIGINALS[page]
    if original == "README.md":
        return  # the README links README.zh-CN.md, which links every Chinese page
    first = read(original).lstrip().splitlines()[0]
    targets = [((REPO / original).parent / t).resolve() for t in links(first)]
    assert first.startswith("中文版"), f"{original} starts with {first!r}"
    assert (REPO / page).resolve() in targets


def test_the_readme_links_its_chinese_version_and_that_every_chinese_page() -> None:
    assert "README.zh-CN.md" in links(read("README.md"))
    linked = {((REPO / t).resolve()) for t in links(read("README.zh-CN.md"))}
    missing = [p for p in PAGES if p.startswith("docs/") and (REPO / p).resolve() not in linked]
    assert not missing, f"README.zh-CN.md does not link {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page: str) -> None:
    here = REPO / page
    broken = []
    for target in links(read(page)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (here.parent / path).resolve() if path else here
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page}: " + "; ".join(broken)


def test_the_anchor_of_a_chinese_heading_keeps_its_characters() -> None:
    assert slug("失败作业的预算何时退还") == "失败作业的预算何时退还"
    assert slug("Tier 3: private `queries`") == "tier-3-private-queries"


WALKTHROUGH = re.compile(r"^```sh[ \t]+readme-walkthrough[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def walkthrough_commands(page: str) -> list[str]:
    """The commands of a page's ``readme-walkthrough`` blocks, comments left out (they are
    what is translated)."""
    script = "\n".join(WALKTHROUGH.findall(read(page)))
    lines = (re.sub(r"(^|\s+)#\s.*$", "", line).rstrip() for line in script.splitlines())
    return [line for line in lines if line]


@pytest.mark.parametrize("page", ["README.zh-CN.md", "docs/zh-CN/quick-start.md"])
def test_the_chinese_walkthrough_runs_the_english_commands(page: str) -> None:
    english = walkthrough_commands("README.md")
    if not english:
        pytest.skip("README.md has no readme-walkthrough blocks yet (wip/newcomer adds them)")
    assert walkthrough_commands(page) == english, (
        f"{page}: the commands of its readme-walkthrough blocks differ from README.md's, "
        "which tests/sandbox/test_readme_walkthrough.py runs; copy them, translate comments only"
    )
