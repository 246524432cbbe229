"""Every relative link in the repository's Markdown points at a file the repository holds.

README.md, config/README.md, benchmarks/README.md and docs/*.md: a relative link (inline,
image or reference-style) must name an existing path that git does not ignore (a file in an
ignored folder exists only on the machine that made it), and an anchor (`#...`) must match a
heading of the target Markdown file (GitHub's slugs). External links (a scheme such as
http:, mailto:) are not fetched. Links inside fenced code blocks and code spans are not links.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

DOCS = [
    REPO / "README.md",
    REPO / "config" / "README.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the target may be in <...>.
INLINE = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+[\"'][^)]*[\"'])?\s*\)"
)
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HTML = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def _prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, with code spans blanked if asked."""
    lines, fenced = [], None
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if match:
            if fenced is None:
                fenced = match.group(1)
            elif match.group(1) == fenced:
                fenced = None
            continue
        if fenced is None:
            if blank_code:
                line = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
            lines.append((number, line))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file."""
    found = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        for pattern in (INLINE, REFERENCE, HTML):
            for match in pattern.finditer(line):
                found.append((number, match.group(1).strip("<>")))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links -> their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = re.sub(r"(?<!\w)_+|_+(?!\w)", "", text)  # emphasis underscores, not snake_case
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file (duplicates get -1, -2, ...)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8"), blank_code=False):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def _git_ignored(root: Path, paths: list[Path]) -> set[Path]:
    """Those of `paths` that git ignores (empty outside a git checkout)."""
    if not paths or not (root / ".git").exists():
        return set()
    result = subprocess.run(
        ["git", "check-ignore", "--stdin", "-z"],
        input="\0".join(str(p.relative_to(root)) for p in paths),
        capture_output=True,
        text=True,
        cwd=root,
    )
    return {root / name for name in result.stdout.split("\0") if name}


def dead_links(doc: Path, root: Path = REPO) -> list[str]:
    """Messages for the dead relative links of one Markdown file in the repository `root`."""
    problems, targets = [], []
    for number, target in links(doc):
        if SCHEME.match(target) or target.startswith("//"):
            continue
        path_part, _, anchor = target.partition("#")
        path_part = path_part.split("?")[0]
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        where = f"{doc.relative_to(root)}:{number}: {target}"
        if root not in (resolved, *resolved.parents):
            problems.append(f"{where} points outside the repository")
        elif not resolved.exists():
            problems.append(f"{where} does not exist")
        else:
            targets.append((where, resolved))
            if anchor and resolved.suffix == ".md" and anchor.lower() not in anchors(resolved):
                problems.append(f"{where}: no heading with the anchor #{anchor}")
    ignored = _git_ignored(root, [resolved for _, resolved in targets])
    problems += [f"{where} is ignored by git" for where, p in targets if p in ignored]
    return problems


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_no_dead_relative_links(doc):
    assert doc.exists(), doc
    assert dead_links(doc) == []


def test_checker_finds_dead_links(tmp_path):
    """The checker itself, on a scratch repository: a missing file, a missing anchor, an
    image, a reference-style link and a git-ignored folder are reported; the rest is not."""
    root = tmp_path.resolve()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / ".gitignore").write_text("/results/\n")
    (root / "results").mkdir()
    (root / "README.md").write_text("# Top\n")
    (root / "docs").mkdir()
    doc = root / "docs" / "probe.md"
    doc.write_text(
        "# A heading, with `code` and punctuation!\n\n## Twice\n\n## Twice\n\n"
        "[ok](#a-heading-with-code-and-punctuation) [ok](#twice-1) [ok](../README.md#top)\n"
        "[ok](https://example.org/missing) `[not a link](missing.md)`\n"
        "```\n[not a link](missing.md)\n```\n"
        "[dead](missing.md) [dead](#nowhere) ![dead](img/missing.png)\n"
        "[ignored](../results/) [outside](../../elsewhere.md)\n[ref]: ../nowhere.txt\n",
        encoding="utf-8",
    )
    problems = dead_links(doc, root)
    text = "\n".join(problems)
    assert "missing.md does not exist" in text
    assert "#nowhere" in text
    assert "img/missing.png does not exist" in text
    assert "../results/ is ignored by git" in text
    assert "../../elsewhere.md points outside the repository" in text
    assert "../nowhere.txt does not exist" in text
    assert len(problems) == 6, text
