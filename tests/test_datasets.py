"""The dataset registry: what it says about each dataset, pseudo-QA validity judged only by what
the labelled set shows, and the rule it exists for: no dataset is named outside it."""
import ast
import os

import numpy as np
import pytest

from leaml_jax import defaults
from leaml_jax.config_lib import ConfigError, load_config_file
from leaml_jax.data import datasets
from leaml_jax.data.datasets import synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "leaml_jax")


# ----------------------------------------------------------------------------- registry
def test_every_dataset_answers_the_registry():
  assert set(datasets.NAMES) == {"synthetic_general", "synthetic_endoscopy", "synthetic_sports",
                                 "kvasir_vqa", "sportu_video"}
  data = defaults.base_config().data
  data.num_frames = 6
  want_frames = {"synthetic_general": 4, "synthetic_endoscopy": 1, "synthetic_sports": 4,
                 "kvasir_vqa": 1, "sportu_video": 6}
  for name in datasets.NAMES:
    assert datasets.question_types(name), name
    assert datasets.num_frames(name, data) == want_frames[name], name
    assert datasets.ships_captions(name) == name.startswith("synthetic_"), name
  assert datasets.question_types("sportu_video") == ("multiple_choice",)


@pytest.mark.parametrize("config,name", [("demo.py", "synthetic_sports"),
                                         ("demo.py:endoscopy", "synthetic_endoscopy"),
                                         ("sports.py", "sportu_video"),
                                         ("kvasir.py", "kvasir_vqa")])
def test_name_of_config(config, name):
  assert datasets.name_of(load_config_file(os.path.join(REPO, "configs", config)).data) == name


def test_unknown_dataset_is_a_config_error():
  data = defaults.base_config().data
  data.source = "coco"
  with pytest.raises(ConfigError, match="config.data.source='coco'"):
    datasets.name_of(data)
  data.source, data.domain = "synthetic", "synthetic_kitchen"
  with pytest.raises(ConfigError, match="config.data.domain='synthetic_kitchen'"):
    datasets.name_of(data)


def test_clip_length_must_match_a_tubelet_tower(tmp_path):
  c = defaults.base_config()
  c.data.frames, c.model.vit_frames = "blocks", 4
  datasets.check_config(c, str(tmp_path))         # synthetic_sports: 4-frame clips
  c.data.domain = "synthetic_endoscopy"
  datasets.check_config(c, str(tmp_path))         # still images: the tower repeats them
  c.data.domain, c.model.vit_frames = "synthetic_sports", 2
  with pytest.raises(ConfigError, match="clips' frame count 4"):
    datasets.check_config(c, str(tmp_path))


# ----------------------------------------------------------------------------- pseudo-QA rule
def _qa(question, answer, options=None):
  return {"question": question, "answer": answer, "options": options, "type": "",
          "category": "", "difficulty": ""}


ENDOSCOPY_LABELED = [
    {"id": "a", "qa": [_qa("How many polyps are in the image?", "1"),
                       _qa("What color is the abnormality?", "pink; red")]},
    {"id": "b", "qa": [_qa("Where in the image is the abnormality?", "center"),
                       _qa("What color is the abnormality?", "red")]},
]


def test_synthetic_rule_accepts_only_what_the_labelled_set_shows():
  rule = datasets.pseudo_qa_rule("synthetic_endoscopy", ENDOSCOPY_LABELED)
  rng = np.random.default_rng(0)
  ok = lambda q, a: rule(q, a, None, rng)
  assert ok("How many polyps are in the image?", "1") == {
      "question": "How many polyps are in the image?", "answer": "1", "options": None,
      "type": "count"}
  assert ok("What color is the abnormality?", "red")["type"] == "color"
  assert ok("What color is the abnormality?", "pink; red")["answer"] == "pink; red"
  assert ok("Where in the image is the abnormality?", "center")["type"] == "location"
  # In the world, never in the labelled set: rejected.
  for question, answer in [("How many polyps are in the image?", "2"),
                           ("What color is the abnormality?", "blue"),
                           ("Where in the image is the abnormality?", "upper-left"),
                           ("Is there a polyp?", "yes")]:  # a template never asked
    assert synthetic.validate_qa("synthetic_endoscopy", question, answer) is not None
    assert ok(question, answer) is None, (question, answer)
  # The domain's format still holds: sorted, distinct parts.
  assert ok("What color is the abnormality?", "red; pink") is None
  assert ok("What color is the abnormality?", "red; red") is None


SPORT_OPTIONS = {"A": "soccer", "B": "hockey", "C": "basketball", "D": "handball"}
SPORTS_LABELED = [
    {"id": "a", "qa": [_qa("What sport is being played?", "B", SPORT_OPTIONS),
                       _qa("How many players does the red team have?", "A",
                           {"A": "2", "B": "1", "C": "4", "D": "3"})]},
    {"id": "b", "qa": [_qa("Which team has the ball at the start?", "A",
                           {"A": "red", "B": "blue", "C": "nobody", "D": "white"})]},
]


def test_synthetic_multiple_choice_draws_options_from_labelled_answers():
  rule = datasets.pseudo_qa_rule("synthetic_sports", SPORTS_LABELED)
  rng = np.random.default_rng(0)
  qa = rule("What sport is being played?", "handball", None, rng)
  assert set(qa["options"].values()) == set(SPORT_OPTIONS.values())
  assert qa["options"][qa["answer"]] == "handball" and qa["type"] == "sport"
  qa = rule("Which team has the ball at the start?", "white", None, rng)
  assert set(qa["options"].values()) == {"red", "blue", "nobody", "white"}
  assert rule("Which team has the ball at the start?", "purple", None, rng) is None  # unseen
  assert rule("How many players does the red team have?", "3", None, rng)["type"] == "team_count"
  assert rule("How many players does the blue team have?", "3", None, rng) is None  # unseen slot
  assert rule("Which way does the ball move?", "left", None, rng) is None  # never asked
  generated = {"A": "red", "B": "blue", "C": "nobody", "D": "purple"}
  assert rule("Which team has the ball at the start?", "A", generated, rng) is None
  generated["D"] = "white"
  assert rule("Which team has the ball at the start?", "A", generated, rng)["answer"] == "A"


def test_synthetic_rule_needs_four_seen_answers_for_multiple_choice():
  labeled = [{"id": "a", "qa": [_qa("Which way does the ball move?", "left",
                                    {"A": "left", "B": "up", "C": "down", "D": "right"})]}]
  rule = datasets.pseudo_qa_rule("synthetic_sports", labeled)
  assert rule("Which way does the ball move?", "up", None, np.random.default_rng(0))
  labeled[0]["qa"][0]["options"] = None  # malformed: no options shown, nothing seen
  rule = datasets.pseudo_qa_rule("synthetic_sports", labeled)
  assert rule("Which way does the ball move?", "up", None, np.random.default_rng(0)) is None


# ----------------------------------------------------------------------------- layering
def _modules(under):
  out = {}
  for directory, _, files in os.walk(under):
    for f in files:
      if f.endswith(".py"):
        path = os.path.join(directory, f)
        name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        out[name] = path
  return out


def test_only_the_registry_names_datasets():
  """Outside data/datasets/ (and the config defaults, whose values name them) no code holds a
  dataset's name or compares with config.data.source's "synthetic": ask the registry instead."""
  registry = os.path.join(PACKAGE, "data", "datasets")
  names = set(datasets.NAMES)
  found = []
  for module, path in _modules(PACKAGE).items():
    if path.startswith(registry) or module == "leaml_jax.defaults":
      continue
    tree = ast.parse(open(path).read())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                  and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
      if (isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings and names & set(node.value.replace("'", " ").split())):
        found.append(f"{module}:{node.lineno}: {node.value!r}")
      if isinstance(node, ast.Compare) and any(
          isinstance(c, ast.Constant) and c.value == "synthetic"
          for c in [node.left, *node.comparators]):
        found.append(f"{module}:{node.lineno}: compares with 'synthetic'")
  assert not found, found
