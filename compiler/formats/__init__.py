"""Flowchart file formats: pick an importer by file suffix.

Each format is a module of its own (``yaml``, ``mermaid``, ``dot``, and ``langgraph``
for a live Python graph rather than a file), all building the one model in
:mod:`compiler.flowchart`; drawings share the shape-to-kind inference of
:mod:`compiler.formats.drawing`. The model never imports a format, so adding one never
creates an import circle.

Example::

    fc = load_flowchart("configs/workflows/password-reset.mmd")
    fc.notes      # what the importer repaired or guessed, for `flowchart check` to show
"""

from __future__ import annotations

from pathlib import Path

from compiler.flowchart import Flowchart, FlowchartError

SUFFIXES: dict[str, str] = {
    ".yaml": "yaml",
    ".yml": "yaml",
    ".mmd": "mermaid",
    ".mermaid": "mermaid",
    ".dot": "dot",
    ".gv": "dot",
}

__all__ = ["SUFFIXES", "load", "load_flowchart", "loads"]


def loads(text: str, fmt: str, name: str = "workflow", source: str = "<string>") -> Flowchart:
    """Parse ``text`` in format ``fmt`` (``yaml``, ``mermaid`` or ``dot``)."""
    if fmt == "mermaid":
        from compiler.formats.mermaid import parse_mermaid

        return parse_mermaid(text, name=name, source=source)
    if fmt == "dot":
        from compiler.formats.dot import parse_dot

        return parse_dot(text, name=name, source=source)
    if fmt == "yaml":
        from compiler.formats.yaml import loads_yaml

        return loads_yaml(text, source=source, default_name=name)
    raise FlowchartError(f"`{source}`: unknown flowchart format `{fmt}`; use yaml, mermaid or dot")


def load(path: str | Path) -> Flowchart:
    """Load a flowchart from YAML (``.yaml``/``.yml``), Mermaid (``.mmd``/``.mermaid``) or DOT (``.dot``/``.gv``).

    Only parsing errors raise here; call :func:`compiler.flowchart.validate` or
    :func:`~compiler.flowchart.check` for the rest.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    fmt = SUFFIXES.get(suffix)
    if fmt is None:
        raise FlowchartError(
            f"`{p}`: unknown flowchart format `{suffix or '(none)'}`; "
            "use .yaml/.yml, .mmd/.mermaid or .dot/.gv"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowchartError(
            f"`{p}`: cannot read the flowchart ({exc.strerror or exc}); check the path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise FlowchartError(f"`{p}`: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8") from exc
    return loads(text, fmt, name=p.stem, source=str(p))


load_flowchart = load  # the name the rest of the compiler has always called it by
