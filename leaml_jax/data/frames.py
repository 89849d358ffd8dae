"""Images and clip frames: resize, JPEG, uniform frame sampling (PyAV), and how several
frames reach the model.

A clip is stored as one image, its N frames stacked top to bottom (a "strip",
[N*H, W, 3]); `arrange` turns it into what the model sees, per config.data.frames:
  tile    one image [S, S, 3]: the frames on a grid (ceil(sqrt(N)) columns, row-major,
          frame 0 top-left), each frame S // grid_side square; unused cells black.
  blocks  [N, S, S, 3]: one image-token block per frame.
"""
import io
import math

import numpy as np
from PIL import Image

FRAME_MODES = ("tile", "blocks")


def resize(image: np.ndarray, size) -> np.ndarray:
  """uint8 [H, W, 3] -> [size, size, 3], or [height, width, 3] for size = (height, width): squashed,
  PIL bicubic (as PaliGemma's and Qwen's image processors resize)."""
  image = np.asarray(image, np.uint8)
  h, w = (size, size) if np.ndim(size) == 0 else (int(x) for x in size)
  if image.shape[:2] == (h, w):
    return image
  return np.asarray(Image.fromarray(image).resize((w, h), Image.BICUBIC), np.uint8)


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="JPEG", quality=quality)
  return buf.getvalue()


def decode_resized(data: bytes, size: int) -> np.ndarray:
  """Encoded image bytes -> uint8 [size, size, 3]; PIL's errors for bad bytes propagate."""
  with Image.open(io.BytesIO(data)) as im:
    im.load()
    return resize(np.asarray(im.convert("RGB"), np.uint8), size)


def to_strip(frames) -> np.ndarray:
  """[N, H, W, 3] -> [N*H, W, 3]."""
  frames = np.asarray(frames, np.uint8)
  return frames.reshape(-1, *frames.shape[2:])


def from_strip(image: np.ndarray, num_frames: int) -> np.ndarray:
  """[N*H, W, 3] -> [N, H, W, 3]."""
  if image.shape[0] % num_frames:
    raise ValueError(f"image of height {image.shape[0]} is not a strip of {num_frames} frames")
  return image.reshape(num_frames, image.shape[0] // num_frames, *image.shape[1:])


def grid_side(num_frames: int) -> int:
  return math.ceil(math.sqrt(num_frames))


def tile(frames, size: int) -> np.ndarray:
  """[N, H, W, 3] -> [size, size, 3]: the frames on a grid_side(N)^2 grid."""
  side = grid_side(len(frames))
  cell = size // side
  out = np.zeros((size, size, 3), np.uint8)
  for k, frame in enumerate(frames):
    r, c = divmod(k, side)
    out[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = resize(frame, cell)
  return out


def arrange(image: np.ndarray, num_frames: int, mode: str, size: int) -> np.ndarray:
  """A stored strip of `num_frames` frames -> [size, size, 3] (tile) or [N, size, size, 3]
  (blocks). A single frame stays one [size, size, 3] image in both modes."""
  if mode not in FRAME_MODES:
    raise ValueError(f"config.data.frames={mode!r} must be one of {FRAME_MODES}")
  if num_frames <= 1:
    return resize(image, size)
  frames = from_strip(image, num_frames)
  if mode == "tile":
    return tile(frames, size)
  return np.stack([resize(f, size) for f in frames])


# ----------------------------------------------------------------------------- video
def sample_indices(total: int, num: int) -> np.ndarray:
  """`num` frame indices spread uniformly over `total` frames: the centre of each of
  `num` equal segments (indices repeat when the clip is shorter than `num`)."""
  if total <= 0:
    raise ValueError("the clip has no video frames")
  return ((np.arange(num) + 0.5) * total / num).astype(np.int64)


def _decode_at(path: str, indices, size: int) -> list:
  import av  # pylint: disable=import-outside-toplevel
  wanted, found = set(int(i) for i in indices), {}
  last = max(wanted)
  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for i, frame in enumerate(container.decode(stream)):
      if i in wanted:
        found[i] = frame.to_ndarray(format="rgb24", width=size, height=size)
      if i >= last:
        break
  return [found[i] for i in indices if i in found]


def _count_frames(path: str) -> int:
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path) as container:
    return sum(1 for _ in container.decode(video=0))


def sample_video(path: str, num_frames: int, size: int) -> np.ndarray:
  """`num_frames` frames sampled uniformly from a video file -> uint8 [N, size, size, 3].

  The frame count comes from the container's metadata; when that is missing or wrong
  (fewer frames decode than it claims) the frames are counted by decoding. Unreadable
  files raise (av.error.* / ValueError)."""
  import av  # pylint: disable=import-outside-toplevel
  with av.open(path) as container:
    if not container.streams.video:
      raise ValueError("no video stream")
    total = container.streams.video[0].frames
  frames = _decode_at(path, sample_indices(total, num_frames), size) if total else []
  if len(frames) < num_frames:
    frames = _decode_at(path, sample_indices(_count_frames(path), num_frames), size)
  return np.stack(frames)
