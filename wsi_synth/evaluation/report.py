"""report.json (every number) and a self-contained report.html (gallery and plot inline, no external files)."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import shlex
from pathlib import Path

import numpy as np
from PIL import Image

from wsi_synth.io.atomic import output_set


def write_report(out: Path, report: dict, *, gallery: list, histogram: dict, overwrite: bool) -> None:
    """Both files under temporary names, renamed into place together (never a new JSON beside an old page)."""
    out.mkdir(parents=True, exist_ok=True)
    texts = {
        out / "report.json": json.dumps(report, indent=2),
        out / "report.html": render_html(report, gallery, histogram),
    }
    with output_set(list(texts), overwrite=overwrite) as temps:
        for tmp, text in zip(temps, texts.values(), strict=True):
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())


def _sampled(entry: dict) -> str:
    """', sampled from N' for an input cut down by --max-tiles."""
    return f", sampled from {entry['sampled_from']}" if "sampled_from" in entry else ""


def _png(tile: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(tile)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _histogram_svg(series: dict, width: int = 560, height: int = 200, bins: int = 30) -> str:
    """Overlaid histograms of nearest-training-sample distances (synthetic vs held-out real)."""
    if not series:
        return ""
    everything = np.concatenate(list(series.values()))
    edges = np.linspace(everything.min(), everything.max() + 1e-9, bins + 1)
    colours = {"synthetic": "#c0392b", "real": "#2c7fb8"}
    parts = [f'<svg width="{width}" height="{height + 30}" xmlns="http://www.w3.org/2000/svg">']
    densities = {k: np.histogram(v, edges)[0] / max(len(v), 1) for k, v in series.items()}
    top = max(d.max() for d in densities.values()) or 1
    bar_w = width / bins
    for name, density in densities.items():
        for i, d in enumerate(density):
            h = height * d / top
            parts.append(
                f'<rect x="{i * bar_w:.1f}" y="{height - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                f'fill="{colours.get(name, "#777")}" fill-opacity="0.5"/>'
            )
    parts.append(f'<text x="0" y="{height + 20}" font-size="12">{edges[0]:.3g}</text>')
    parts.append(f'<text x="{width - 60}" y="{height + 20}" font-size="12">{edges[-1]:.3g}</text>')
    legend = " ".join(f'<tspan fill="{colours.get(n, "#777")}">■ {html.escape(n)}</tspan>' for n in series)
    parts.append(f'<text x="{width / 2 - 80}" y="{height + 20}" font-size="12">{legend}</text></svg>')
    return "".join(parts)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _view_commands(slides: list[str]) -> str:
    """How to look at each slide of an input: the `wsi-synth view` command (the viewer is a local server)."""
    shown = "".join(f"<br><code>wsi-synth view {html.escape(shlex.quote(s))}</code>" for s in slides[:8])
    return shown + (f"<br>… and {len(slides) - 8} more" if len(slides) > 8 else "")


def _classes_html(report: dict) -> str:
    """The per-class table: how often each class's tiles look like that class, synthetic against real."""
    found = report["metrics"].get("classes")
    if not found:
        return ""

    def cell(value: object) -> str:
        return "–" if value is None else html.escape(_fmt(value))

    rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td>{e['synthetic_tiles']}</td><td>{e['real_tiles']}</td>"
        f"<td>{cell(e['looks_like_its_class']['synthetic'])}</td><td>{cell(e['looks_like_its_class']['real'])}</td>"
        f"<td>{html.escape(', '.join(f'{o} {v:.2f}' for o, v in e['synthetic_looks_like'].items() if v))}</td>"
        f"<td>{cell(e.get('precision'))}</td><td>{cell(e.get('recall'))}</td></tr>"
        for name, e in found["per_class"].items()
    )
    return (
        "<h2>Classes</h2><p>A tile's class is the class on most of its pixels. It <i>looks like</i> the class most of "
        f"its {found['vote_k']} nearest labelled {html.escape(found['reference'])} tiles carry. Real tiles give the "
        "yardstick: how often real tissue of a class looks like it in this feature space.</p><table><tr><th>class</th>"
        "<th>synthetic tiles</th><th>real tiles</th><th>looks like its class: synthetic</th><th>real</th>"
        f"<th>synthetic tiles look like</th><th>precision</th><th>recall</th></tr>{rows}</table>"
    )


def render_html(report: dict, gallery: list, histogram: dict) -> str:
    """The report as one self-contained HTML page: metrics, inputs, the nearest-neighbour gallery and histogram."""
    fx = report["feature_extractor"]
    warning = (
        ""
        if fx["comparable_with_published"]
        else (
            "<p class=warn>Features from the offline default extractor: compare these numbers only with each other, "
            "never with published FID or precision/recall. Pass --features inception-2015-12-05.pt (or vgg16.pt) for "
            "those.</p>"
        )
    )
    warning += "".join(f"<p class=warn>Note: {html.escape(note)}.</p>" for note in report.get("notes", []))
    rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in report["metrics"].items()
        if k != "classes"
    )
    inputs = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v['path'])} — {v['tiles']} tiles ({v['kind']})"
        f"{_sampled(v)}"
        f"{_view_commands(v.get('slides', []))}</td></tr>"
        for k, v in report["inputs"].items()
    )
    cells = "".join(
        f'<figure><img src="{_png(s)}"><img src="{_png(t)}"><figcaption>d = {d:.3g}</figcaption></figure>'
        for s, t, d in gallery
    )
    gallery_html = (
        (
            "<h2>Nearest training tile of each synthetic tile</h2><p>Left: synthetic; right: its nearest training "
            "tile in "
            f"feature space. Near-identical pairs would mean copying.</p><div class=gallery>{cells}</div>"
        )
        if gallery
        else ""
    )
    plot = (
        (
            "<h2>Distance to the nearest training tile</h2><p>Synthetic tiles should sit no closer to the training "
            "set than "
            f"held-out real tiles do.</p>{_histogram_svg(histogram)}"
        )
        if histogram
        else ""
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>wsi-synth evaluation</title><style>
body{{font-family:sans-serif;max-width:980px;margin:2em auto}} table{{border-collapse:collapse}}
th,td{{border:1px solid #ccc;padding:4px 8px;text-align:left}} .warn{{background:#fff3cd;padding:8px}}
.gallery{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}} img{{width:96px;height:96px}}
</style></head><body><h1>wsi-synth evaluation</h1>
<p>Feature extractor: <b>{html.escape(fx["name"])}</b> ({fx["dim"]}-d)</p>{warning}
<h2>Inputs</h2><table>{inputs}</table><h2>Metrics</h2><table>{rows}</table>{_classes_html(report)}{plot}{gallery_html}</body></html>"""
