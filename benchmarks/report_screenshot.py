"""Looks at a report.html in a real browser: a headless Chromium screenshot, and a check.

  python benchmarks/report_screenshot.py runs/default/report.html --out report.png

Renders the page at 1280 px wide (JavaScript off, as a cautious reader would), saves the
whole page as a PNG, and prints its height and whether anything spills into the page's
right margin (the body is 1,100 px wide, centred: the rightmost 60 px must stay blank).
Needs Debian's `chromium` package (or chromium-browser / google-chrome on PATH); without
one it prints why and exits 0, so a machine without a browser can still run the suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
MARGIN_PX = 60


def browser() -> str | None:
  return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def screenshot(page: str, out: str, *, width: int = 1280, height: int = 8000) -> dict:
  """Renders `page` with headless Chromium into `out` (cropped to the content); returns
  {"height": px, "right_margin_blank": bool}."""
  exe = browser()
  if exe is None:
    raise FileNotFoundError(f"no Chromium found (tried {', '.join(BROWSERS)})")
  with tempfile.TemporaryDirectory() as profile:
    raw = os.path.join(profile, "raw.png")
    cmd = [
      exe,
      "--headless",
      "--no-sandbox",  # root in a container
      "--disable-gpu",
      "--hide-scrollbars",
      "--disable-javascript",
      f"--user-data-dir={profile}",
      f"--window-size={width},{height}",
      f"--screenshot={raw}",
      "file://" + os.path.abspath(page),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    img = np.asarray(Image.open(raw).convert("RGB"))
  ink = np.any(img < 245, axis=2)  # anything not (near) white
  rows = np.flatnonzero(ink.any(axis=1))
  bottom = int(rows[-1]) + 20 if rows.size else img.shape[0]
  Image.fromarray(img[:bottom]).save(out)
  return {"height": bottom, "right_margin_blank": not ink[:bottom, -MARGIN_PX:].any()}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("page", help="a report.html")
  p.add_argument("--out", default="report_screenshot.png", help="where the PNG goes")
  p.add_argument("--width", type=int, default=1280)
  args = p.parse_args(argv)
  if browser() is None:
    print(f"skipped: no Chromium on PATH (tried {', '.join(BROWSERS)}); apt install chromium")
    return 0
  shot = screenshot(args.page, args.out, width=args.width)
  print(
    f"{args.out}: {args.width} x {shot['height']} px; right margin "
    + (
      "blank: nothing overflows" if shot["right_margin_blank"] else "NOT blank: something overflows"
    )
  )
  return 0 if shot["right_margin_blank"] else 1


if __name__ == "__main__":
  sys.exit(main())
