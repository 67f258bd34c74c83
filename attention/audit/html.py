"""``report.html``: the audit on one self-contained page (every picture inlined as a PNG data URI,
no script, no external file), readable offline and attachable to an e-mail or a ticket."""
from __future__ import annotations

import base64
import html as _html
from typing import Optional

import cv2
import numpy as np

MAX_CLASSES_SHOWN = 40
EXAMPLES = 8
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 7px;text-align:right;font-size:13px}
th{background:#f4f4f4}td.l,th.l{text-align:left}.flag{color:#b00;font-weight:bold}.muted{color:#777;font-size:13px}
.maps td{text-align:center;vertical-align:top;font-size:12px}.maps img{image-rendering:pixelated;display:block;margin:auto}
figure{display:inline-block;margin:6px;text-align:center;font-size:12px;vertical-align:top}
figure img{display:block;image-rendering:auto}
"""


def _esc(s) -> str:
    return _html.escape(str(s))


def png_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _img(rgb: np.ndarray, alt: str, width: Optional[int] = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{png_uri(rgb)}" alt="{_esc(alt)}"{w}>'


def _fmt(v, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ci(d: Optional[dict], digits: int = 3) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{d['mean']:.{digits}f} <span class=muted>[{d['low']:.{digits}f}, {d['high']:.{digits}f}]</span>"


def _map_picture(m: np.ndarray, vmax: float, size: int = 96) -> np.ndarray:
    from ..render import apply_colormap
    v = np.where(np.isfinite(m), m, 0.0) / max(vmax, 1e-12)
    rgb = apply_colormap(np.clip(v, 0, 1))
    rgb[~np.isfinite(m)] = (200, 200, 200)       # never seen by the model (cropped away)
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_NEAREST)


def _figure_png(fig) -> str:
    import io
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _head_plots(heads: dict) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    titles = {"entropy": "entropy over patches (nats)", "mean_distance": "mean attention distance (input px)",
              "prefix_mass": "attention to prefix tokens (CLS, DIST, registers)", "register_mass": "attention to registers",
              "object_fraction": "attention on the object (with masks)"}
    parts = []
    for key, title in titles.items():
        st = heads["stats"].get(key)
        if st is None:
            continue
        med = np.array([[np.nan if v is None else v for v in r] for r in st["p50"]], float)
        lo = np.array([[np.nan if v is None else v for v in r] for r in st["p25"]], float)
        hi = np.array([[np.nan if v is None else v for v in r] for r in st["p75"]], float)
        if not np.isfinite(med).any():
            continue
        L, Hh = med.shape
        fig, ax = plt.subplots(figsize=(4.6, 3.0))
        for h in range(Hh):
            x = np.arange(L) + (h - (Hh - 1) / 2) * (0.6 / max(Hh, 1))
            ok = np.isfinite(med[:, h])
            ax.errorbar(x[ok], med[ok, h], yerr=[med[ok, h] - lo[ok, h], hi[ok, h] - med[ok, h]], fmt="o", ms=3,
                        lw=0.8, capsize=0, label=f"head {h}" if Hh <= 12 else None)
        ax.set_xlabel("layer (depth)")
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(L))
        if Hh <= 12:
            ax.legend(fontsize=6, ncol=2)
        fig.tight_layout()
        parts.append(f'<figure><img src="{_figure_png(fig)}" alt="{_esc(key)} against depth"><figcaption>'
                     f'{_esc(key)}: median over images, bar = 25–75 %, one colour per head</figcaption></figure>')
    return "\n".join(parts)


def _confusion(cls: dict) -> str:
    labels, cm = cls["confusion"]["labels"], np.array(cls["confusion"]["matrix"])
    if len(labels) > MAX_CLASSES_SHOWN:
        return f"<p class=muted>{len(labels)} classes: the matrix is in report.json.</p>"
    rows = ["<tr><th class=l>true \\ predicted</th>" + "".join(f"<th>{_esc(l)}</th>" for l in labels) + "</tr>"]
    top = max(int(cm.max()), 1)
    for i, l in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            v = int(cm[i, j])
            a = 0.08 + 0.6 * v / top if v else 0
            bg = f"rgba(40,90,200,{a:.2f})" if i == j else f"rgba(200,60,40,{a:.2f})"
            cells.append(f'<td style="background:{bg}">{v}</td>')
        rows.append(f"<tr><th class=l>{_esc(l)}</th>{''.join(cells)}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _examples(report: dict, g: dict, ds, method: str) -> str:
    """Thumbnails of the images whose map misses the object most (lowest AUROC), drawn on the photo."""
    from ..images import open_image
    from ..preprocess import Geometry
    from ..render import overlay
    auc = g.get(f"auroc_{method}")
    if auc is None or not np.isfinite(auc).any():
        return ""
    order = [i for i in np.argsort(np.where(np.isfinite(auc), auc, np.inf), kind="stable") if np.isfinite(auc[i])]
    paths = {it.id: it.path for it in ds.items}
    names = report["model"]["class_names"]
    figs = []
    for i in order[:EXAMPLES]:
        iid = str(g["ids"][i])
        try:
            img = open_image(paths[iid]).image
        except Exception:  # noqa: BLE001 - a picture that cannot be re-read is left out of the page
            continue
        geo = Geometry(tuple(int(v) for v in g["original_size"][i]), tuple(int(v) for v in g["input_size"][i]),
                       tuple(float(v) for v in g["box"][i]))
        pic = overlay(img, g[f"map_{method}"][i].astype(np.float32), geo)
        scale = 128 / max(pic.shape[:2])
        pic = cv2.resize(pic, (max(1, round(pic.shape[1] * scale)), max(1, round(pic.shape[0] * scale))),
                         interpolation=cv2.INTER_NEAREST if scale > 1 else cv2.INTER_AREA)
        lab = int(g["label"][i])
        pred = f", pred {_esc(names[int(g['pred'][i])])}" if names else ""      # a backbone has no classes
        figs.append(f"<figure>{_img(pic, iid)}<figcaption>{_esc(iid)}<br>AUROC {auc[i]:.2f}{pred}"
                    f"{', true ' + _esc(names[lab]) if lab >= 0 and names else ''}</figcaption></figure>")
    return "".join(figs)


def render_html(report: dict, class_maps: dict, g: dict, ds) -> str:
    m = report["model"]
    methods = report.get("methods", [])
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>Attention audit: {_esc(m['name'])}</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>Attention audit — {_esc(m['name'])}</h1>",
           f"<p>{report['images']['computed']} images of <code>{_esc(report['data']['path'])}</code> "
           f"({_esc(report['data']['layout'])}); methods: {', '.join(map(_esc, methods))}; "
           f"{report['images']['skipped']} skipped.</p>"]
    if report.get("methods_not_defined"):
        out.append("<p class=muted>Left out: " + "; ".join(f"{_esc(k)}: {_esc(v)}" for k, v in
                                                          report["methods_not_defined"].items()) + "</p>")
    if report["images"]["skipped_list"]:
        out.append("<h2>Skipped images</h2><table><tr><th class=l>image</th><th class=l>reason</th></tr>" +
                   "".join(f"<tr><td class=l>{_esc(s['image'])}</td><td class=l>{_esc(s['reason'])}</td></tr>"
                           for s in report["images"]["skipped_list"][:200]) + "</table>")
    if report["images"]["computed"] == 0:
        return "".join(out) + "</body></html>"
    grouping = report.get("grouping")
    if grouping:
        out.append(f"<p><b>Groups, not classes</b>: {_esc(grouping['why'])}.</p>")
    cls = report.get("classification")
    if cls:
        out.append(f"<h2>Classification</h2><p>Accuracy {_ci(cls['accuracy'])} on {cls['n']} labelled images "
                   f"(95 % bootstrap interval).</p>")
        out.append(_confusion(cls))
    # per-class mean maps
    cm = report["class_maps"]
    unit = "group" if grouping else "class"
    out.append(f"<h2 id=class-maps>Per-{unit} mean maps</h2><p class=muted>Each image's map normalised to sum 1, placed on "
               f"the photo through its preprocessing geometry, averaged per {_esc(cm['by'])} {unit}; one colour scale per "
               f"method (bright = more than uniform; grey = cropped away by the preprocessing).</p>")
    order = sorted(range(len(cm["classes"])), key=lambda k: -cm["counts"][k])[:MAX_CLASSES_SHOWN]
    vmax = {x: float(np.nanmax(class_maps[x])) if np.isfinite(class_maps[x]).any() else 1.0 for x in methods}
    rows = [f"<tr><th class=l>{unit}</th><th>n</th>" + "".join(
        f"<th>{_esc(x)}<br><span class=muted>0 – {vmax[x]:.2f}× uniform</span></th>" for x in methods) + "</tr>"]
    for k in order:
        name = cm["classes"][k]
        cells = "".join(f"<td>{_img(_map_picture(class_maps[x][k], vmax[x]), name + ' ' + x)}</td>" for x in methods)
        rows.append(f"<tr><td class=l>{_esc(cm['classes'][k])}</td><td>{cm['counts'][k]}</td>{cells}</tr>")
    out.append('<table class=maps>' + "".join(rows) + "</table>")
    # heads
    out.append("<h2>Heads across the set</h2>")
    out.append(_head_plots(report["heads"]))
    rk = report["heads"].get("rankings", {})
    if rk:
        out.append("<table><tr><th class=l>ranking</th><th class=l>(layer, head): value</th></tr>" + "".join(
            f"<tr><td class=l>{_esc(k.replace('_', ' '))}</td><td class=l>" + ", ".join(
                f"({e['layer']}, {e['head']}): {list(e.values())[2]:.3f}" for e in v) + "</td></tr>"
            for k, v in rk.items()) + "</table>")
    # shortcuts
    out.append("<h2>Borders and corners (shortcut signal)</h2>")
    for x in methods:
        s = report["shortcuts"][x]
        out.append(f"<h3>{_esc(x)}</h3><p class=muted>Border band: outer {s['band_cells'][0]}×{s['band_cells'][1]} cells "
                   f"({100 * s['border_area']:.1f} % of the grid), corners {100 * s['corner_area']:.1f} %. Lift = mass ÷ "
                   f"area (1 = a uniform map). <span class=flag>!</span> = the interval lies above the area.</p>")
        lean = s["leaning_most"]
        flagged = [cn for cn, v in s["per_class"].items() if v["border_flag"] or v["corner_flag"]]
        out.append(f"<p><b>{len(flagged)} {unit}(s) flagged</b>: {', '.join(map(_esc, flagged[:20]))}</p>" if flagged else
                   f"<p>No {unit} puts more on the borders or corners than a uniform map would, beyond sampling noise.</p>")
        out.append("<p>Leaning most on borders: " + ", ".join(
            f"{_esc(e['class'])} ×{e['lift']:.2f}{' <span class=flag>!</span>' if e['flag'] else ''}" for e in lean["border"])
            + "; on corners: " + ", ".join(
            f"{_esc(e['class'])} ×{e['lift']:.2f}{' <span class=flag>!</span>' if e['flag'] else ''}" for e in lean["corner"])
            + "</p>")
        rows = [f"<tr><th class=l>{unit}</th><th>n</th><th>border mass [95 %]</th><th>lift</th><th>corner mass [95 %]</th>"
                "<th>lift</th></tr>"]
        for cn, v in list(s["per_class"].items())[:MAX_CLASSES_SHOWN]:
            fb = " <span class=flag>!</span>" if v["border_flag"] else ""
            fc = " <span class=flag>!</span>" if v["corner_flag"] else ""
            rows.append(f"<tr><td class=l>{_esc(cn)}</td><td>{v['n']}</td><td>{_ci(v['border_mass'])}</td>"
                        f"<td>{_fmt(v['border_lift'], 2)}{fb}</td><td>{_ci(v['corner_mass'])}</td>"
                        f"<td>{_fmt(v['corner_lift'], 2)}{fc}</td></tr>")
        out.append("<table>" + "".join(rows) + "</table>")
    # localisation & faithfulness
    out.append("<h2>Localisation and faithfulness</h2><p class=muted>Mean [95 % bootstrap interval]. Pointing game and "
               "AUROC against the masks; deletion AUC (lower is more faithful) and insertion AUC (higher is better) of "
               "the predicted class.</p>")
    rows = ["<tr><th class=l>method</th><th>masks</th><th>pointing game</th><th>AUROC</th><th>deletion AUC</th>"
            "<th>insertion AUC</th></tr>"]
    for x in methods:
        v = report["localisation"][x]
        rows.append(f"<tr><td class=l>{_esc(x)}</td><td>{v['images_with_mask']}</td><td>{_ci(v['pointing_game'])}</td>"
                    f"<td>{_ci(v['auroc'])}</td><td>{_ci(v['deletion_auc'])}</td><td>{_ci(v['insertion_auc'])}</td></tr>")
    out.append("<table>" + "".join(rows) + "</table>")
    if methods and report["data"]["masks"]:
        ex = _examples(report, g, ds, methods[0])
        if ex:
            out.append(f"<h3>Where {_esc(methods[0])} misses the object most (lowest AUROC)</h3><div>{ex}</div>")
    out.append("<p class=muted>Numbers: report.json; per-class maps: class_maps.npz; per-image results: shards/*.npz.</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html(path: str, report: dict, class_maps: dict, g: dict, ds) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(render_html(report, class_maps, g, ds))
    return path


__all__ = ["render_html", "write_html", "png_uri"]
