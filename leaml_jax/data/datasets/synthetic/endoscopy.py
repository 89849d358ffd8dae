"""synthetic_endoscopy: looks and reads like GI endoscopy (Kvasir-VQA-like).

Pink/orange mucosa texture with folds, vignetting and specular highlights;
findings (polyp, ulcer, inflammation), instruments, the green scope-guide box.
Question types follow Kvasir-VQA: yes_no, count, color, location,
single_choice, multiple_choice (several answers joined with "; ", sorted).
Every QA's category is the image's class: normal / polyp / inflammation /
instrument.
"""
import numpy as np

from leaml_jax.data.datasets.synthetic import render
from leaml_jax.data.datasets.synthetic.qa_common import (GRID_LOCATIONS, NUMBER_WORDS, Teller,
                                                         Template, grid_cell_center, join_multi)

NUM_FRAMES = 1  # still images
CATEGORIES = ("normal", "polyp", "inflammation", "instrument")
CATEGORY_P = (0.15, 0.35, 0.2, 0.3)  # roughly balances the yes/no and count answers
PROCEDURES = ("colonoscopy", "gastroscopy")
LESION_KINDS = ("polyp", "ulcer", "inflammation")
# Each kind has its own colours, so at 32 px a finding's kind is visible from its colour as well
# as its shape (polyp and inflammation both red made "Is there a polyp?" unlearnable: 42% at
# 100% labels).
LESION_COLORS = {"polyp": ("red", "pink"), "ulcer": ("white", "yellow"),
                 "inflammation": ("purple", "blue")}
COLORS = ("blue", "pink", "purple", "red", "white", "yellow")
POLYP_SIZES = ("<5mm", "5-10mm", "11-20mm")
POLYP_RADIUS = {"<5mm": 0.075, "5-10mm": 0.11, "11-20mm": 0.155}
LESION_RGB = {("polyp", "red"): (175, 25, 40), ("polyp", "pink"): (255, 175, 215),
              ("ulcer", "white"): (250, 250, 240), ("ulcer", "yellow"): (245, 215, 60),
              ("inflammation", "purple"): (120, 30, 130),
              ("inflammation", "blue"): (55, 60, 165)}
TISSUE_RGB = {"colonoscopy": (225, 125, 115), "gastroscopy": (215, 100, 60)}

TEMPLATES = (
    Template("has_polyp", "Is there a polyp?", "yes_no", "easy", ("no", "yes")),
    Template("has_instrument", "Are there any instruments in the image?", "yes_no",
             "easy", ("no", "yes")),
    Template("has_box", "Is there a green/black box artefact?", "yes_no", "easy",
             ("no", "yes")),
    Template("n_polyps", "How many polyps are in the image?", "count", "medium",
             ("0", "1", "2", "3")),
    Template("n_instruments", "How many instruments are in the image?", "count",
             "medium", ("0", "1", "2")),
    Template("abn_color", "What color is the abnormality?", "color", "medium", COLORS,
             multi=True),
    Template("abn_where", "Where in the image is the abnormality?", "location", "hard",
             GRID_LOCATIONS, multi=True),
    Template("instr_where", "Where in the image is the instrument?", "location", "hard",
             GRID_LOCATIONS, multi=True),
    Template("polyp_size", "What is the size of the polyp?", "single_choice", "medium",
             POLYP_SIZES),
    Template("procedure", "What type of procedure is the image taken from?",
             "single_choice", "easy", PROCEDURES),
    Template("findings", "Are there any abnormalities in the image? Check all that are "
             "present.", "multiple_choice", "hard", LESION_KINDS + ("none",), multi=True),
)

# The generic teacher lacks the clinical words; it paraphrases instead.
TEACHER_WORDS = {"polyp": ("bump", "bumps"), "ulcer": ("sore", "sores"),
                 "inflammation": ("patch", "patches")}
TEACHER_SIZE = {"<5mm": "tiny", "5-10mm": "small", "11-20mm": "large"}
TEACHER_TISSUE = {"colonoscopy": "a pink tunnel wall", "gastroscopy": "an orange wrinkled wall"}
TEACHER_LOC = dict(zip(GRID_LOCATIONS, (
    "top left", "top", "top right", "left", "middle", "right",
    "bottom left", "bottom", "bottom right")))
TEACHER_MISSING_TERMS = ("polyp", "ulcer", "inflammation", "abnormal", "instrument",
                         "forceps", "colonoscopy", "gastroscopy", "artefact", "mm",
                         "lesion", "mucosa")


def sample_facts(rng: np.random.Generator) -> dict:
  category = CATEGORIES[rng.choice(4, p=CATEGORY_P)]
  box = bool(rng.random() < 0.5)
  free = [c for c in GRID_LOCATIONS if not (box and c == "lower-left")]
  instruments = []
  if category == "instrument":
    for _ in range(2 if rng.random() < 0.25 else 1):
      cell = free.pop(rng.integers(len(free)))
      instruments.append({"location": cell, "edge": ("right", "bottom", "left")[rng.integers(3)]})
  kinds = []
  if category == "polyp":
    kinds = ["polyp"] * int(rng.choice(3, p=(0.6, 0.3, 0.1)) + 1)
  elif category == "instrument" and rng.random() < 0.6:  # e.g. a polypectomy
    kinds = ["polyp"]
  elif category == "inflammation":
    kinds = [("ulcer", "inflammation")[rng.integers(2)] for _ in range(rng.integers(1, 3))]
  colors = {k: LESION_COLORS[k][rng.integers(2)] for k in LESION_KINDS}
  size = POLYP_SIZES[rng.integers(3)]
  lesions = []
  for kind in kinds:
    cell = free.pop(rng.integers(len(free)))
    lesions.append({"kind": kind, "color": colors[kind], "location": cell,
                    "size": size if kind == "polyp" else None})
  return {"category": category, "procedure": PROCEDURES[rng.integers(2)],
          "lesions": lesions, "instruments": instruments, "green_box": box}


def render_image(facts: dict, size: int, rng: np.random.Generator) -> np.ndarray:
  cv = render.Canvas(size)
  h = size * cv.ss
  base = np.asarray(TISSUE_RGB[facts["procedure"]], np.float32)
  cv.fill(base)
  tex = 1 + 0.10 * render.smooth_noise(rng, h, h, 3) + 0.05 * render.smooth_noise(rng, h, h, 9)
  cv.multiply(tex)
  warp = render.smooth_noise(rng, h, h, 4)
  if facts["procedure"] == "colonoscopy":  # dark lumen with ring folds around it
    lx, ly = rng.uniform(0.3, 0.7, 2)
    r = np.hypot(cv.xx - lx, cv.yy - ly)
    cv.multiply(1 - 0.25 * (np.abs(np.sin(r * 20 + 1.5 * warp)) < 0.3))
    cv.blend(np.clip(1.2 - r / 0.12, 0, 1), (45, 10, 12))
  else:  # gastric rugae: thick wavy folds
    angle = rng.uniform(0, np.pi)
    u = np.cos(angle) * cv.xx + np.sin(angle) * cv.yy
    cv.multiply(1 - 0.3 * (np.abs(np.sin(2 * np.pi * (3.5 * u + 0.35 * warp))) < 0.35))
  for ins in facts["instruments"]:
    _draw_instrument(cv, ins, rng)
  for les in facts["lesions"]:
    _draw_lesion(cv, les, rng)
  for _ in range(rng.integers(1, 4)):  # wet-tissue specular highlights
    cv.disk(rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.012, 0.022),
            (255, 255, 255), alpha=0.85)
  r = np.hypot(cv.xx - 0.5, cv.yy - 0.5)
  cv.multiply(np.clip(1.25 - 1.3 * r, 0.25, 1.0))  # vignetting
  if facts["green_box"]:
    cv.rect(0.0, 0.72, 0.28, 1.0, (10, 25, 10))
    cv.outline_rect(0.0, 0.72, 0.28, 1.0, 0.035, (40, 220, 60))
    cv.line(0.07, 0.93, 0.2, 0.8, 0.035, (40, 220, 60))
  return cv.to_uint8()


def _jitter(rng, loc, radius):
  cx, cy = grid_cell_center(loc)
  room = max(1 / 6 - radius - 0.02, 0.0)
  return cx + rng.uniform(-room, room), cy + rng.uniform(-room, room)


def _draw_lesion(cv, les, rng):
  rgb = LESION_RGB[(les["kind"], les["color"])]
  if les["kind"] == "polyp":
    r = POLYP_RADIUS[les["size"]]
    x, y = _jitter(rng, les["location"], r)
    cv.disk(x + 0.015, y + 0.02, r + 0.03, (70, 15, 25), alpha=0.8)  # rim + shadow
    cv.disk(x, y, r, rgb)
    cv.disk(x - r * 0.35, y - r * 0.35, max(r * 0.25, 0.02), (255, 255, 255), alpha=0.8)
  elif les["kind"] == "ulcer":
    rx, ry = rng.uniform(0.08, 0.12, 2)
    x, y = _jitter(rng, les["location"], max(rx, ry))
    cv.ellipse(x, y, rx + 0.03, ry + 0.03, (160, 15, 25))  # inflamed rim
    cv.ellipse(x, y, rx, ry, rgb)
  else:
    r = rng.uniform(0.12, 0.15)
    x, y = _jitter(rng, les["location"], r * 0.8)
    blotch = np.clip(2.0 - 1.6 * np.hypot(cv.xx - x, cv.yy - y) / r, 0, 1)
    cv.blend(blotch * (0.85 + 0.15 * render.smooth_noise(rng, *cv.xx.shape, 6)), rgb)


def _draw_instrument(cv, ins, rng):
  tx, ty = _jitter(rng, ins["location"], 0.08)
  # The shaft enters from the image border nearest its tip (the named edge
  # breaks ties for the centre cell), so the tool lies mostly in its own cell.
  dists = {"left": tx, "right": 1 - tx, "top": ty, "bottom": 1 - ty}
  edge = ins["edge"] if abs(tx - 0.5) < 0.17 and abs(ty - 0.5) < 0.17 else \
      min(dists, key=dists.get)
  slant = rng.uniform(-0.12, 0.12)
  sx, sy = {"right": (1.05, ty + slant), "left": (-0.05, ty + slant),
            "bottom": (tx + slant, 1.05), "top": (tx + slant, -0.05)}[edge]
  cv.line(sx, sy, tx, ty, 0.11, (50, 55, 60))
  cv.line(sx, sy, tx, ty, 0.075, (200, 205, 210))
  d = np.array([tx - sx, ty - sy]) / max(np.hypot(tx - sx, ty - sy), 1e-6)
  n = np.array([-d[1], d[0]])
  for s in (1, -1):  # open forceps jaws
    jx, jy = np.array([tx, ty]) + 0.07 * d + s * 0.04 * n
    cv.line(tx, ty, jx, jy, 0.035, (70, 75, 80))


def qa_candidates(facts: dict, rng: np.random.Generator):
  del rng  # every applicable template is deterministic given the facts
  les, ins = facts["lesions"], facts["instruments"]
  polyps = [x for x in les if x["kind"] == "polyp"]
  cat = facts["category"]
  yn = lambda b: "yes" if b else "no"
  out = [("has_polyp", {}, yn(polyps), None, cat),
         ("has_instrument", {}, yn(ins), None, cat),
         ("has_box", {}, yn(facts["green_box"]), None, cat),
         ("n_polyps", {}, str(len(polyps)), None, cat),
         ("n_instruments", {}, str(len(ins)), None, cat),
         ("procedure", {}, facts["procedure"], None, cat),
         ("findings", {}, join_multi(x["kind"] for x in les) if les else "none", None, cat)]
  if les:
    out.append(("abn_color", {}, join_multi(x["color"] for x in les), None, cat))
    out.append(("abn_where", {}, join_multi(x["location"] for x in les), None, cat))
  if ins:
    out.append(("instr_where", {}, join_multi(x["location"] for x in ins), None, cat))
  if polyps:
    out.append(("polyp_size", {}, polyps[0]["size"], None, cat))
  return out


def _listing(words):
  return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def caption(facts: dict, rng: np.random.Generator, error_rate: float, teller=None):
  """E.g. 'a pink tunnel wall with two small red bumps at top left and middle,
  a metal tool at right and a green square in the corner.'"""
  t = teller or Teller(rng, error_rate)
  tissue = TEACHER_TISSUE[t.say("procedure", facts["procedure"], PROCEDURES)]
  parts = []
  for kind in LESION_KINDS:
    group = [x for x in facts["lesions"] if x["kind"] == kind]
    if not group:
      continue
    said_kind = t.say("kind", kind, LESION_KINDS)
    n = t.say("count", len(group), (1, 2, 3))
    words = [NUMBER_WORDS[n] if n > 1 else "a"]
    if kind == "polyp":
      words.append(TEACHER_SIZE[t.say("size", group[0]["size"], POLYP_SIZES)])
    words.append(t.say("color", group[0]["color"], COLORS))
    words.append(TEACHER_WORDS[said_kind][n > 1])
    locs = [TEACHER_LOC[t.say("location", x["location"], GRID_LOCATIONS)] for x in group]
    parts.append(" ".join(words) + " at " + _listing(locs))
  if facts["instruments"]:
    n = t.say("instrument_count", len(facts["instruments"]), (1, 2))
    locs = [TEACHER_LOC[t.say("location", x["location"], GRID_LOCATIONS)]
            for x in facts["instruments"]]
    parts.append(("a metal tool" if n == 1 else "two metal tools") + " at " + _listing(locs))
  if t.say("green_box", facts["green_box"], (False, True)):
    parts.append("a green square in the corner")
  if not parts:
    return f"{tissue}, smooth and clean.", t.claims
  return f"{tissue} with {_listing(parts)}.", t.claims
