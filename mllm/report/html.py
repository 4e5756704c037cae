"""`mllm report`: one self-contained HTML page to eyeball a recaption run.

Cards show each image (a base64 JPEG thumbnail) beside its original, short and detailed captions,
with the loop guard's action and any error; then caption length histograms and the table of
errors. A small script filters cards by text and shows how many are visible.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from mllm.data.images import ImageDecodeError, load_image
from mllm.infer.shards import OutputFolder
from mllm.infer.sources import source_from_description
from mllm.report.plots import length_histograms_png

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
.card{display:grid;grid-template-columns:200px 1fr 1fr 2fr;gap:1em;background:#fff;border:1px solid #ddd;
border-radius:6px;padding:.8em;margin:.6em 0}
.card img{width:200px;max-height:200px;object-fit:contain}.card h4{margin:.1em 0 .3em;font-size:.8em;color:#666}
.card .meta{grid-column:1/-1;font-size:.8em;color:#666}.error{color:#b00}
.noimg{width:200px;height:120px;background:#eee;display:flex;align-items:center;justify-content:center;color:#888}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left}
"""

SCRIPT = """
const cards = Array.from(document.querySelectorAll('.card'));
const count = document.getElementById('shown-count');
function show() {
  const q = document.getElementById('filter').value.toLowerCase();
  let n = 0;
  for (const c of cards) { const hit = c.textContent.toLowerCase().includes(q); c.hidden = !hit; n += hit; }
  count.textContent = String(n);
}
document.getElementById('filter').addEventListener('input', show);
show();
"""


def _thumbnails(job: dict[str, Any], keys: set[str], size: int) -> dict[str, str]:
    """key -> base64 JPEG, read back through the job's input source; images it cannot read are left out."""
    if not keys or "source" not in job:
        return {}
    thumbs: dict[str, str] = {}
    try:
        for item in source_from_description(job["source"]):
            if item.key not in keys or item.image is None:
                continue
            try:
                image = load_image(item.image, name=item.ref)
            except ImageDecodeError:
                continue
            image.thumbnail((size, size))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
            thumbs[item.key] = base64.b64encode(buffer.getvalue()).decode()
            if len(thumbs) == len(keys):
                break
    except (OSError, ValueError):  # input moved or gone: the report still shows the captions
        pass
    return thumbs


def _card(row: dict[str, Any], thumb: str | None) -> str:
    esc = lambda v: html.escape(str(v)) if v not in (None, "") else "<i>—</i>"  # noqa: E731
    image = (f'<img alt="{esc(row["key"])}" src="data:image/jpeg;base64,{thumb}">' if thumb
             else '<div class="noimg">no preview</div>')
    meta = f'{esc(row["key"])} · {esc(row["image"])}'
    if row.get("guard"):
        meta += f' · guard: {esc(row["guard"])}'
    if row.get("error"):
        meta += f' · <span class="error">{esc(row["error_kind"])}: {esc(row["error"])}</span>'
    return (f'<div class="card">{image}<div><h4>original</h4>{esc(row.get("original_caption"))}</div>'
            f'<div><h4>short ({row.get("short_words") or 0} words)</h4>{esc(row.get("short_caption"))}</div>'
            f'<div><h4>detailed ({row.get("detailed_words") or 0} words)</h4>{esc(row.get("detailed_caption"))}</div>'
            f'<div class="meta">{meta}</div></div>')


def _error_table(rows: list[dict[str, Any]], limit: int) -> str:
    failed = [r for r in rows if r.get("error_kind")]
    if not failed:
        return "<p>No errors.</p>"
    kinds = ", ".join(f"{k}: {v}" for k, v in Counter(r["error_kind"] for r in failed).most_common())
    body = "".join(f"<tr><td>{html.escape(str(r['key']))}</td><td>{html.escape(r['error_kind'])}</td>"
                   f"<td>{html.escape(str(r['error']))}</td></tr>" for r in failed[:limit])
    more = f"<p>… and {len(failed) - limit} more.</p>" if len(failed) > limit else ""
    return (f"<p>{len(failed)} errors ({html.escape(kinds)})</p><table id=\"errors\"><tr><th>key</th>"
            f"<th>kind</th><th>error</th></tr>{body}</table>{more}")


def write_report(recaption_dir: str | Path, out: str | Path, *, max_cards: int = 100, thumb_size: int = 200,
                 max_errors: int = 1000) -> Path:
    """Write the HTML report for a recaption output folder (cards for its first `max_cards` rows)."""
    folder = OutputFolder(recaption_dir)
    job_path = folder.root / "job.json"
    job = json.loads(job_path.read_text()) if job_path.is_file() else {}
    rows = folder.read_table().to_pylist()
    shown = rows[:max_cards]
    thumbs = _thumbnails(job, {r["key"] for r in shown if not r.get("error_kind")}, thumb_size)
    histogram = base64.b64encode(length_histograms_png(rows)).decode()
    guards = Counter(a.split(":", 1)[-1] for r in rows if r.get("guard") for a in r["guard"].split(","))
    facts = {"rows": len(rows), "errors": sum(1 for r in rows if r.get("error_kind")),
             "model": job.get("model_id"), "revision": job.get("model_revision"),
             "tasks": job.get("tasks"), "guard actions": dict(guards) or "none"}
    facts_html = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in facts.items())
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Recaption report: {html.escape(folder.root.name)}</title>
<style>{STYLE}</style></head><body>
<h1>Recaption report: {html.escape(folder.root.name)}</h1>
<ul>{facts_html}</ul>
<h2>Caption lengths</h2><img alt="caption length histograms" src="data:image/png;base64,{histogram}">
<h2>Samples</h2>
<p><input id="filter" placeholder="filter captions"> showing <span id="shown-count">…</span> of {len(shown)}
(first {len(shown)} of {len(rows)} rows)</p>
{"".join(_card(r, thumbs.get(r["key"])) for r in shown)}
<h2>Errors</h2>{_error_table(rows, max_errors)}
<script>{SCRIPT}</script></body></html>
"""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
