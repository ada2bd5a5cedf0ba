"""Formatting shared by the coursework checkers' messages."""

from __future__ import annotations

import textwrap

__all__ = ["wrap_message"]


def wrap_message(text: str, width: int = 88) -> str:
    """Wrap each line of ``text`` to ``width``, keeping its indentation (and a list's hanging one)."""
    lines = []
    for line in text.splitlines():
        body = line.lstrip()
        indent = line[: len(line) - len(body)]
        marker = body.split(" ", 1)[0]
        hanging = " " * (len(marker) + 1) if marker[:-1].isdigit() and marker.endswith(".") else ""
        lines.append(
            textwrap.fill(
                body,
                width=width,
                initial_indent=indent,
                subsequent_indent=indent + (hanging or "  "),
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(lines)
