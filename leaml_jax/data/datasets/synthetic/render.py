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
  """Pixel-centre coordinates of an h x w canvas, normalised to [0, 1] (shared, read-only)."""
  yy_HW, xx_HW = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w,
                             indexing="ij")
  yy_HW, xx_HW = yy_HW.astype(np.float32), xx_HW.astype(np.float32)
  yy_HW.flags.writeable = xx_HW.flags.writeable = False
  return yy_HW, xx_HW


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

  # --- shapes: each is blended only inside its bounding box (fast) ---------
  def _box(self, x0, y0, x1, y1):
    """Pixel slices covering [x0, x1] x [y0, y1], plus the sub-grids there."""
    h, w = self.yy.shape
    r0, r1 = max(int(y0 * h), 0), min(int(np.ceil(y1 * h)) + 1, h)
    c0, c1 = max(int(x0 * w), 0), min(int(np.ceil(x1 * w)) + 1, w)
    sl = (slice(r0, max(r0, r1)), slice(c0, max(c0, c1)))
    return sl, self.yy[sl], self.xx[sl]

  def _blend_in(self, sl, mask, color, alpha):
    if alpha == 1.0 and mask.dtype == bool:  # opaque: plain assignment (fast path)
      self.rgb_HWC[sl][mask] = color
      return
    a = (np.asarray(mask, np.float32) * alpha)[..., None]
    self.rgb_HWC[sl] = self.rgb_HWC[sl] * (1 - a) + np.asarray(color, np.float32) * a

  def ellipse(self, cx, cy, rx, ry, color, alpha=1.0):
    if alpha == 1.0:  # opaque: stamp a cached mask (centre snapped to half a pixel)
      h, w = self.yy.shape
      (r0, c0), mask = _ellipse_stamp(cx * w, cy * h, rx * w, ry * h)
      r1, c1 = r0 + mask.shape[0], c0 + mask.shape[1]
      mask = mask[max(-r0, 0):mask.shape[0] - max(r1 - h, 0),
                  max(-c0, 0):mask.shape[1] - max(c1 - w, 0)]
      self.rgb_HWC[max(r0, 0):min(r1, h), max(c0, 0):min(c1, w)][mask] = color
      return
    sl, yy, xx = self._box(cx - rx, cy - ry, cx + rx, cy + ry)
    self._blend_in(sl, ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0, color, alpha)

  def disk(self, cx, cy, r, color, alpha=1.0):
    self.ellipse(cx, cy, r, r, color, alpha)

  def rect(self, x0, y0, x1, y1, color, alpha=1.0):
    sl, yy, xx = self._box(x0, y0, x1, y1)
    self._blend_in(sl, (xx >= x0) & (xx < x1) & (yy >= y0) & (yy < y1), color, alpha)

  def line(self, x0, y0, x1, y1, width, color, alpha=1.0):
    r = width / 2
    sl, yy, xx = self._box(min(x0, x1) - r, min(y0, y1) - r, max(x0, x1) + r, max(y0, y1) + r)
    dx, dy = x1 - x0, y1 - y0
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / max(dx * dx + dy * dy, 1e-9), 0, 1)
    self._blend_in(sl, np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy)) <= r, color, alpha)

  def triangle(self, p0, p1, p2, color, alpha=1.0):
    xs, ys = (p0[0], p1[0], p2[0]), (p0[1], p1[1], p2[1])
    sl, yy, xx = self._box(min(xs), min(ys), max(xs), max(ys))
    def side(a, b):
      return (b[0] - a[0]) * (yy - a[1]) - (b[1] - a[1]) * (xx - a[0])
    s0, s1, s2 = side(p0, p1), side(p1, p2), side(p2, p0)
    inside = ((s0 >= 0) & (s1 >= 0) & (s2 >= 0)) | ((s0 <= 0) & (s1 <= 0) & (s2 <= 0))
    self._blend_in(sl, inside, color, alpha)

  def outline_rect(self, x0, y0, x1, y1, width, color):
    for box in ((x0, y0, x1, y0 + width), (x0, y1 - width, x1, y1),
                (x0, y0, x0 + width, y1), (x1 - width, y0, x1, y1)):
      self.rect(*box, color)

  def to_uint8(self):
    h, w = self.out_hw
    s = self.ss  # box filter as a sum of s*s strided views: faster than a strided mean
    small = sum(self.rgb_HWC[i::s, j::s] for i in range(s) for j in range(s)) * (1.0 / (s * s))
    return np.clip(np.rint(small), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=32)
def _lerp_matrix(n: int, cells: int) -> np.ndarray:
  """[n, cells + 1] linear-interpolation weights from grid knots to n pixels."""
  pos = np.linspace(0, cells, n)
  i0 = np.minimum(pos.astype(int), cells - 1)
  m = np.zeros((n, cells + 1), np.float32)
  m[np.arange(n), i0] = 1 - (pos - i0)
  m[np.arange(n), i0 + 1] = pos - i0
  return m


def _ellipse_stamp(x, y, rx, ry):
  """Top-left pixel and boolean mask of an ellipse centred at pixel coords (x, y)."""
  kx, ky = int(np.floor(x)), int(np.floor(y))
  qx, qy = round((x - kx) * 2) / 2, round((y - ky) * 2) / 2
  return (ky - int(np.ceil(ry)) - 1, kx - int(np.ceil(rx)) - 1), \
      _stamp(round(rx, 3), round(ry, 3), qx, qy)


@functools.lru_cache(maxsize=512)
def _stamp(rx, ry, qx, qy):
  nx, ny = int(np.ceil(rx)) + 1, int(np.ceil(ry)) + 1
  dy = np.arange(-ny, ny + 1)[:, None] + 0.5 - qy
  dx = np.arange(-nx, nx + 1)[None, :] + 0.5 - qx
  return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int):
  """Value noise in [-1, 1]: a cells x cells random grid, bilinearly upsampled."""
  grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
  return _lerp_matrix(h, cells) @ grid @ _lerp_matrix(w, cells).T


def shade(color, factor):
  """A darker (<1) or lighter (>1) version of an RGB colour."""
  return tuple(float(min(255.0, c * factor)) for c in color)
