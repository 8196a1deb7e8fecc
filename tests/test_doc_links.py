"""The documentation's links hold: every relative link in README.md and docs/*.md reaches a file in the
checkout (not a generated, gitignored one), every `#anchor` a heading of its target (GitHub's rules), every
docs page is in the index (docs/README.md), and the glossary defines each term once. Pure file reads."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
GLOSSARY = DOCS / "glossary.md"


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); text may hold one level of brackets ([`[since, until)`](...))
INLINE_LINK = re.compile(r"\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
HTML_ANCHOR = re.compile(r"<a\s[^>]*\b(?:id|name)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")  # https:, mailto:, protocol-relative


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    out, fence = [], None
    for number, line in enumerate(text.splitlines(), 1):
        if m := FENCE.match(line):
            marker = m.group(1)
            if fence is None:
                fence = marker
            elif marker[0] == fence[0] and len(marker) >= len(fence):
                fence = None
            continue
        if fence is None:
            out.append((number, line))
    return out


def slug(heading: str) -> str:
    """GitHub's anchor for a heading (github-slugger): the rendered text in lower case, every character that
    is not a letter, digit, '_', '-' or space dropped, each space a '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link or image: its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")  # HTML tags, code-span ticks
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor a page has: its headings' slugs (a repeated one gets -1, -2, ...) and <a id=...>."""
    seen: Counter[str] = Counter()
    found = set()
    for _, line in prose_lines(text):
        if m := HEADING.match(line):
            base = slug(m.group(2))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
        found.update(HTML_ANCHOR.findall(line))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link outside code: inline links, images and reference definitions."""
    out = []
    for number, line in prose_lines(text):
        if m := REFERENCE.match(line):
            out.append((number, m.group(1)))
            continue
        out.extend((number, target) for target in INLINE_LINK.findall(CODE_SPAN.sub("", line)))
    return out


def ignored_dirs() -> list[Path]:
    """The folders .gitignore leaves out of the checkout (plain `name/` entries): generated, not in git."""
    lines = (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    return [
        ROOT / e.strip("/")
        for e in (x.strip() for x in lines)
        if e.endswith("/") and not set(e) & set("*?[!")
    ]


def broken_links(page: Path) -> list[str]:
    """What is wrong with the page's relative links: a missing or gitignored file, an anchor with no heading."""
    problems = []
    for number, target in links(page.read_text(encoding="utf-8")):
        if not target or EXTERNAL.match(target):
            continue
        path, _, anchor = target.partition("#")
        path = unquote(path)
        file = page if not path else (ROOT / path.lstrip("/") if path.startswith("/") else page.parent / path)
        file = file.resolve()
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not file.exists():
            problems.append(f"{where}: no such file")
        elif any(file.is_relative_to(d) for d in ignored_dirs()):
            problems.append(f"{where}: generated and gitignored, absent from a fresh checkout")
        elif (
            anchor
            and file.suffix == ".md"
            and unquote(anchor) not in anchors(file.read_text(encoding="utf-8"))
        ):
            problems.append(f"{where}: no heading with this anchor in {file.relative_to(ROOT)}")
    return problems


# ------------------------------------------------------------------------------------------------ the checker


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("Dashboard (Streamlit + Plotly)", "dashboard-streamlit--plotly"),
        ("The sandbox (offline APIs, synthetic data)", "the-sandbox-offline-apis-synthetic-data"),
        ("`known_gap`", "known_gap"),
        ("long/short ratio", "longshort-ratio"),
        ("USD-M futures", "usd-m-futures"),
        ("A [linked](x.md) *term*", "a-linked-term"),
    ],
)
def test_slug_follows_githubs_rules(heading: str, anchor: str):
    assert slug(heading) == anchor


def test_the_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path: Path, monkeypatch):
    tmp_path = tmp_path.resolve()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / ".gitignore").write_text("site/\n", encoding="utf-8")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("", encoding="utf-8")
    (tmp_path / "target.md").write_text(
        "# Title\n\n## Twice\n\n## Twice\n\n```\n# not a heading\n```\n", encoding="utf-8"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](target.md#title) [ok](target.md#twice-1) [ok](#here) [web](https://example.com/x#y)\n"
        "# Here\n"
        "[gone](missing.md) [bad anchor](target.md#nope) [fenced](target.md#not-a-heading)\n"
        "`[in code](missing.md)` [generated](site/index.html)\n",
        encoding="utf-8",
    )
    assert broken_links(page) == [
        "page.md:3: missing.md: no such file",
        "page.md:3: target.md#nope: no heading with this anchor in target.md",
        "page.md:3: target.md#not-a-heading: no heading with this anchor in target.md",
        "page.md:4: site/index.html: generated and gitignored, absent from a fresh checkout",
    ]


# ------------------------------------------------------------------------------------------- the documentation


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page: Path):
    assert broken_links(page) == []


def test_every_docs_page_is_in_the_index():
    linked = {
        (INDEX.parent / unquote(target.partition("#")[0])).resolve()
        for _, target in links(INDEX.read_text(encoding="utf-8"))
        if not EXTERNAL.match(target) and target.partition("#")[0]
    }
    missing = [p.name for p in DOCS.glob("*.md") if p != INDEX and p.resolve() not in linked]
    assert missing == [], f"link these pages from docs/README.md: {missing}"


def glossary_terms() -> list[str]:
    """The glossary's defined terms: its level-3 headings."""
    return [
        m.group(2)
        for _, line in prose_lines(GLOSSARY.read_text(encoding="utf-8"))
        if (m := HEADING.match(line)) and m.group(1) == "###"
    ]


def test_glossary_defines_each_term_once():
    terms = glossary_terms()
    assert {"known gap", "pair halt", "revision"} <= set(terms)  # the newcomer's first question
    repeated = [term for term, n in Counter(slug(t) for t in terms).items() if n > 1]
    assert repeated == [], f"terms defined more than once in docs/glossary.md: {repeated}"


def test_glossary_index_lists_every_term():
    text = GLOSSARY.read_text(encoding="utf-8")
    index = text[text.index("\n## Index") : text.index("\n## ", text.index("\n## Index") + 1)]
    listed = {target[1:] for _, target in links(index) if target.startswith("#")}
    unlisted = [term for term in glossary_terms() if slug(term) not in listed]
    assert unlisted == [], f"add these terms to the glossary's Index: {unlisted}"
