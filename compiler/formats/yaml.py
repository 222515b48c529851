"""The YAML flowchart format: text <-> :class:`~compiler.flowchart.Flowchart`.

The format itself (keys, kinds, a worked example) is documented in ``docs/flowcharts.md``;
the plain-data mapping lives with the model (:func:`compiler.flowchart.from_dict` /
:func:`~compiler.flowchart.to_dict`) because the chart's hash is computed from it.

Example::

    fc = loads_yaml(open("configs/workflows/travel-booking.yaml").read(), source="travel-booking.yaml")
    assert loads_yaml(dump_yaml(fc)) == fc
"""

from __future__ import annotations

import yaml

from compiler.flowchart import Flowchart, FlowchartError, from_dict, to_dict


def loads_yaml(text: str, source: str = "<string>", default_name: str = "workflow") -> Flowchart:
    """Parse the YAML format; every error names ``source`` and the line, node or key at fault."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise FlowchartError(f"`{source}`: not valid YAML{where}: {problem}") from exc
    if not isinstance(doc, dict):
        raise FlowchartError(f"`{source}`: a flowchart must be a YAML mapping with `nodes` and `edges`")
    return from_dict(doc, source=source, default_name=default_name)


def dump_yaml(fc: Flowchart) -> str:
    """YAML text that :func:`loads_yaml` reads back into an equal chart."""
    return yaml.safe_dump(to_dict(fc), sort_keys=False, allow_unicode=True, width=100)
