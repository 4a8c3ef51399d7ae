"""Turn library exceptions into one short line for ``InputError`` messages."""

from __future__ import annotations


def short(exc: BaseException, limit: int = 160) -> str:
    """First meaningful line of an exception's text (ITK and zlib messages span many lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    # ITK puts the useful sentence after "itk::ERROR: ... :" on one of the lines.
    for ln in lines:
        if "itk::ERROR" in ln or "ERROR:" in ln:
            text = ln.split("):", 1)[-1].split("ERROR:", 1)[-1].strip(" :")
            break
    else:
        text = lines[0] if lines else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
