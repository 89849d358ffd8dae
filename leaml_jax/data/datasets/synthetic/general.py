"""synthetic_general: the everyday world the demo's base model is pre-trained on.

Outdoor scenes seen from the side (sky above, grass / road / sand / snow below, by day or night)
in everyday words, as still pictures and as 4-frame clips, half each:
  stills  people (in shirts of one colour), dogs, balls, cars, trees on the ground, balloons and
          birds in the sky, each in one cell of a 3x3 grid (upper-left ... lower-right).
  clips   two groups of people (shirt colours) and one ball: the person holding it at the start
          gives it to a friend (same colour), loses it (someone in the other colour gets it), runs
          with it, or kicks it away (nobody has it at the end); the ball moves left, right, up
          or down. Stored as the target clips are: a vertical strip of NUM_FRAMES frames
          ([4*S, S, 3], frame 0 on top) with facts["num_frames"]; stills have num_frames 1.
So every kind of question the target domains ask has an everyday counterpart here: presence,
counting (overall and per shirt colour), colour, grid location, listing what is there, the
scene, which way the ball moves, who holds it at the start / end, what the holder does.
Answers are free text (no options); several answers are joined with "; " (sorted).
"""
import functools

import numpy as np

from leaml_jax.data.datasets.synthetic import render
from leaml_jax.data.datasets.synthetic.qa_common import (GRID_LOCATIONS, GRID_NAMES, NUMBER_WORDS,
                                                         Teller, Template, article,
                                                         grid_cell_center, join_multi)

NUM_FRAMES = 4          # clips; stills are one frame (facts["num_frames"] == 1)
CLIP_SHARE = 0.5
GROUNDS = ("grass", "road", "sand", "snow")
GROUND_RGB = {"grass": (70, 160, 60), "road": (110, 110, 115),
              "sand": (225, 200, 140), "snow": (235, 240, 250)}
GROUND_COLOR_NAME = {"grass": "green", "road": "black", "sand": "yellow", "snow": "white"}
SKY_COLOR_NAME = {"day": "blue", "night": "black"}  # sky things never take the sky's colour
TIMES = ("day", "night")
SHIRT_COLORS = ("red", "blue", "yellow", "green", "white", "black", "orange", "pink", "purple")
GROUND_KINDS = ("person", "dog", "ball", "car", "tree")
GROUND_KIND_P = (0.4, 0.15, 0.15, 0.15, 0.15)  # people often, so groups of shirt colours form
SKY_KINDS = ("balloon", "bird")
MAX_OBJECTS = 3  # per still: its caption stays within 32 tokens
KINDS = GROUND_KINDS + SKY_KINDS
PLURALS = dict(zip(KINDS, ("people", "dogs", "balls", "cars", "trees", "balloons", "birds")))
KIND_COLORS = {
    "person": SHIRT_COLORS, "dog": ("brown", "black", "white", "yellow"),
    "ball": ("red", "blue", "yellow", "orange", "pink", "purple", "white", "green"),
    "car": ("red", "blue", "yellow", "black", "white", "green"),
    "tree": ("green", "orange", "yellow"),
    "balloon": ("red", "blue", "yellow", "green", "orange", "pink", "purple"),
    "bird": ("black", "white", "blue", "red")}
COLORS = tuple(sorted({c for cs in KIND_COLORS.values() for c in cs}))
COLOR_KINDS = tuple(k for k in KINDS if k != "person")  # people are asked by shirt colour
DIRECTIONS = ("left", "right", "up", "down")
ACTIONS = ("gives", "loses", "runs", "kicks")
ACTION_ANSWER = {"gives": "gives it to a friend", "loses": "loses it", "runs": "runs with it",
                 "kicks": "kicks it away"}
ACTION_CAPTION = {"gives": "gives the ball to a friend", "loses": "loses the ball",
                  "runs": "runs with the ball", "kicks": "kicks the ball away"}
COUNTS = tuple(str(i) for i in range(6))

TEMPLATES = (
    Template("has_kind", "Is there a {kind}?", "presence", "easy", ("no", "yes"),
             (("kind", KINDS),)),
    Template("n_kind", "How many {kinds} are there?", "count", "easy", COUNTS,
             (("kinds", tuple(PLURALS.values())),)),
    Template("n_wear", "How many people wear {color}?", "group_count", "medium", COUNTS[:4],
             (("color", SHIRT_COLORS),)),
    Template("kind_color", "What color is the {kind}?", "color", "easy", COLORS,
             (("kind", COLOR_KINDS),)),
    Template("kind_where", "Where is the {kind}?", "location", "medium", GRID_LOCATIONS,
             (("kind", KINDS),)),
    Template("in_sky", "What is in the sky?", "objects", "medium", SKY_KINDS + ("nothing",),
             multi=True),
    Template("day_night", "Is it day or night?", "scene", "easy", TIMES),
    Template("ground", "What is the ground?", "scene", "easy", GROUNDS),
    Template("direction", "Which way does the ball move?", "direction", "hard", DIRECTIONS),
    Template("start_holder", "Who has the ball at the start?", "holder", "medium", SHIRT_COLORS),
    Template("end_holder", "Who has the ball at the end?", "holder", "medium",
             SHIRT_COLORS + ("nobody",)),
    Template("action", "What does the person with the ball do?", "action", "hard",
             tuple(ACTION_ANSWER.values())),
)
TEACHER_MISSING_TERMS = ()  # the teacher knows everyday words

# Geometry, in frame units (x right, y down). People stand in PEOPLE_BOX (their body centre);
# the ball a person holds sits at HAND from the body, on the side the person faces.
PEOPLE_BOX = ((0.14, 0.46), (0.86, 0.8))
HAND = (0.11, 0.03)
BALL_R = 0.085
SKIN = (230, 185, 145)
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def _colors_for(kind, ground, time, rng, exclude=()):
  clash = SKY_COLOR_NAME[time] if kind in SKY_KINDS else GROUND_COLOR_NAME[ground]
  pool = [c for c in KIND_COLORS[kind] if c != clash and c not in exclude]
  return pool[rng.integers(len(pool))]


def sample_facts(rng: np.random.Generator) -> dict:
  scene = {"time": TIMES[rng.integers(2)], "ground": GROUNDS[rng.integers(len(GROUNDS))],
           "horizon": round(float(rng.uniform(0.27, 0.31)), 3)}
  if rng.random() < CLIP_SHARE:
    return {"num_frames": NUM_FRAMES, **scene, **_sample_clip(rng, scene)}
  return {"num_frames": 1, **scene, "objects": _sample_objects(rng, scene)}


def _sample_objects(rng, scene) -> list[dict]:
  n_ground = int(rng.choice(3, p=(0.3, 0.4, 0.3))) + 1
  n_sky = min(int(rng.choice(3, p=(0.4, 0.45, 0.15))), MAX_OBJECTS - n_ground)
  ground_cells = [c for row in GRID_NAMES[1:] for c in row]
  cells = ([ground_cells[i] for i in rng.choice(6, n_ground, replace=False)]
           + [GRID_NAMES[0][i] for i in rng.choice(3, n_sky, replace=False)])
  objects = []
  for k, cell in enumerate(cells):
    kind = (GROUND_KINDS[rng.choice(len(GROUND_KINDS), p=GROUND_KIND_P)] if k < n_ground
            else SKY_KINDS[rng.integers(2)])
    x, y = np.asarray(grid_cell_center(cell)) + rng.uniform(-0.03, 0.03, 2)
    objects.append({"kind": kind, "color": _colors_for(kind, scene["ground"], scene["time"], rng),
                    "cell": cell, "xy": [round(float(x), 4), round(float(y), 4)]})
  return sorted(objects, key=lambda o: GRID_LOCATIONS.index(o["cell"]))


def _hand(facing: int) -> np.ndarray:
  return np.array([HAND[0] * facing, HAND[1]])


def _sample_clip(rng, scene) -> dict:
  action, direction = ACTIONS[rng.integers(4)], DIRECTIONS[rng.integers(4)]
  cx = _colors_for("person", scene["ground"], scene["time"], rng)
  cy = _colors_for("person", scene["ground"], scene["time"], rng, exclude=(cx,))
  nx, ny = (2 if action == "gives" else int(rng.integers(1, 3))), int(rng.integers(1, 3))
  u = np.asarray(_UNIT[direction], float)
  horizontal = direction in ("left", "right")
  facing = int(u[0]) if horizontal else int(rng.choice((-1, 1)))
  (x0, y0), (x1, y1) = PEOPLE_BOX
  t = np.linspace(0, 1, NUM_FRAMES)[:, None]
  if action == "kicks":  # the ball flies far, to the frame's edge or up into the sky
    lo, hi = {"right": ((x0, y0), (0.42, y1)), "left": ((0.58, y0), (x1, y1)),
              "up": ((x0, y0), (x1, y1)), "down": ((x0, y0), (x1, 0.58))}[direction]
    actor = rng.uniform(lo, hi)
    start = actor + _hand(facing)
    end = {"right": (0.96, start[1]), "left": (0.04, start[1]), "up": (start[0], 0.1),
           "down": (start[0], 0.96)}[direction] + rng.uniform(-0.04, 0.04, 2) * u[::-1]
    people, ball = [(cx, np.repeat(actor[None], NUM_FRAMES, 0), facing)], start + t * (end - start)
  else:
    # Up or down, the other person stands a little to the side, not hidden behind.
    length, aside = ((rng.uniform(0.55, 0.68), rng.uniform(-0.04, 0.04)) if horizontal else
                     (rng.uniform(0.26, 0.32), rng.choice((-1, 1)) * rng.uniform(0.08, 0.14)))
    move = u * length + np.abs(u[::-1]) * aside
    lo, hi = np.maximum((x0, y0), np.subtract((x0, y0), move)), np.minimum((x1, y1),
                                                                        np.subtract((x1, y1), move))
    actor = rng.uniform(lo, hi)
    if action == "runs":
      path = actor + t * move
      people, ball = [(cx, path, facing)], path + _hand(facing)
    else:  # the ball flies to a friend (gives) or to someone in the other colour (loses)
      other = actor + move
      other_facing = -facing if horizontal else facing
      start, end = actor + _hand(facing), other + _hand(other_facing)
      people = [(cx, np.repeat(actor[None], NUM_FRAMES, 0), facing),
                (cx if action == "gives" else cy, np.repeat(other[None], NUM_FRAMES, 0),
                 other_facing)]
      ball = start + t * (end - start)
  for color in [cx] * (nx - sum(c == cx for c, _, _ in people)) + \
      [cy] * (ny - sum(c == cy for c, _, _ in people)):
    people.append((color, _bystander(rng, ball, people), int(rng.choice((-1, 1)))))
  end_holder = {"gives": cx, "loses": cy, "runs": cx, "kicks": "nobody"}[action]
  return {"groups": [cx, cy], "counts": {cx: nx, cy: ny}, "action": action,
          "direction": direction, "start_holder": cx, "end_holder": end_holder,
          "ball_color": _colors_for("ball", scene["ground"], scene["time"], rng,
                                    exclude=(cx, cy, "black")),
          "people": [{"color": c, "facing": f, "xy": np.round(p, 4).tolist()}
                     for c, p, f in people],
          "ball": np.round(ball, 4).tolist()}


def _bystander(rng, ball_T2, people):
  """A standing person's [T, 2] positions: of 48 places in PEOPLE_BOX, the one farthest from the
  ball's path and the other people, and never near where the ball starts or ends (so who holds
  it stays unambiguous)."""
  cand_K2 = rng.uniform(*PEOPLE_BOX, (48, 2))
  taken_P2 = np.concatenate([ball_T2] + [p for _, p, _ in people])
  gap_K = np.linalg.norm(cand_K2[:, None] - taken_P2[None], axis=-1).min(axis=1)
  ends_K = np.linalg.norm(cand_K2[:, None] - ball_T2[[0, -1]][None], axis=-1).min(axis=1)
  gap_K = np.where(ends_K > 0.3, gap_K, gap_K - 1)
  spot = cand_K2[np.argmax(gap_K)]
  return spot + rng.uniform(-0.01, 0.01, (NUM_FRAMES, 2))


# ----------------------------------------------------------------------------- drawing
@functools.lru_cache(maxsize=64)
def _backdrop(time: str, ground: str, horizon: float, size: int) -> np.ndarray:
  cv = render.Canvas(size)
  if time == "day":
    cv.vgradient((110, 175, 245), (190, 225, 255), 0, horizon)
  else:
    cv.vgradient((10, 15, 50), (35, 40, 90), 0, horizon)
  g = np.asarray(GROUND_RGB[ground], np.float32) * (1.0 if time == "day" else 0.55)
  cv.rect(0, horizon, 1, 1, g)
  cv.rect(0, horizon, 1, horizon + 0.02, g * 0.85)
  cv.rgb_HWC.flags.writeable = False
  return cv.rgb_HWC


def render_image(facts: dict, size: int, rng: np.random.Generator) -> np.ndarray:
  """A still [size, size, 3], or a clip as a strip of NUM_FRAMES frames [NUM_FRAMES*size, size, 3]."""
  del rng  # the scene is fully determined by its facts
  dim = 1.0 if facts["time"] == "day" else 0.65
  out = []
  for t in range(facts["num_frames"]):
    cv = render.Canvas(size)
    cv.rgb_HWC = _backdrop(facts["time"], facts["ground"], facts["horizon"], size).copy()
    if facts["num_frames"] == 1:
      for o in facts["objects"]:
        _draw_object(cv, o["kind"], render.shade(render.PALETTE[o["color"]], dim), *o["xy"], dim)
    else:
      for p in sorted(facts["people"], key=lambda p: p["xy"][t][1]):  # the nearer in front
        _draw_person(cv, *p["xy"][t], render.shade(render.PALETTE[p["color"]], dim), dim)
      x, y = facts["ball"][t]
      cv.disk(x, y, BALL_R + 0.02, render.shade((30, 30, 30), dim))
      cv.disk(x, y, BALL_R, render.shade(render.PALETTE[facts["ball_color"]], dim))
    out.append(cv.to_uint8())
  return np.concatenate(out, axis=0)


def _draw_person(cv, x, y, shirt, dim):
  cv.rect(x - 0.055, y + 0.07, x + 0.055, y + 0.17, render.shade((50, 50, 65), dim))
  cv.ellipse(x, y + 0.01, 0.095, 0.105, shirt)
  cv.disk(x, y - 0.14, 0.065, render.shade(SKIN, dim))


def _draw_object(cv, kind, color, x, y, dim):
  if kind == "person":
    _draw_person(cv, x, y, color, dim)
  elif kind == "dog":
    for lx in (-0.1, 0.08):
      cv.line(x + lx, y + 0.06, x + lx, y + 0.15, 0.04, color)
    cv.ellipse(x - 0.01, y + 0.04, 0.14, 0.07, color)
    cv.disk(x + 0.13, y - 0.03, 0.065, color)
    cv.disk(x + 0.15, y - 0.04, 0.02, render.shade((20, 20, 20), dim))
  elif kind == "ball":
    cv.disk(x, y + 0.04, 0.12, render.shade((30, 30, 30), dim))
    cv.disk(x, y + 0.04, 0.1, color)
  elif kind == "car":
    cv.rect(x - 0.1, y - 0.1, x + 0.09, y, color)
    cv.rect(x - 0.075, y - 0.08, x + 0.065, y - 0.015, render.shade((170, 210, 240), dim))
    cv.rect(x - 0.16, y - 0.01, x + 0.16, y + 0.1, color)
    for wx in (-0.09, 0.09):
      cv.disk(x + wx, y + 0.11, 0.05, (20, 20, 20))
  elif kind == "tree":
    cv.rect(x - 0.035, y, x + 0.035, y + 0.17, render.shade((110, 65, 30), dim))
    cv.disk(x, y - 0.05, 0.13, color)
  elif kind == "balloon":
    cv.line(x, y + 0.08, x + 0.01, y + 0.16, 0.02, render.shade((90, 90, 90), dim))
    cv.ellipse(x, y - 0.02, 0.08, 0.1, color)
  else:  # bird
    cv.triangle((x - 0.04, y), (x + 0.05, y), (x - 0.09, y - 0.1), color)
    cv.ellipse(x, y, 0.09, 0.045, color)
    cv.triangle((x + 0.08, y - 0.015), (x + 0.08, y + 0.025), (x + 0.13, y + 0.005),
                render.shade((250, 170, 30), dim))


# ----------------------------------------------------------------------------- questions
def qa_candidates(facts: dict, rng: np.random.Generator):
  """(template_key, slot values, answer, options, category) per applicable question; the
  category says whether the example is a still or a clip."""
  scene = (("day_night", {}, facts["time"]) if rng.random() < 0.5
           else ("ground", {}, facts["ground"]))
  if facts["num_frames"] == 1:
    asks = _still_asks(facts, rng) + [scene]
  else:
    asks = _clip_asks(facts, rng) + [scene]
  category = "still" if facts["num_frames"] == 1 else "clip"
  return [(key, slots, answer, None, category) for key, slots, answer in asks]


def _pick(rng, values):
  return values[rng.integers(len(values))]


def _still_asks(facts, rng):
  objs = facts["objects"]
  kinds = [o["kind"] for o in objs]
  shirts = [o["color"] for o in objs if o["kind"] == "person"]
  absent = [k for k in KINDS if k not in kinds]
  k = _pick(rng, sorted(set(kinds)) if rng.random() < 0.5 or not absent else absent)
  asks = [("has_kind", {"kind": k}, "yes" if k in kinds else "no")]
  k = _pick(rng, kinds) if rng.random() < 0.7 else _pick(rng, KINDS)
  asks.append(("n_kind", {"kinds": PLURALS[k]}, str(kinds.count(k))))
  color = _pick(rng, shirts) if shirts and rng.random() < 0.7 else _pick(rng, SHIRT_COLORS)
  asks.append(("n_wear", {"color": color}, str(shirts.count(color))))
  unique = [o for o in objs if kinds.count(o["kind"]) == 1]
  if [o for o in unique if o["kind"] in COLOR_KINDS]:
    o = _pick(rng, [o for o in unique if o["kind"] in COLOR_KINDS])
    asks.append(("kind_color", {"kind": o["kind"]}, o["color"]))
  if unique:
    o = _pick(rng, unique)
    asks.append(("kind_where", {"kind": o["kind"]}, o["cell"]))
  in_sky = [k for k in kinds if k in SKY_KINDS]
  asks.append(("in_sky", {}, join_multi(in_sky) if in_sky else "nothing"))
  return asks


def _clip_asks(facts, rng):
  counts = facts["counts"]
  color = _pick(rng, facts["groups"]) if rng.random() < 0.8 else _pick(rng, SHIRT_COLORS)
  return [("n_kind", {"kinds": "people"}, str(sum(counts.values()))),
          ("n_wear", {"color": color}, str(counts.get(color, 0))),
          ("direction", {}, facts["direction"]),
          ("start_holder", {}, facts["start_holder"]),
          ("end_holder", {}, facts["end_holder"]),
          ("action", {}, ACTION_ANSWER[facts["action"]])]


# ----------------------------------------------------------------------------- captions
def caption(facts: dict, rng: np.random.Generator, error_rate: float, teller=None):
  """E.g. 'a person in red at lower-left and a white dog at center, on grass by day.' or
  'grass by night with two people in red and one in blue; a person in red gives the ball to a
  friend and it goes right.'"""
  t = teller or Teller(rng, error_rate)
  if facts["num_frames"] == 1:
    parts = []
    for o in facts["objects"]:
      kind = t.say("kind", o["kind"], KINDS)
      color = t.say("color", o["color"], SHIRT_COLORS if kind == "person" else COLORS)
      where = t.say("location", o["cell"], GRID_LOCATIONS)
      thing = f"a person in {color}" if kind == "person" else f"{article(color)} {color} {kind}"
      parts.append(f"{thing} at {where}")
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    ground, time = t.say("ground", facts["ground"], GROUNDS), t.say("time", facts["time"], TIMES)
    return f"{listed}, on {ground} by {time}.", t.claims
  ground, time = t.say("ground", facts["ground"], GROUNDS), t.say("time", facts["time"], TIMES)
  cx, cy = facts["groups"]
  groups = []
  for color in (cx, cy):
    n = t.say("count", NUMBER_WORDS[facts["counts"][color]], NUMBER_WORDS[1:4])
    said = t.say("color", color, SHIRT_COLORS)
    groups.append(f"{n} {'person' if n == 'one' else 'people'} in {said}")
  holder = t.say("start_holder", facts["start_holder"], SHIRT_COLORS)
  action = t.say("action", ACTION_CAPTION[facts["action"]], tuple(ACTION_CAPTION.values()))
  direction = t.say("direction", facts["direction"], DIRECTIONS)
  return (f"{ground} by {time} with {groups[0]} and {groups[1]}; a person in {holder} {action} "
          f"and it goes {direction}.", t.claims)
