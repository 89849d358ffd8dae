"""The dataset registry: the one module that names datasets. Everything that differs between
datasets is asked of it by name; stages never branch on which dataset a run uses.

  name = name_of(config.data)                    # e.g. "synthetic_sports", "kvasir_vqa"
  n = frames_per_example(config.data)            # the run's image layout: 1 image or n blocks
  check_config(config, workdir)                  # before any work: files there, options valid
  path = build(name, data_dir, config.data, seed=0)
  train = load_source(path, "train")             # decoded, validated examples (grain-compatible)
  rule = pseudo_qa_rule(name, labeled_examples)  # is a generated QA valid for this dataset?

Datasets:
  synthetic_general, synthetic_endoscopy, synthetic_sports (synthetic/): generated here, with
      their own (imperfect on purpose) teacher captions. config.data.source="synthetic",
      config.data.domain=<name>.
  kvasir_vqa (kvasir.py), sportu_video (sportu.py): built from local files (config.data.path);
      their captions come from a file or a teacher VLM (config.captions). config.data.source=<name>.
Builders share base.py (ArrayRecord storage, decoding, local-file builders, build reports).
"""
import os

from etils import epath

from leaml_jax.config_lib import ConfigError
from leaml_jax.data import frames, prompts, records
from leaml_jax.data.datasets import synthetic
from leaml_jax.errors import MissingDataError

SYNTHETIC = synthetic.DOMAINS
FROM_FILES = ("kvasir_vqa", "sportu_video")
NAMES = SYNTHETIC + FROM_FILES


def _from_files(name: str):
  """(module, builder class) of a dataset read from local files."""
  # Imported on first use: TFDS loads only when a stage or check needs it.
  from leaml_jax.data.datasets import kvasir, sportu  # pylint: disable=import-outside-toplevel
  table = {"kvasir_vqa": (kvasir, kvasir.KvasirVQA), "sportu_video": (sportu, sportu.SportuVideo)}
  if name not in table:
    raise ValueError(f"unknown dataset {name!r}; known: {NAMES}")
  return table[name]


def name_of(data_config) -> str:
  """The dataset a config names: config.data.domain when config.data.source is "synthetic",
  else config.data.source."""
  d = data_config
  if d.source == "synthetic":
    if d.domain not in SYNTHETIC:
      raise ConfigError(f"config.data.domain={d.domain!r} must be one of {SYNTHETIC}")
    return d.domain
  if d.source not in FROM_FILES:
    raise ConfigError(f"config.data.source={d.source!r} must be 'synthetic' or one of "
                      f"{sorted(FROM_FILES)}")
  return d.source


def question_types(name: str) -> tuple[str, ...]:
  if name in SYNTHETIC:
    return synthetic.question_types(name)
  return tuple(_from_files(name)[0].QUESTION_TYPES)


def num_frames(name: str, data_config) -> int:
  """Frames per example as stored: 1 for still images, else the clips' frame count."""
  if name in SYNTHETIC:
    return synthetic.num_frames(name)
  return data_config.num_frames if _from_files(name)[1].CLIPS else 1


def frames_per_example(data_config) -> int:
  """Frame blocks every example of a run reaches the model as (its one image layout, whichever
  dataset the example comes from): with config.data.frames="blocks" the run's clip length (the
  target dataset's frames), else 1: one image, clips tiled."""
  if data_config.frames != "blocks":
    return 1
  return num_frames(name_of(data_config), data_config)


def ships_captions(name: str) -> bool:
  """Whether the examples carry teacher captions (the synthetic worlds' own fallible teacher).
  The others need config.captions.path (a file) or config.captions.teacher_path (a VLM)."""
  return name in SYNTHETIC


def check_config(config, workdir: str) -> None:
  """Before any work: the dataset is known, its files are there (unless `prepare` already ran),
  the frame options are valid and a tubelet tower (config.model.vit_frames > 1) spans the clips'
  frames, the base checkpoint directory exists, and a caption source is set when the dataset has
  no captions of its own. Raises MissingDataError / ConfigError."""
  d = config.data
  name = name_of(d)
  if d.frames not in frames.FRAME_MODES:
    raise ConfigError(f"config.data.frames={d.frames!r} must be one of {frames.FRAME_MODES}")
  if d.num_frames < 1 or not 0.0 < d.test_fraction < 1.0:
    raise ConfigError(f"config.data.num_frames={d.num_frames} must be >= 1 and "
                      f"config.data.test_fraction={d.test_fraction} in (0, 1)")
  vf, clip_frames = config.model.vit_frames, num_frames(name, d)
  if vf > 1 and clip_frames > 1 and clip_frames != vf:  # still images: the tower repeats them
    raise ConfigError(f"config.model.vit_frames={vf} must equal the clips' frame count "
                      f"{clip_frames}")
  prepared = epath.Path(workdir, "status", "prepare.json").exists()
  redo = {"prepare", "all"} & set(str(config.force).split(","))
  if name in FROM_FILES and "prepare" in config.stages and (not prepared or redo):
    _from_files(name)[1].present(d.path)
  m = config.model.path
  if m and "base" in config.stages and not os.path.isdir(os.path.expanduser(m)):
    raise MissingDataError(f"config.model.path={m!r}: no such directory; put the base model's "
                           f"Hugging Face checkpoint there (config.json, *.safetensors, tokenizer "
                           f"and processor files; the config file's docstring has the download "
                           f"command), or point --config.model.path at it")
  c = config.captions
  if "captions" in config.stages and not ships_captions(name) and not (c.path or c.teacher_path):
    raise ConfigError(f"{name} has no captions of its own: set --config.captions.path="
                      f"FILE.jsonl (lines {{\"image_id\", \"caption\"}}) or "
                      f"--config.captions.teacher_path=HF_CHECKPOINT_DIR (a teacher VLM)")


def build(name: str, data_dir: str, data_config, *, seed: int, num_train: int | None = None,
          num_test: int | None = None) -> str:
  """Builds (or finds already built) dataset `name` under `data_dir` with the options of
  `data_config` (config.data); returns its directory. num_train / num_test override the
  sizes of a generated (synthetic) dataset; datasets from files have the size of their files."""
  d = data_config
  if name in SYNTHETIC:
    from leaml_jax.data.datasets.synthetic import builder  # pylint: disable=import-outside-toplevel
    return builder.build(name, data_dir, num_train=d.num_train if num_train is None else num_train,
                         num_test=d.num_test if num_test is None else num_test, seed=seed,
                         caption_error_rate=d.caption_error_rate, image_size=d.image_size)
  if num_train is not None or num_test is not None:
    raise ValueError(f"{name} is read from files: its size cannot be set (num_train, num_test)")
  from leaml_jax.data.datasets import base  # pylint: disable=import-outside-toplevel
  return base.build_local(_from_files(name)[1], d.path, data_dir, image_size=d.image_size,
                          num_frames=d.num_frames, test_fraction=d.test_fraction, seed=seed)


def load_source(path: str, split: str, data_dir: str | None = None):
  """A built dataset's split (`base.load_source`), every example checked against the question
  types of its dataset on access."""
  from leaml_jax.data.datasets import base  # pylint: disable=import-outside-toplevel
  types = lambda built_name: question_types(built_name) if built_name in NAMES else None
  return base.load_source(path, split, data_dir, question_types=types)


def pseudo_qa_rule(name: str, labeled_examples):
  """`rule(question, answer, options, rng) -> {"question", "answer", "options", "type"} | None`:
  a generated QA as this dataset's QA, or None when it is not valid for it. Judged only by the
  dataset's format and what `labeled_examples` reveal (never answer lists the labelled examples
  do not show); `rng` draws the options of a multiple-choice QA generated without them."""
  if name in SYNTHETIC:
    return synthetic.pseudo_qa_rule(name, labeled_examples)
  return _from_files(name)[0].pseudo_qa_rule(labeled_examples)


def tokenizer_corpus(name: str, labeled_examples, *, mc_answer: str = "text") -> list[str]:
  """Texts to train the tiny model's tokenizer on. Synthetic: everything the three synthetic
  worlds write (the demo tokenizer). From files: the text this run may learn from, the labelled
  QA as the exact prompts and targets the model is trained on (never unlabelled or test
  answers); add the teacher captions a run reads."""
  if name in SYNTHETIC:
    return synthetic.corpus()
  texts = [prompts.caption_prompt(), prompts.qa_gen_prompt()]
  for r in (records.vqa_records(labeled_examples, mc_answer=mc_answer)
            + records.qa_gen_records(labeled_examples)):
    texts += [r["prompt"], r["target"]]
  return texts


# ----------------------------------------------------------------------------- ground truth
def true_answer(name: str, example: dict, question: str) -> str | None:
  """The true answer (as text) to `question` about `example`, from a synthetic world's hidden
  facts; None where no ground truth exists (datasets from files, or a question the world's
  templates cannot ask of this example)."""
  if name not in SYNTHETIC:
    return None
  from leaml_jax.data.datasets.synthetic import mechanism  # pylint: disable=import-outside-toplevel
  return mechanism.true_answers(synthetic.domain_module(name), example["facts"]).get(question.strip())


def caption_statements(name: str, example: dict, caption: str) -> list[dict] | None:
  """[{"fact", "said", "true"}]: which of a synthetic example's facts `caption` states, and as
  what (said None = not stated); None for datasets without hidden facts."""
  if name not in SYNTHETIC:
    return None
  from leaml_jax.data.datasets.synthetic import mechanism  # pylint: disable=import-outside-toplevel
  return mechanism.stated_facts(synthetic.domain_module(name), example["facts"], caption)
