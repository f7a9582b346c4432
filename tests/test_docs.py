"""The documentation holds together: README.md and docs/*.md link only to files and headings that exist,
the README stays short, params.yaml's comments stay one line per key, and every README section or docs/
file the code cites exists (docs/REFERENCE.md excepted: it lives outside the repository)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), ROOT / "benchmarks" / "RESULTS.md"])
README_MAX_LINES = 150

#: Cited by the code but kept outside the repository (../shared/docs/REFERENCE.md): never copied into git.
EXTERNAL = {"docs/REFERENCE.md", "REFERENCE.md"}

#: What the code means by "the README's ..." / "README, ...": a phrase of the citation -> where it now is.
#: Every citation must contain one of these phrases, its target must exist, and README.md must link to it.
README_CITATIONS = {
    "params table": "docs/configuration.md",
    "task table": "docs/pipeline.md#tasks-corrupttasks-and-models-train",
    "corruption table": "docs/pipeline.md#the-corruption-table",
    "vessel-aware training": "docs/pipeline.md#vessel-aware-training",
    "colour augmentation": "docs/pipeline.md#colour-augmentation",
    "label, authors, year, title": "docs/pipeline.md#the-papers",
    "performance": "docs/performance.md",
    "picture": "docs/report.png",
}

CODE_FILES = sorted(
    [*(ROOT / "src").rglob("*.py"), *(ROOT / "stages").glob("*.py"), *(ROOT / "tools").glob("*.py"),
     ROOT / "dvc.yaml", ROOT / "Makefile", ROOT / "params.yaml"]
)


def _without_code(text: str, spans: bool = True) -> str:
    """Markdown text with fenced code blocks (and inline code spans) blanked out, lines kept."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
            continue
        out.append("" if fenced else re.sub(r"`[^`]*`", "", line) if spans else line)
    return "\n".join(out)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # links: their text
    text = unicodedata.normalize("NFC", text).lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _without_code(path.read_text(encoding="utf-8"), spans=False).splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def links(path: Path) -> list[tuple[int, str]]:
    found = []
    for no, line in enumerate(_without_code(path.read_text(encoding="utf-8")).splitlines(), 1):
        for m in re.finditer(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", line):
            found.append((no, m.group(1)))
    return found


def resolve(base: Path, target: str) -> tuple[Path, str]:
    file, _, anchor = target.partition("#")
    return ((base.parent / file).resolve() if file else base), anchor


def _check_target(base: Path, target: str) -> str | None:
    """Why ``target`` (a relative link from ``base``) does not resolve, or None."""
    path, anchor = resolve(base, target)
    if not path.exists():
        return f"{target}: no file {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"{target}: no heading with anchor #{anchor} in {path.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    bad = []
    for no, target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        why = _check_target(doc, target)
        if why:
            bad.append(f"{doc.relative_to(ROOT)}:{no}: {why}")
    assert not bad, "\n".join(bad)


def test_slugs_follow_github() -> None:
    assert slug("Sources (`download.sources`)") == "sources-downloadsources"
    assert slug("Tasks (`corrupt.tasks`) and models (`train`)") == "tasks-corrupttasks-and-models-train"
    assert slug("Across CPUs (README at 5ebb6da, 2026-12-02)") == "across-cpus-readme-at-5ebb6da-2026-12-02"


def test_readme_is_short() -> None:
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; keep it at most {README_MAX_LINES} (details go to docs/)"


def test_docs_have_no_orphans() -> None:
    """Every page of docs/ is linked from README.md."""
    linked = {resolve(ROOT / "README.md", t)[0] for _, t in links(ROOT / "README.md")}
    orphans = [p.name for p in (ROOT / "docs").glob("*.md") if p.resolve() not in linked]
    assert not orphans, f"docs/ pages not linked from README.md: {orphans}"


def test_params_comments_one_line_per_key() -> None:
    """No two full-line comments in a row (so at most one comment line before any key), and no
    measurements in comments (they go to benchmarks/RESULTS.md)."""
    lines = (ROOT / "params.yaml").read_text(encoding="utf-8").splitlines()
    full = [i for i, line in enumerate(lines) if line.lstrip().startswith("#")]
    runs = [i + 1 for a, i in zip(full, full[1:]) if i == a + 1]
    assert not runs, f"params.yaml: consecutive comment lines at lines {runs}: one line per key or block"
    for i in full:
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        assert nxt.strip() and not nxt.lstrip().startswith("#"), (
            f"params.yaml:{i + 1}: a comment line not directly above a key"
        )
    measured = re.compile(r"\bmeasured\b|\d\s*(dB|MiB|GiB|ms)\b|\d+(\.\d+)?\s*s\b(?! a step)", re.I)
    for no, line in enumerate(lines, 1):
        comment = line.partition("#")[2] if "#" in line else ""
        assert not measured.search(comment), (
            f"params.yaml:{no}: a measurement in a comment ({comment.strip()!r}); move it to benchmarks/RESULTS.md"
        )


def _code_text(path: Path) -> str:
    # string literals split over lines ("... README's " "\"Vessel-aware training\" ...") read as one
    text = path.read_text(encoding="utf-8", errors="replace")
    return re.sub(r"[\"\\]\s*\n\s*[\"f]*", " ", text)


def code_docs_references() -> list[tuple[str, str]]:
    """(file, path) of every docs/ file or bare Markdown name the code cites."""
    out = []
    for f in CODE_FILES:
        text = f.read_text(encoding="utf-8", errors="replace")
        for m in re.finditer(r"(?<![\w./-])(docs/[\w./-]*\w|[A-Z][A-Z_]+\.md)\b", text):
            out.append((str(f.relative_to(ROOT)), m.group(1)))
    return out


def code_readme_citations() -> list[tuple[str, str]]:
    """(file, the 80 characters after it) of every README citation in the code."""
    out = []
    for f in CODE_FILES:
        text = re.sub(r"\s+", " ", _code_text(f))
        for m in re.finditer(r"README", text):
            out.append((str(f.relative_to(ROOT)), text[m.end(): m.end() + 80]))
    return out


def test_code_cites_existing_docs() -> None:
    refs = code_docs_references()
    assert refs, "the scan found no docs/ reference at all: is the pattern still right?"
    missing = sorted({(f, p) for f, p in refs if p not in EXTERNAL and not (ROOT / p).exists()})
    assert not missing, "the code cites documents that do not exist: " + ", ".join(f"{p} ({f})" for f, p in missing)
    # docs/REFERENCE.md (irunet.py, fundus.py) is the shared reference text in ../shared/docs: never committed here
    assert not (ROOT / "docs" / "REFERENCE.md").exists(), (
        "docs/REFERENCE.md is in the repository; it belongs in ../shared/docs"
    )


def test_code_cites_existing_readme_sections() -> None:
    cites = code_readme_citations()
    assert cites, "the scan found no README citation at all: is the pattern still right?"
    readme = ROOT / "README.md"
    readme_targets = {t for _, t in links(readme)}
    unknown, dangling = [], []
    for f, after in cites:
        present = [k for k in README_CITATIONS if k in after.lower()]
        phrase = min(present, key=after.lower().index) if present else None  # the one nearest the citation
        if phrase is None:
            unknown.append(f"{f}: README{after}")
            continue
        target = README_CITATIONS[phrase]
        why = _check_target(readme, target)
        if why:
            dangling.append(f"{f}: {phrase!r} -> {why}")
        elif target not in readme_targets:
            dangling.append(f"{f}: {phrase!r} -> README.md does not link to {target}")
    assert not unknown, "README citations in the code with no entry in README_CITATIONS:\n" + "\n".join(unknown)
    assert not dangling, "\n".join(dangling)


def test_backticked_repository_paths_exist() -> None:
    """Paths the docs name in backticks (`src/...`, `tests/...`, ...) exist, so the docs follow the code."""
    bad = []
    prefixes = ("src/", "tests/", "stages/", "tools/", "benchmarks/", "docs/", ".ci/", ".dvc/plots/")
    for doc in DOCS:
        for no, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"`([^`\s]+)`", line):
                p = m.group(1).rstrip(".,:;")
                if not p.startswith(prefixes) or re.search(r"[*{<]|[A-Z]{3,}|\.\.\.", p):
                    continue
                if p not in EXTERNAL and not (ROOT / p).exists():
                    bad.append(f"{doc.relative_to(ROOT)}:{no}: `{p}`")
    assert not bad, "named in the docs but not in the repository:\n" + "\n".join(bad)
