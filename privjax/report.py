"""The audit report: a JSON-ready summary, a per-image CSV and a picture grid.

Files are written atomically (a temporary file in the same directory, then
`os.replace`), so a crash leaves either the previous complete file or the new one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os

import numpy as np
from PIL import Image, ImageDraw

from privjax.workdir import atomic_write

REPORT_JSON = "report.json"
PER_IMAGE_CSV = "per_image.csv"
GRID_PNG = "reconstructions.png"


@dataclasses.dataclass(frozen=True)
class Report:
  """What an audit found.

  Attributes:
    summary: JSON-ready dict of every metric, the verdict and its reasons, the
      config, versions, devices and timings (see `to_dict`).
    per_image: dict of per-target columns ([N] arrays), in input order.
    originals: [N, H, W, C] the target images.
    reconstructions: [N, H, W, C] the decoder's reconstructions of the targets.
  """

  summary: dict
  per_image: dict
  originals: np.ndarray
  reconstructions: np.ndarray

  @property
  def risk_level(self) -> str:
    return self.summary["risk_level"]

  def to_dict(self) -> dict:
    """Every metric, `ssim_per_image` and the verdict; only JSON-serialisable values."""
    return dict(self.summary)


def per_image_csv(per_image: dict) -> bytes:
  columns = list(per_image)
  n = len(per_image[columns[0]])
  buf = io.StringIO()
  w = csv.writer(buf)
  w.writerow(["index"] + columns)
  for i in range(n):
    row = [i]
    for c in columns:
      v = per_image[c][i]
      row.append(f"{v:.6g}" if isinstance(v, (float, np.floating)) else int(v))
    w.writerow(row)
  return buf.getvalue().encode()


def _tile(img: np.ndarray, scale: int) -> Image.Image:
  x = np.clip(np.asarray(img) * 255.0 + 0.5, 0, 255).astype(np.uint8)
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  return Image.fromarray(x).resize((x.shape[1] * scale, x.shape[0] * scale), Image.NEAREST)


def grid_png(originals, reconstructions, ssim_values, *, per_row: int) -> bytes:
  """Best, median and worst targets by SSIM: originals above their reconstructions."""
  order = np.argsort(-np.asarray(ssim_values), kind="stable")
  n = len(order)
  k = min(per_row, n)
  mid = max(0, n // 2 - k // 2)
  groups = [("best", order[:k]), ("median", order[mid : mid + k]), ("worst", order[n - k :])]
  h, w = originals.shape[1:3]
  scale = max(1, 64 // max(h, w))
  th, tw = h * scale, w * scale
  label_w, pad, text_h = 110, 4, 14
  row_h = 2 * th + text_h + 3 * pad
  canvas = Image.new("RGB", (label_w + k * (tw + pad) + pad, 3 * row_h + pad), "white")
  draw = ImageDraw.Draw(canvas)
  for g, (name, idx) in enumerate(groups):
    y0 = pad + g * row_h
    draw.text((pad, y0 + th // 2), f"{name}\noriginal", fill="black")
    draw.text((pad, y0 + th + pad + th // 2), "reconstruction", fill="black")
    for j, i in enumerate(idx):
      x0 = label_w + j * (tw + pad)
      canvas.paste(_tile(originals[i], scale), (x0, y0))
      canvas.paste(_tile(reconstructions[i], scale), (x0, y0 + th + pad))
      draw.text((x0, y0 + 2 * th + 2 * pad), f"#{i} {ssim_values[i]:.2f}", fill="black")
  buf = io.BytesIO()
  canvas.save(buf, format="PNG")
  return buf.getvalue()


def write(report: Report, workdir: str, *, per_row: int) -> dict:
  """Writes report.json, per_image.csv and reconstructions.png into `workdir` atomically."""
  os.makedirs(workdir, exist_ok=True)
  paths = {name: os.path.join(workdir, name) for name in (REPORT_JSON, PER_IMAGE_CSV, GRID_PNG)}
  atomic_write(paths[PER_IMAGE_CSV], per_image_csv(report.per_image))
  atomic_write(
    paths[GRID_PNG],
    grid_png(report.originals, report.reconstructions, report.per_image["ssim"], per_row=per_row),
  )
  # report.json last: its presence means the whole report was written.
  atomic_write(paths[REPORT_JSON], json.dumps(report.to_dict(), indent=2).encode())
  return paths
