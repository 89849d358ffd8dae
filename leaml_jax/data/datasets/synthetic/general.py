"""synthetic_general: bright everyday scenes (sky, ground, houses, trees, cars,
balls, flowers) with everyday wording. The demo's base model is pre-trained here."""
import numpy as np

from leaml_jax.data.datasets.synthetic import render
from leaml_jax.data.datasets.synthetic.qa_common import Teller, Template, article

NUM_FRAMES = 1  # still images
KINDS = ("house", "tree", "car", "ball", "flower")
KIND_COLORS = {
    "house": ("red", "blue", "yellow", "white", "brown"),
    "tree": ("green", "orange", "yellow"),
    "car": ("red", "blue", "yellow", "black", "white", "green"),
    "ball": ("red", "blue", "yellow", "orange", "pink", "purple"),
    "flower": ("red", "pink", "yellow", "purple", "white"),
}
COLORS = tuple(sorted({c for cs in KIND_COLORS.values() for c in cs}))
POSITIONS = ("left", "middle", "right")
GROUNDS = ("grass", "road", "sand", "snow")
GROUND_RGB = {"grass": (70, 160, 60), "road": (110, 110, 115),
              "sand": (225, 200, 140), "snow": (235, 240, 250)}
GROUND_COLOR_NAME = {"grass": "green", "road": "black", "sand": "yellow", "snow": "white"}
TIMES = ("day", "night")

_K = (("kind", KINDS),)
TEMPLATES = (
    Template("has_kind", "Is there a {kind}?", "yes_no", "easy", ("no", "yes"), _K),
    Template("n_objects", "How many objects are there?", "count", "easy", ("1", "2", "3")),
    Template("n_kind", "How many {kind}s are there?", "count", "medium",
             ("0", "1", "2", "3"), _K),
    Template("kind_color", "What color is the {kind}?", "color", "easy", COLORS, _K),
    Template("kind_where", "Where is the {kind}?", "location", "medium", POSITIONS, _K),
    Template("what_at", "What is {where}?", "object", "medium", KINDS + ("nothing",),
             (("where", ("on the left", "in the middle", "on the right")),)),
    Template("day_night", "Is it day or night?", "scene", "easy", TIMES),
    Template("ground", "What is the ground?", "scene", "easy", GROUNDS),
)
TEACHER_MISSING_TERMS = ()  # the teacher knows everyday words


def sample_facts(rng: np.random.Generator) -> dict:
  ground = GROUNDS[rng.integers(len(GROUNDS))]
  n = int(rng.integers(1, 4))
  slots = sorted(rng.choice(3, n, replace=False).tolist())
  objects = []
  for s in slots:
    kind = KINDS[rng.integers(len(KINDS))]
    colors = [c for c in KIND_COLORS[kind] if c != GROUND_COLOR_NAME[ground]]
    objects.append({"kind": kind, "color": colors[rng.integers(len(colors))],
                    "position": POSITIONS[s]})
  return {"time": TIMES[rng.integers(2)], "ground": ground, "objects": objects}


def render_image(facts: dict, size: int, rng: np.random.Generator) -> np.ndarray:
  cv = render.Canvas(size)
  horizon = 0.55 + rng.uniform(-0.05, 0.05)
  if facts["time"] == "day":
    cv.vgradient((110, 175, 245), (190, 225, 255), 0, horizon)
    cv.disk(rng.uniform(0.1, 0.9), 0.12, 0.07, (255, 235, 90))
  else:
    cv.vgradient((10, 15, 50), (35, 40, 90), 0, horizon)
    cv.disk(rng.uniform(0.1, 0.9), 0.12, 0.06, (235, 235, 210))
  g = np.asarray(GROUND_RGB[facts["ground"]], np.float32)
  if facts["time"] == "night":
    g = g * 0.55
  cv.rect(0, horizon, 1, 1, g)
  if facts["ground"] == "road":
    cv.rect(0, 0.84, 1, 0.87, (230, 230, 230) if facts["time"] == "day" else (140,) * 3)
  dim = 1.0 if facts["time"] == "day" else 0.7
  for obj in facts["objects"]:
    cx = (POSITIONS.index(obj["position"]) + 0.5) / 3 + rng.uniform(-0.04, 0.04)
    _draw_object(cv, obj["kind"], render.shade(render.PALETTE[obj["color"]], dim), cx,
                 base=0.9, dim=dim)
  return cv.to_uint8()


def _draw_object(cv, kind, color, cx, base, dim):
  dark = render.shade((40, 30, 25), dim)
  if kind == "house":
    cv.rect(cx - 0.13, base - 0.26, cx + 0.13, base, color)
    cv.triangle((cx - 0.16, base - 0.25), (cx + 0.16, base - 0.25), (cx, base - 0.42),
                render.shade((150, 40, 30), dim) if color != render.PALETTE["red"]
                else render.shade((90, 30, 20), dim))
    cv.rect(cx - 0.04, base - 0.12, cx + 0.04, base, dark)
  elif kind == "tree":
    cv.rect(cx - 0.035, base - 0.22, cx + 0.035, base, render.shade((110, 65, 30), dim))
    cv.disk(cx, base - 0.33, 0.15, color)
  elif kind == "car":
    cv.rect(cx - 0.15, base - 0.17, cx + 0.15, base - 0.05, color)
    cv.rect(cx - 0.08, base - 0.27, cx + 0.08, base - 0.16, color)
    cv.rect(cx - 0.06, base - 0.25, cx + 0.06, base - 0.18, render.shade((170, 210, 240), dim))
    cv.disk(cx - 0.09, base - 0.04, 0.05, (20, 20, 20))
    cv.disk(cx + 0.09, base - 0.04, 0.05, (20, 20, 20))
  elif kind == "ball":
    cv.disk(cx, base - 0.13, 0.13, color)
    cv.disk(cx - 0.04, base - 0.17, 0.035, render.shade((255, 255, 255), dim), alpha=0.6)
  elif kind == "flower":
    cv.line(cx, base, cx, base - 0.22, 0.035, render.shade((40, 140, 40), dim))
    for dx, dy in ((-0.07, 0), (0.07, 0), (0, -0.07), (0, 0.07)):
      cv.disk(cx + dx, base - 0.3 + dy, 0.065, color)
    cv.disk(cx, base - 0.3, 0.045, render.shade((250, 200, 40), dim)
            if color != render.PALETTE["yellow"] else render.shade((140, 80, 20), dim))


def qa_candidates(facts: dict, rng: np.random.Generator):
  """(template_key, slot values, answer, options, category) per applicable template."""
  objs = facts["objects"]
  kinds = [o["kind"] for o in objs]
  unique = [k for k in KINDS if kinds.count(k) == 1]
  out = []
  present = rng.random() < 0.5
  pool = sorted(set(kinds)) if present else [k for k in KINDS if k not in kinds]
  k = pool[rng.integers(len(pool))]
  out.append(("has_kind", {"kind": k}, "yes" if k in kinds else "no", None, k))
  out.append(("n_objects", {}, str(len(objs)), None, "objects"))
  k = KINDS[rng.integers(len(KINDS))] if rng.random() < 0.3 else kinds[rng.integers(len(kinds))]
  out.append(("n_kind", {"kind": k}, str(kinds.count(k)), None, k))
  if unique:
    for key, attr in (("kind_color", "color"), ("kind_where", "position")):
      kind = unique[rng.integers(len(unique))]
      o = next(o for o in objs if o["kind"] == kind)
      out.append((key, {"kind": kind}, o[attr], None, kind))
  pos = POSITIONS[rng.integers(3)]
  at = [o["kind"] for o in objs if o["position"] == pos]
  where = "in the middle" if pos == "middle" else f"on the {pos}"
  out.append(("what_at", {"where": where}, at[0] if at else "nothing", None, "objects"))
  out.append(("day_night", {}, facts["time"], None, "scene"))
  out.append(("ground", {}, facts["ground"], None, "scene"))
  return out


def caption(facts: dict, rng: np.random.Generator, error_rate: float, teller=None):
  """E.g. 'a red car on the left and a green tree on the right, on grass by day.'"""
  t = teller or Teller(rng, error_rate)
  parts = []
  for o in facts["objects"]:
    color = t.say("color", o["color"], COLORS)
    kind = t.say("kind", o["kind"], KINDS)
    pos = t.say("position", o["position"], POSITIONS)
    parts.append(f"{article(color)} {color} {kind} {'in the' if pos == 'middle' else 'on the'} {pos}")
  listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
  ground = t.say("ground", facts["ground"], GROUNDS)
  time = t.say("time", facts["time"], TIMES)
  text = f"{listed}, on {ground} by {time}."
  return text, t.claims
