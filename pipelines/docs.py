"""Static model documentation from the loaded SQLMesh context: an index, one page per model, a lineage page.

Plain HTML with a little inline CSS and an SVG drawn here: nothing is fetched, it opens offline.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

from pipelines.settings import Settings

DEFAULT_OUT = "docs/site"
LAYERS = ("raw", "silver", "gold")
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
table { border-collapse: collapse; width: 100%; margin: .5em 0 1.5em; }
th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } code, pre { font: 12px ui-monospace, monospace; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 1em; overflow-x: auto; }
.note { background: #fff6d6; border: 1px solid #e6cf7a; padding: .5em 1em; }
.muted { color: #777; } svg a:hover rect { stroke-width: 2.5; }
"""
COLOURS = {"raw": "#eeeeee", "silver": "#e3ecf7", "gold": "#fbefc9"}
BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 290, 30, 80, 14, 10


class UndocumentedColumns(ValueError):
    """A model column has no description; the message names each model.column."""


def build_docs(settings: Settings, out_dir: Path | None = None, *, context: Any = None) -> Path:
    """Write the site to out_dir (default docs/site/ of the project) and return its index.html.

    context: an already loaded sqlmesh.Context (default: the project's, via pipelines.transform.context).
    Raises UndocumentedColumns (a ValueError) naming every model column without a description; nothing
    is written then.
    """
    if context is None:
        from pipelines.sqlmesh_context import context as load_context

        context = load_context(settings)
    models = dict(context.models)
    upstream = {fqn: {d for d in context.dag.graph.get(fqn, ()) if d in models} for fqn in models}
    downstream: dict[str, set[str]] = defaultdict(set)
    for fqn, deps in upstream.items():
        for dep in deps:
            downstream[dep].add(fqn)

    columns = {fqn: _column_descriptions(m) for fqn, m in models.items()}
    missing = [
        f"{_name(m)}.{col}"
        for fqn, m in sorted(models.items(), key=lambda kv: _name(kv[1]))
        if not m.kind.is_external
        for col in m.columns_to_types or {}
        if not columns[fqn].get(col)
    ]
    if missing:
        raise UndocumentedColumns(
            "columns without a description (add a /* meaning */ comment after the column): "
            + ", ".join(missing)
        )

    out_dir = Path(out_dir) if out_dir is not None else settings.path(DEFAULT_OUT)
    out_dir.mkdir(parents=True, exist_ok=True)
    ordered = sorted(models, key=lambda fqn: (_layer_rank(models[fqn]), _name(models[fqn])))
    for fqn in ordered:
        page = _model_page(
            models[fqn], columns[fqn], [models[u] for u in upstream[fqn]], downstream[fqn], models
        )
        (out_dir / _href(models[fqn])).write_text(page, encoding="utf-8")
    (out_dir / "lineage.html").write_text(_lineage_page(models, upstream), encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(_index_page([models[fqn] for fqn in ordered], settings), encoding="utf-8")
    return index


def _name(model: Any) -> str:
    return f"{model.schema_name}.{model.view_name}"


def _href(model: Any) -> str:
    return f"{_name(model)}.html"


def _layer(model: Any) -> str:
    return "raw" if model.kind.is_external else model.schema_name


def _layer_rank(model: Any) -> int:
    layer = _layer(model)
    return LAYERS.index(layer) if layer in LAYERS else len(LAYERS)


def _description(model: Any) -> str:
    return (model.description or "").strip()


def _column_descriptions(model: Any) -> dict[str, str]:
    return {c: d.strip() for c, d in model.column_descriptions.items() if d and d.strip()}


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{CSS}</style></head><body>\n"
        f'<p><a href="index.html">Models</a> · <a href="lineage.html">Lineage</a></p>\n{body}\n</body></html>\n'
    )


def _link(model: Any) -> str:
    return f'<a href="{escape(_href(model))}">{escape(_name(model))}</a>'


def _facts(model: Any) -> tuple[str, str, str, str]:
    """kind, grain, cron, owner as display text."""
    if model.kind.is_external:
        return "EXTERNAL", "—", "—", model.owner or "—"
    grain = ", ".join(g.sql(dialect="postgres") for g in model.grains) or "—"
    return model.kind.name.value, grain, model.cron, model.owner or "—"


def _audit(name: str, args: dict[str, Any]) -> str:
    params = ", ".join(f"{key} := {value.sql(dialect='postgres')}" for key, value in args.items())
    return f"{name}({params})" if params else name


def _index_page(models: list[Any], settings: Settings) -> str:
    if settings.sandbox.enabled:
        note = "The sandbox is enabled in this configuration: the data in these tables is <b>synthetic</b>, not real prices."
    else:
        note = (
            "Data loaded by <code>make demo</code> or with <code>--sandbox</code> comes from the offline "
            "sandbox and is <b>synthetic</b>, not real prices."
        )
    parts = [
        "<h1>cryptoflow models</h1>",
        f'<p class="note">{note}</p>',
        f"<p>{sum(not m.kind.is_external for m in models)} models on "
        f'{sum(m.kind.is_external for m in models)} raw tables. <a href="lineage.html">Lineage graph</a>.</p>',
    ]
    by_layer: dict[str, list[Any]] = defaultdict(list)
    for model in models:
        by_layer[_layer(model)].append(model)
    for layer, members in by_layer.items():
        title = "raw (external, loaded by the ingestion)" if layer == "raw" else layer
        rows = "".join(
            f"<tr><td>{_link(m)}</td>"
            + "".join(f"<td><code>{escape(str(v))}</code></td>" for v in _facts(m))
            + f"<td>{escape(_description(m))}</td></tr>\n"
            for m in members
        )
        parts.append(
            f'<h2 id="{escape(layer)}">{escape(title)}</h2>\n<table><tr><th>model</th><th>kind</th><th>grain</th>'
            f"<th>cron</th><th>owner</th><th>description</th></tr>\n{rows}</table>"
        )
    return _page("cryptoflow models", "\n".join(parts))


def _model_page(
    model: Any,
    descriptions: dict[str, str],
    ups: list[Any],
    downs: set[str],
    models: dict[str, Any],
) -> str:
    kind, grain, cron, owner = _facts(model)
    rows = "".join(
        f"<tr><td><code>{escape(col)}</code></td><td><code>{escape(dtype.sql(dialect='postgres'))}</code></td>"
        f"<td>{escape(descriptions.get(col, ''))}</td></tr>\n"
        for col, dtype in (model.columns_to_types or {}).items()
    )
    audits = "".join(f"<li><code>{escape(_audit(name, args))}</code></li>\n" for name, args in model.audits)

    def links(items: list[Any]) -> str:
        return ", ".join(_link(m) for m in sorted(items, key=_name)) or '<span class="muted">none</span>'

    parts = [
        f"<h1>{escape(_name(model))}</h1>",
        f"<p>{escape(_description(model)) or '<span class=muted>no description</span>'}</p>",
        f"<table><tr><th>layer</th><th>kind</th><th>grain</th><th>cron</th><th>owner</th></tr><tr>"
        f"<td>{escape(_layer(model))}</td>"
        + "".join(f"<td><code>{escape(str(v))}</code></td>" for v in (kind, grain, cron, owner))
        + "</tr></table>",
        f'<p>Upstream: <span class="upstream">{links(ups)}</span></p>',
        f'<p>Downstream: <span class="downstream">{links([models[d] for d in downs])}</span></p>',
        "<h2>Columns</h2>",
        f"<table><tr><th>column</th><th>type</th><th>description</th></tr>\n{rows}</table>",
    ]
    parts.append("<h2>Audits</h2>" + (f"<ul>{audits}</ul>" if audits else '<p class="muted">none</p>'))
    if not model.kind.is_external:
        sql = model.query.sql(pretty=True, dialect="postgres")
        parts.append(f"<h2>SQL</h2>\n<pre>{escape(sql)}</pre>")
        after = ";\n".join(s.sql(dialect="postgres") for s in model.post_statements)
        if after:  # e.g. the grain's unique index (@unique_grain)
            parts.append(f"<h2>After each build</h2>\n<pre>{escape(after)}</pre>")
    return _page(_name(model), "\n".join(parts))


def _lineage_page(models: dict[str, Any], upstream: dict[str, set[str]]) -> str:
    """Layered left-to-right: a model's column is its dependency depth (sources at 0)."""
    depth: dict[str, int] = {}

    def depth_of(fqn: str) -> int:
        if fqn not in depth:
            depth[fqn] = 1 + max((depth_of(u) for u in upstream[fqn]), default=-1)
        return depth[fqn]

    columns: dict[int, list[str]] = defaultdict(list)
    for fqn in sorted(models, key=lambda f: (_layer_rank(models[f]), _name(models[f]))):
        columns[depth_of(fqn)].append(fqn)
    row: dict[str, int] = {}
    for d in sorted(columns):  # fewer crossings: a model sits near the mean row of its upstreams
        members = columns[d]
        if d:
            members.sort(key=lambda f: sum(row[u] for u in upstream[f]) / len(upstream[f]))
        row.update((fqn, i) for i, fqn in enumerate(members))
    pos = {
        fqn: (PAD + d * (BOX_W + GAP_X), PAD + i * (BOX_H + GAP_Y))
        for d, members in columns.items()
        for i, fqn in enumerate(members)
    }
    width = PAD * 2 + len(columns) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max(len(m) for m in columns.values()) * (BOX_H + GAP_Y) - GAP_Y

    edges = []
    for fqn, deps in upstream.items():
        for dep in sorted(deps):
            (x1, y1), (x2, y2) = pos[dep], pos[fqn]
            start_x, start_y, end_y = x1 + BOX_W, y1 + BOX_H / 2, y2 + BOX_H / 2
            mid = (start_x + x2) / 2
            edges.append(
                f'<path class="edge" data-from="{escape(_name(models[dep]))}" data-to="{escape(_name(models[fqn]))}" '
                f'd="M{start_x},{start_y} C{mid},{start_y} {mid},{end_y} {x2 - 2},{end_y}" fill="none" stroke="#888" '
                f'marker-end="url(#arrow)"/>'
            )
    boxes = []
    for fqn, (x, y) in pos.items():
        model = models[fqn]
        boxes.append(
            f'<a href="{escape(_href(model))}"><title>{escape(_description(model))}</title>'
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="4" fill="{COLOURS.get(_layer(model), "#fff")}" '
            f'stroke="#555"/><text x="{x + 8}" y="{y + BOX_H / 2 + 4}" font-family="ui-monospace, monospace" '
            f'font-size="12">{escape(_name(model))}</text></a>'
        )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="model lineage">\n'
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#888"/></marker></defs>\n'
        + "\n".join(edges + boxes)
        + "\n</svg>"
    )
    body = (
        "<h1>Lineage</h1><p>Left to right by dependency depth: raw (grey), silver (blue), gold (yellow). "
        f'Click a model for its page.</p>\n<div style="overflow-x: auto">{svg}</div>'
    )
    return _page("lineage", body)
