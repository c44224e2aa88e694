"""Shared helper of the benchmarks: keep one table of BENCHMARKS.md current."""

from __future__ import annotations

import re
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"


def replace_block(tag: str, lines: list[str], heading: str, path: Path = BENCHMARKS_MD) -> None:
    """Put ``lines`` between the ``<!-- tag:start -->`` and ``<!-- tag:end -->`` markers of
    BENCHMARKS.md, or append them under ``heading`` the first time."""
    start, end = f"<!-- {tag}:start -->", f"<!-- {tag}:end -->"
    block = start + "\n" + "\n".join(lines) + "\n" + end
    text = path.read_text()
    if start in text:
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        text = pattern.sub(lambda _: block, text)
    else:
        text += f"\n{heading}\n\n{block}\n"
    path.write_text(text)
