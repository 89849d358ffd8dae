"""Tiny numpy rasteriser for the synthetic domains.

Shapes are given in normalised coordinates (x right, y down, both in [0, 1]) so
one scene description renders at any size. Drawing happens on a float canvas at
`ss` times the output size and is box-filtered down: edges get mild
anti-aliasing while objects stay crisp at 32x32.

Axis legend: H, W canvas pixels (supersampled), C = 3 colour channels.
"""
import functools

import numpy as np

# Everyday colour names shared by all domains (the concept overlap between
# the general world and the target domains).
PALETTE = {
    "red": (215, 35, 35), "blue": (35, 80, 225), "yellow": (250, 215, 30),
    "green": (40, 165, 50), "white": (245, 245, 245), "black": (25, 25, 25),
    "orange": (250, 135, 20), "pink": (245, 125, 185),
    "purple": (135, 45, 175), "brown": (125, 75, 35),
}


@functools.lru_cache(maxsize=16)
def _grid(h: int, w: int):
  """Pixel-centre coordinates of an h x w canvas, normalised to [0, 1]."""
  yy_HW, xx_HW = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w,
                             indexing="ij")
  return yy_HW.astype(np.float32), xx_HW.astype(np.float32)


class Canvas:
  """Float RGB canvas in [0, 255] with alpha-blended primitives."""

  def __init__(self, height: int, width: int | None = None, ss: int = 2):
    width = height if width is None else width
    self.out_hw = (height, width)
    self.ss = ss
    self.rgb_HWC = np.zeros((height * ss, width * ss, 3), np.float32)
    self.yy, self.xx = _grid(height * ss, width * ss)

  # --- fills -------------------------------------------------------------
  def fill(self, color):
    self.rgb_HWC[:] = np.asarray(color, np.float32)

  def vgradient(self, top, bottom, y0=0.0, y1=1.0):
    t = np.clip((self.yy - y0) / max(y1 - y0, 1e-6), 0, 1)[..., None]
    band = ((self.yy >= y0) & (self.yy < y1))[..., None]
    grad = (1 - t) * np.asarray(top, np.float32) + t * np.asarray(bottom, np.float32)
    self.rgb_HWC = np.where(band, grad, self.rgb_HWC)

  def blend(self, mask_HW, color, alpha=1.0):
    a = (np.asarray(mask_HW, np.float32) * alpha)[..., None]
    self.rgb_HWC = self.rgb_HWC * (1 - a) + np.asarray(color, np.float32) * a

  def multiply(self, factor_HW):
    self.rgb_HWC = self.rgb_HWC * np.asarray(factor_HW, np.float32)[..., None]

  # --- masks (return bool/float masks; draw with blend) -------------------
  def ellipse_mask(self, cx, cy, rx, ry):
    return ((self.xx - cx) / rx) ** 2 + ((self.yy - cy) / ry) ** 2 <= 1.0

  def rect_mask(self, x0, y0, x1, y1):
    return (self.xx >= x0) & (self.xx < x1) & (self.yy >= y0) & (self.yy < y1)

  def segment_dist(self, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    t = ((self.xx - x0) * dx + (self.yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9)
    t = np.clip(t, 0, 1)
    return np.hypot(self.xx - (x0 + t * dx), self.yy - (y0 + t * dy))

  def triangle_mask(self, p0, p1, p2):
    def side(a, b):
      return (b[0] - a[0]) * (self.yy - a[1]) - (b[1] - a[1]) * (self.xx - a[0])
    s0, s1, s2 = side(p0, p1), side(p1, p2), side(p2, p0)
    return ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))

  # --- shapes -------------------------------------------------------------
  def ellipse(self, cx, cy, rx, ry, color, alpha=1.0):
    self.blend(self.ellipse_mask(cx, cy, rx, ry), color, alpha)

  def disk(self, cx, cy, r, color, alpha=1.0):
    self.ellipse(cx, cy, r, r, color, alpha)

  def rect(self, x0, y0, x1, y1, color, alpha=1.0):
    self.blend(self.rect_mask(x0, y0, x1, y1), color, alpha)

  def line(self, x0, y0, x1, y1, width, color, alpha=1.0):
    self.blend(self.segment_dist(x0, y0, x1, y1) <= width / 2, color, alpha)

  def triangle(self, p0, p1, p2, color, alpha=1.0):
    self.blend(self.triangle_mask(p0, p1, p2), color, alpha)

  def outline_rect(self, x0, y0, x1, y1, width, color):
    outer = self.rect_mask(x0, y0, x1, y1)
    inner = self.rect_mask(x0 + width, y0 + width, x1 - width, y1 - width)
    self.blend(outer & ~inner, color)

  def to_uint8(self):
    h, w = self.out_hw
    small = self.rgb_HWC.reshape(h, self.ss, w, self.ss, 3).mean(axis=(1, 3))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int):
  """Value noise in [-1, 1]: a cells x cells random grid, bilinearly upsampled."""
  grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
  ys = np.linspace(0, cells, h, dtype=np.float32)
  xs = np.linspace(0, cells, w, dtype=np.float32)
  y0 = np.minimum(ys.astype(int), cells - 1)
  x0 = np.minimum(xs.astype(int), cells - 1)
  fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
  g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
  g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
  return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx
          + g10 * fy * (1 - fx) + g11 * fy * fx)


def shade(color, factor):
  """A darker (<1) or lighter (>1) version of an RGB colour."""
  return tuple(float(min(255.0, c * factor)) for c in color)
