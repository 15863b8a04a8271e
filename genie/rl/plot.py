"""Two small PNG charts drawn with Pillow (no matplotlib): a training curve, and mean +- std per player."""

from __future__ import annotations

from PIL import Image, ImageDraw

W, H, L, R, TOP, BOTTOM = 640, 400, 70, 20, 40, 50  # image size and the plot area's margins


def _frame(title: str, xlabel: str, ylabel: str, lo: float, hi: float):
    """A white image with the title, the axes and labelled y extremes; returns it, its drawer and the
    y -> pixel map."""
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((L, 12), title, fill="black")
    d.line([(L, TOP), (L, H - BOTTOM), (W - R, H - BOTTOM)], fill="black")
    d.text(((W + L) // 2 - 3 * len(xlabel), H - 22), xlabel, fill="black")
    d.text((4, TOP - 16), ylabel, fill="black")
    span = (hi - lo) or 1.0
    lo, hi = (lo - 0.5, hi + 0.5) if hi == lo else (lo - 0.05 * span, hi + 0.05 * span)
    for v in (lo, hi):
        y = H - BOTTOM - (v - lo) / (hi - lo) * (H - TOP - BOTTOM)
        d.text((4, y - 6), f"{v:.3g}", fill="black")
    return img, d, lambda v: H - BOTTOM - (v - lo) / (hi - lo) * (H - TOP - BOTTOM)


def line_plot(xs, ys, path, title: str, xlabel: str, ylabel: str) -> None:
    """ys against xs; None values in ys are left out (e.g. before the first finished episode)."""
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y is not None]
    ylo, yhi = (min(y for _, y in pts), max(y for _, y in pts)) if pts else (0.0, 1.0)
    img, d, py = _frame(title, xlabel, ylabel, ylo, yhi)
    xlo, xhi = (min(xs), max(xs)) if len(xs) else (0, 1)

    def px(x):
        return L + (x - xlo) / ((xhi - xlo) or 1) * (W - L - R)

    d.text((L, H - BOTTOM + 4), f"{xlo:g}", fill="black")
    d.text((W - R - 6 * len(f"{xhi:g}"), H - BOTTOM + 4), f"{xhi:g}", fill="black")
    xy = [(px(x), py(y)) for x, y in pts]
    if len(xy) > 1:
        d.line(xy, fill="royalblue", width=2)
    for x, y in xy:
        d.ellipse([x - 3, y - 3, x + 3, y + 3], fill="royalblue")
    if not pts:
        d.text((W // 2 - 60, H // 2), "no finished episodes", fill="gray")
    img.save(path)


def mean_std_plot(rows: dict[str, tuple[float, float]], path, title: str, ylabel: str) -> None:
    """One point with a +- std bar per name (e.g. {"policy": (mean, std), "random": (mean, std)})."""
    values = [m + s for m, s in rows.values()] + [m - s for m, s in rows.values()]
    img, d, py = _frame(title, "", ylabel, min(values), max(values))
    step = (W - L - R) / (len(rows) + 1)
    for i, (name, (m, s)) in enumerate(rows.items()):
        x = L + (i + 1) * step
        d.line([(x, py(m - s)), (x, py(m + s))], fill="black", width=2)
        d.line([(x - 8, py(m - s)), (x + 8, py(m - s))], fill="black")
        d.line([(x - 8, py(m + s)), (x + 8, py(m + s))], fill="black")
        d.ellipse([x - 6, py(m) - 6, x + 6, py(m) + 6], fill="crimson")
        d.text((x - 3 * len(name), H - BOTTOM + 6), name, fill="black")
        d.text((x + 10, py(m) - 6), f"{m:.2f} +- {s:.2f}", fill="black")
    img.save(path)
