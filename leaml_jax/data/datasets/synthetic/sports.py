"""synthetic_sports: 4-frame clips (SPORTU-like multiple choice).

The clip is stored as the real clips are: a vertical strip of its frames ([4*S, S, 3], frame 0
on top), with `facts["num_frames"]`; `prepare` hands it to the model as one 2x2 tiled image or as
[4, S, S, 3] frames (config.data.frames), the latter for a tubelet patch embedding
(config.model.vit_frames=4) that sees motion inside each patch.
Two teams, one ball, one action per clip. Every question has 4 options and
its answer is the option letter; "hard" questions (action, ball direction)
need more than one frame. Every QA's category is the sport.
"""
import functools

import numpy as np

from leaml_jax.data.datasets.synthetic import render
from leaml_jax.data.datasets.synthetic.qa_common import (NUMBER_WORDS, Teller, Template,
                                                         article, mc_options)

NUM_FRAMES = 4
SPORTS = ("soccer", "basketball", "hockey", "handball")
ACTIONS = ("pass", "shot", "dribble", "interception")
DIRECTIONS = ("left", "right", "up", "down")
TEAM_COLORS = ("red", "blue", "yellow", "purple", "black", "white", "orange")
FIELD_RGB = {"soccer": (55, 145, 55), "basketball": (185, 130, 75),
             "hockey": (228, 236, 246), "handball": (45, 95, 185)}
BALL = {"soccer": "white", "basketball": "orange", "hockey": "black", "handball": "yellow"}
CLASHES = {"soccer": ("white",), "basketball": ("orange", "yellow"),
           "hockey": ("black", "white"), "handball": ("yellow", "blue")}
PLAYER_RX, PLAYER_RY, BALL_R = 0.14, 0.17, 0.1  # frame units
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}

_C = (("color", TEAM_COLORS),)
TEMPLATES = (
    Template("sport", "What sport is being played?", "sport", "easy", SPORTS, options=True),
    Template("n_players", "How many players are on the field?", "count", "easy",
             ("2", "3", "4", "5"), options=True),
    Template("team_count", "How many players does the {color} team have?", "team_count",
             "medium", ("1", "2", "3", "4"), _C, options=True),
    Template("start_team", "Which team has the ball at the start?", "possession", "medium",
             TEAM_COLORS + ("nobody",), options=True),
    Template("end_team", "Which team has the ball at the end?", "possession", "medium",
             TEAM_COLORS + ("nobody",), options=True),
    Template("action", "What happens in the clip?", "action", "hard", ACTIONS, options=True),
    Template("direction", "Which way does the ball move?", "direction", "hard", DIRECTIONS,
             options=True),
)

TEACHER_FIELD = {"soccer": "a green field", "basketball": "a wooden floor",
                 "hockey": "white ice", "handball": "a blue floor"}
TEACHER_ACTION = {"pass": "gives the ball to a teammate", "shot": "sends the ball into the goal",
                  "dribble": "runs with the ball", "interception": "loses the ball to the other team"}
TEACHER_MISSING_TERMS = SPORTS + ("pass", "shot", "dribble", "interception", "goalkeeper",
                                  "puck", "court", "rink")


def _clip(p):
  return np.clip(np.asarray(p, float), 0.1, 0.9)


def sample_facts(rng: np.random.Generator) -> dict:
  sport = SPORTS[rng.integers(len(SPORTS))]
  colors = [c for c in TEAM_COLORS if c not in CLASHES[sport]]
  cx, cy = (colors[i] for i in rng.choice(len(colors), 2, replace=False))
  action = ACTIONS[rng.integers(len(ACTIONS))]
  direction = ("left", "right")[rng.integers(2)] if action == "shot" else \
      DIRECTIONS[rng.integers(4)]
  u = np.asarray(_UNIT[direction], float)
  perp = u[::-1].copy()
  length = rng.uniform(0.4, 0.55)
  nx = int(rng.integers(2 if action == "pass" else 1, 3))
  ny = int(rng.integers(1, 3))
  if action == "shot":  # a long shot at the goal it faces
    gx = 0.88 if direction == "right" else 0.12
    p0 = np.array([0.5 - 0.1 * u[0] + rng.uniform(-0.05, 0.05), rng.uniform(0.35, 0.65)])
    target = np.array([gx, 0.5])
  else:
    lo, hi = np.where(u < 0, 0.15 + length * -u, 0.15), np.where(u > 0, 0.85 - length * u, 0.85)
    p0 = rng.uniform(lo, hi)
    target = p0 + u * length + perp * rng.uniform(-0.08, 0.08)
  frames = np.linspace(0, 1, NUM_FRAMES)[:, None]
  feet = np.array([0.0, 0.09])
  actor = np.repeat(p0[None], NUM_FRAMES, 0)
  players = []  # (team color, [T, 2] positions)
  if action == "dribble":
    actor = p0 + frames * (target - p0)
    ball = actor + feet + u * 0.05
  elif action == "shot":
    ball = (p0 + feet) + frames * (target - p0 - feet)
  else:
    receiver = np.repeat(target[None], NUM_FRAMES, 0)
    players.append((cx if action == "pass" else cy, receiver))
    ball = (p0 + feet) + frames * (target - p0)
  players.insert(0, (cx, actor))
  others = [cx] * (nx - sum(c == cx for c, _ in players)) + \
      [cy] * (ny - sum(c == cy for c, _ in players))
  for color in others:  # bystanders away from the ball's path and the others
    cand_K2 = rng.uniform(0.15, 0.85, (32, 2))
    taken_P2 = np.concatenate([ball] + [pos for _, pos in players])
    gap_K = np.linalg.norm(cand_K2[:, None] - taken_P2[None], axis=-1).min(axis=1)
    q = cand_K2[np.argmax(gap_K)]  # the candidate farthest from everything
    players.append((color, q + rng.uniform(-0.03, 0.03, (NUM_FRAMES, 2))))
  end_team = {"pass": cx, "dribble": cx, "interception": cy, "shot": "nobody"}[action]
  return {"sport": sport, "num_frames": NUM_FRAMES, "teams": [cx, cy], "counts": {cx: nx, cy: ny},
          "action": action, "direction": direction, "start_team": cx, "end_team": end_team,
          "players": [{"team": c, "xy": np.round(_clip(pos), 4).tolist()} for c, pos in players],
          "ball": np.round(np.clip(ball, 0.1, 0.9), 4).tolist()}


@functools.lru_cache(maxsize=16)
def _field(sport: str, size: int) -> np.ndarray:
  """The empty pitch of one frame, as a supersampled canvas."""
  cv = render.Canvas(size)
  cv.fill(FIELD_RGB[sport])
  line = {"soccer": (240, 240, 240), "basketball": (90, 50, 20),
          "hockey": (200, 30, 40), "handball": (240, 240, 240)}[sport]
  if sport == "soccer":
    cv.multiply(1 - 0.04 * (np.floor(cv.xx * 6) % 2))
  if sport == "basketball":
    cv.multiply(1 - 0.03 * (np.floor(cv.yy * 10) % 2))
  if sport == "handball":
    for gx in (0.0, 1.0):
      cv.disk(gx, 0.5, 0.3, (80, 135, 215))
  if sport == "hockey":
    cv.rect(0.31, 0, 0.35, 1, (50, 80, 200))
    cv.rect(0.65, 0, 0.69, 1, (50, 80, 200))
  cv.rect(0.485, 0, 0.515, 1, line)
  goal = (240, 240, 240) if sport in ("soccer", "handball") else (200, 30, 40)
  for x0 in (0.06, 0.89):
    cv.rect(x0, 0.36, x0 + 0.05, 0.64, goal)
  cv.outline_rect(0, 0, 1, 1, 1 / size, (25, 25, 25))  # frame border
  return cv.rgb_HWC


def render_image(facts: dict, size: int, rng: np.random.Generator) -> np.ndarray:
  """The clip as a strip of NUM_FRAMES frames of size x size: uint8 [NUM_FRAMES * size, size, 3]."""
  del rng  # clips are fully determined by their facts
  ball_rgb = render.PALETTE[BALL[facts["sport"]]]
  ball_rim = (20, 20, 20) if BALL[facts["sport"]] != "black" else (250, 250, 250)
  out = []
  for t in range(NUM_FRAMES):
    cv = render.Canvas(size)
    cv.rgb_HWC = _field(facts["sport"], size).copy()
    for p in facts["players"]:
      x, y = p["xy"][t]
      cv.ellipse(x, y, PLAYER_RX + 0.02, PLAYER_RY + 0.02, (20, 20, 20))
      cv.ellipse(x, y, PLAYER_RX, PLAYER_RY, render.PALETTE[p["team"]])
    x, y = facts["ball"][t]
    cv.disk(x, y, BALL_R + 0.024, ball_rim)
    cv.disk(x, y, BALL_R, ball_rgb)
    out.append(cv.to_uint8())
  return np.concatenate(out, axis=0)


def qa_candidates(facts: dict, rng: np.random.Generator):
  cat = facts["sport"]
  cx, cy = facts["teams"]
  spare = [c for c in TEAM_COLORS if c not in (cx, cy)]
  spare = [spare[i] for i in rng.permutation(len(spare))]
  n = sum(facts["counts"].values())
  color = facts["teams"][rng.integers(2)]
  asks = [("sport", {}, facts["sport"], SPORTS),
          ("n_players", {}, str(n), ("2", "3", "4", "5")),
          ("team_count", {"color": color}, str(facts["counts"][color]), ("1", "2", "3", "4")),
          ("start_team", {}, cx, [cy] + spare[:2]),
          ("end_team", {}, facts["end_team"],
           [x for x in (cx, cy, "nobody") if x != facts["end_team"]] + spare[:1]),
          ("action", {}, facts["action"], ACTIONS),
          ("direction", {}, facts["direction"], DIRECTIONS)]
  out = []
  for key, slots, answer, pool in asks:
    letter, options = mc_options(rng, answer, pool)
    out.append((key, slots, letter, options, cat))
  return out


def caption(facts: dict, rng: np.random.Generator, error_rate: float, teller=None):
  """E.g. 'a green field with two players in red and one in blue; a red player
  gives the ball to a teammate and it goes right.'"""
  t = teller or Teller(rng, error_rate)
  field = TEACHER_FIELD[t.say("sport", facts["sport"], SPORTS)]
  cx, cy = facts["teams"]
  nx = t.say("count", facts["counts"][cx], (1, 2, 3))
  sx = t.say("color", cx, TEAM_COLORS)
  ny = t.say("count", facts["counts"][cy], (1, 2, 3))
  sy = t.say("color", cy, TEAM_COLORS)
  actor = t.say("start_team", cx, TEAM_COLORS)
  action = TEACHER_ACTION[t.say("action", facts["action"], ACTIONS)]
  direction = t.say("direction", facts["direction"], DIRECTIONS)
  people = lambda k: f"{NUMBER_WORDS[k]} player{'s' if k > 1 else ''}"
  text = (f"{field} with {people(nx)} in {sx} and {NUMBER_WORDS[ny]} in {sy}; "
          f"{article(actor)} {actor} player {action} and it goes {direction}.")
  return text, t.claims
