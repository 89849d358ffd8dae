"""Data layer: synthetic domains, TFDS round trip, tokenizer, prompts, pipeline.

Answers are re-derived from the facts by independent code here (not the
generator's), captions are audited against the facts, and the pipeline's
layout is checked by hand on a tiny character tokenizer.
"""
import functools
import json
import re
import time

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from leaml_jax.data import DataError, datasets, encoders, packing, pipeline, prompts, records
from leaml_jax.data import tokenizer
from leaml_jax.data.datasets import base, synthetic
from leaml_jax.data.datasets.synthetic import builder as synthetic_builder
from leaml_jax.errors import ConfigError

DOMAINS = synthetic.DOMAINS


@functools.lru_cache(maxsize=None)
def examples(domain, n=120, split="train", seed=0, rate=0.15):
  return synthetic.generate_examples(domain, split, n, seed, rate)


@functools.lru_cache(maxsize=None)
def synth_tok():
  return tokenizer.train_tokenizer(synthetic.corpus(num_per_domain=150), vocab_size=1024)


# --- generation -------------------------------------------------------------------

@pytest.mark.parametrize("domain", DOMAINS)
def test_deterministic_and_prefix_stable(domain):
  a = synthetic.generate_examples(domain, "train", 4, seed=3)
  b = synthetic.generate_examples(domain, "train", 6, seed=3)
  for x, y in zip(a, b):
    assert x["image"].tobytes() == y["image"].tobytes()
    assert json.dumps([x["qa"], x["facts"], x["caption"]]) == \
        json.dumps([y["qa"], y["facts"], y["caption"]])
  other_seed = synthetic.generate_examples(domain, "train", 4, seed=4)
  other_split = synthetic.generate_examples(domain, "test", 4, seed=3)
  assert a[0]["image"].tobytes() != other_seed[0]["image"].tobytes()
  assert a[0]["image"].tobytes() != other_split[0]["image"].tobytes()
  ex = a[0]
  frames = ex["facts"].get("num_frames", 1)  # clips: a strip of frames, as the real ones
  assert frames == (4 if domain == "synthetic_sports" else 1)
  assert ex["image"].shape == (32 * frames, 32, 3) and ex["image"].dtype == np.uint8
  json.dumps(ex["facts"])  # facts are plain JSON
  assert 4 <= len(ex["qa"]) <= 6


@pytest.mark.parametrize("domain", DOMAINS)
def test_error_rate_changes_captions_only(domain):
  clean = synthetic.generate_examples(domain, "train", 5, 0, caption_error_rate=0.0)
  noisy = synthetic.generate_examples(domain, "train", 5, 0, caption_error_rate=0.9)
  for c, n in zip(clean, noisy):
    assert c["image"].tobytes() == n["image"].tobytes()
    assert c["qa"] == n["qa"] and c["facts"] == n["facts"]
    assert c["caption"] == c["gt_caption"] == n["gt_caption"]
  assert any(c["caption"] != n["caption"] for c, n in zip(clean, noisy))


def _holder_at(f, t):
  """Shirt colour of the person the ball is at (within reach) in frame t, else nobody."""
  bx, by = f["ball"][t]
  d = [np.hypot(p["xy"][t][0] - bx, p["xy"][t][1] - by) for p in f["people"]]
  return f["people"][int(np.argmin(d))]["color"] if min(d) < 0.15 else "nobody"


def _general_answer(f, q):
  """Stills from the objects' positions (the 3x3 grid by hand), clips from geometry: the ball's
  displacement gives the direction, the person within reach of the ball the holder, and who
  holds it at the end (and whether the first holder moved) the action."""
  text = q["question"]
  if f["num_frames"] > 1:
    (x0, y0), (x1, y1) = f["ball"][0], f["ball"][-1]
    dx, dy = x1 - x0, y1 - y0
    start, end = _holder_at(f, 0), _holder_at(f, -1)
    carrier = next(p for p in f["people"] if p["color"] == start
                   and np.hypot(*np.subtract(p["xy"][0], f["ball"][0])) < 0.15)
    moved = np.hypot(*np.subtract(carrier["xy"][-1], carrier["xy"][0])) > 0.1
    action = ("runs with it" if moved else "kicks it away" if end == "nobody"
              else "gives it to a friend" if end == start else "loses it")
    shirts = [p["color"] for p in f["people"]]
    if m := re.fullmatch(r"How many people wear (\w+)\?", text):
      return str(shirts.count(m[1]))
    return {"How many people are there?": str(len(shirts)),
            "Which way does the ball move?": ("right" if dx > 0 else "left") if abs(dx) > abs(dy)
                                             else ("down" if dy > 0 else "up"),
            "Who has the ball at the start?": start, "Who has the ball at the end?": end,
            "What does the person with the ball do?": action,
            "Is it day or night?": f["time"], "What is the ground?": f["ground"]}[text]
  objs = f["objects"]
  kinds = [o["kind"] for o in objs]
  plural = {"people": "person"}
  cell = lambda x, y: (["upper", "center", "lower"][int(y * 3)] + "-"
                       + ["left", "center", "right"][int(x * 3)]).replace("center-center", "center")
  if m := re.fullmatch(r"Is there a (\w+)\?", text):
    return "yes" if m[1] in kinds else "no"
  if m := re.fullmatch(r"How many people wear (\w+)\?", text):
    return str(sum(o["kind"] == "person" and o["color"] == m[1] for o in objs))
  if m := re.fullmatch(r"How many (\w+) are there\?", text):
    return str(kinds.count(plural.get(m[1], m[1][:-1])))
  if m := re.fullmatch(r"What color is the (\w+)\?", text):
    (only,) = [o for o in objs if o["kind"] == m[1]]
    return only["color"]
  if m := re.fullmatch(r"Where is the (\w+)\?", text):
    (only,) = [o for o in objs if o["kind"] == m[1]]
    return cell(*only["xy"])
  if text == "What is in the sky?":  # the upper third of the picture
    return "; ".join(sorted({o["kind"] for o in objs if o["xy"][1] < 1 / 3})) or "nothing"
  return {"Is it day or night?": f["time"], "What is the ground?": f["ground"]}[text]


def _endoscopy_answer(f, q):
  les, ins = f["lesions"], f["instruments"]
  polyps = [x for x in les if x["kind"] == "polyp"]
  joined = lambda xs: "; ".join(sorted(set(xs)))
  return {
      "Is there a polyp?": "yes" if polyps else "no",
      "Are there any instruments in the image?": "yes" if ins else "no",
      "Is there a green/black box artefact?": "yes" if f["green_box"] else "no",
      "How many polyps are in the image?": str(len(polyps)),
      "How many instruments are in the image?": str(len(ins)),
      "What color is the abnormality?": joined(x["color"] for x in les),
      "Where in the image is the abnormality?": joined(x["location"] for x in les),
      "Where in the image is the instrument?": joined(x["location"] for x in ins),
      "What is the size of the polyp?": polyps[0]["size"] if polyps else None,
      "What type of procedure is the image taken from?": f["procedure"],
      "Are there any abnormalities in the image? Check all that are present.":
          joined(x["kind"] for x in les) or "none",
  }[q["question"]]


def _nearest_team(f, t):
  bx, by = f["ball"][t]
  d = [np.hypot(p["xy"][t][0] - bx, p["xy"][t][1] - by) for p in f["players"]]
  return f["players"][int(np.argmin(d))]["team"]


def _sports_answer(f, q):
  """From geometry where possible: ball displacement gives the direction, the
  player nearest the ball gives possession."""
  (x0, y0), (x1, y1) = f["ball"][0], f["ball"][-1]
  dx, dy = x1 - x0, y1 - y0
  direction = ("right" if dx > 0 else "left") if abs(dx) > abs(dy) else ("down" if dy > 0 else "up")
  teams = [p["team"] for p in f["players"]]
  text = q["question"]
  if m := re.fullmatch(r"How many players does the (\w+) team have\?", text):
    return str(teams.count(m[1]))
  end = "nobody" if f["action"] == "shot" else _nearest_team(f, -1)
  return {"What sport is being played?": f["sport"],
          "How many players are on the field?": str(len(teams)),
          "Which team has the ball at the start?": _nearest_team(f, 0),
          "Which team has the ball at the end?": end,
          "What happens in the clip?": f["action"],
          "Which way does the ball move?": direction}[text]


@pytest.mark.parametrize("domain,reference", [
    ("synthetic_general", _general_answer), ("synthetic_endoscopy", _endoscopy_answer),
    ("synthetic_sports", _sports_answer)])
def test_answers_follow_from_facts(domain, reference):
  seen = set()
  for ex in examples(domain, 200):
    for q in ex["qa"]:
      answer = q["options"][q["answer"]] if q["options"] else q["answer"]
      assert answer == reference(ex["facts"], q), (ex["id"], q, ex["facts"])
      assert synthetic.validate_qa(domain, q["question"], q["answer"], q["options"]) == q["type"]
      seen.add(synthetic.match_template(domain, q["question"]).key)
  assert seen == {t.key for t in synthetic.templates(domain)}  # every template shows up


def test_answer_vocab_small_and_covering():
  for domain in DOMAINS:
    vocab = synthetic.answer_vocab(domain)
    assert set(vocab) == set(synthetic.question_types(domain))
    for ex in examples(domain):
      for q in ex["qa"]:
        atoms = list(q["options"].values()) if q["options"] else q["answer"].split("; ")
        assert set(atoms) <= set(vocab[q["type"]]), (domain, q)
    assert len(synthetic.templates(domain)) <= 12


def test_validate_qa_rejects_malformed():
  v = synthetic.validate_qa
  assert v("synthetic_endoscopy", "How many polyps are in the image?", "2") == "count"
  assert v("synthetic_endoscopy", "How many polyps are in the image?", "7") is None
  assert v("synthetic_endoscopy", "How many cats are in the image?", "2") is None
  assert v("synthetic_endoscopy", "Where in the image is the abnormality?",
           "center; upper-left") == "location"
  assert v("synthetic_endoscopy", "Where in the image is the abnormality?",
           "upper-left; center") is None  # multi answers are sorted
  opts = {"A": "up", "B": "left", "C": "down", "D": "right"}
  assert v("synthetic_sports", "Which way does the ball move?", "C", opts) == "direction"
  assert v("synthetic_sports", "Which way does the ball move?", "E", opts) is None
  assert v("synthetic_sports", "Which way does the ball move?", "C", {**opts, "D": "up"}) is None
  assert v("synthetic_sports", "Which way does the ball move?", "down") is None


def test_pixels_show_facts():
  for ex in examples("synthetic_endoscopy"):  # the green box sits in the lower-left corner
    corner = ex["image"][-7:, :7].astype(int).reshape(-1, 3)
    greenish = np.mean((corner[:, 1] > corner[:, 0] + 60) & (corner[:, 1] > 120))
    assert (greenish > 0.2) == ex["facts"]["green_box"], ex["id"]
  for ex in examples("synthetic_general"):  # day sky is bright blue, night sky dark
    sky = ex["image"][1:4].astype(float).mean(axis=(0, 1))
    assert (sky[2] > 180) == (ex["facts"]["time"] == "day"), (ex["id"], sky)
  for ex in examples("synthetic_sports")[:40]:  # the ball moves between frames
    ball = np.asarray(ex["facts"]["ball"])
    assert np.hypot(*(ball[-1] - ball[0])) > 0.25


# --- teacher captions ----------------------------------------------------------------

@pytest.mark.parametrize("rate", [0.0, 0.15, 0.4])
def test_caption_error_rate(rate):
  claims = [c for d in DOMAINS for ex in examples(d, 120, rate=rate) for c in ex["caption_claims"]]
  wrong = np.mean([c["said"] != c["true"] for c in claims])
  assert len(claims) > 1500
  assert abs(wrong - rate) < 0.03, (rate, wrong, len(claims))


def test_caption_claims_are_what_the_caption_says():
  for ex in examples("synthetic_general"):
    for c in ex["caption_claims"]:
      assert re.search(rf"\b{re.escape(c['said'])}\b", ex["caption"]), (c, ex["caption"])
  f = {"category": "polyp", "procedure": "colonoscopy", "green_box": True, "instruments": [],
       "lesions": [{"kind": "polyp", "color": "red", "size": "<5mm", "location": "upper-left"},
                   {"kind": "polyp", "color": "red", "size": "<5mm", "location": "center"}]}
  text, _ = synthetic.endoscopy.caption(f, np.random.default_rng(0), 0.0)
  assert text == ("a pink tunnel wall with two tiny red bumps at top left and middle and "
                  "a green square in the corner.")


# Domain words a generic captioner would not use (kept independent of the code's list).
MISSING = {"synthetic_endoscopy": ["polyp", "ulcer", "inflammation", "instrument",
                                   "colonoscopy", "gastroscopy", "artefact", "abnormal"],
           "synthetic_sports": ["soccer", "basketball", "hockey", "handball", "pass", "shot",
                                "dribble", "interception"]}


@pytest.mark.parametrize("domain", sorted(MISSING))
def test_teacher_vocabulary_misses_domain_terms(domain):
  captions = " ".join(ex["caption"] for ex in examples(domain)).lower()
  qa_text = " ".join(q["question"] + " " + (json.dumps(q["options"]) if q["options"] else
                                           q["answer"]) for ex in examples(domain) for q in ex["qa"])
  for term in set(MISSING[domain]) | set(synthetic.teacher_missing_terms(domain)):
    assert not re.search(rf"\b{re.escape(term)}", captions), term
  for term in MISSING[domain]:  # ...while the questions and answers do use them
    assert re.search(rf"\b{term}", qa_text.lower()), term


def test_domains_are_out_of_distribution():
  means = {d: np.mean([ex["image"].reshape(-1, 3).mean(0) for ex in examples(d)], 0)
           for d in DOMAINS}
  general, endo, sports = (means[d] for d in DOMAINS)
  assert endo[0] > endo[2] + 60  # red tissue
  assert general[2] > endo[2] + 40  # blue sky
  def colours(d):  # share of pixels in each of 64 coarse RGB bins
    px = np.concatenate([ex["image"].reshape(-1, 3) for ex in examples(d)]) // 64
    return np.bincount(px[:, 0] * 16 + px[:, 1] * 4 + px[:, 2], minlength=64) / len(px)
  for a in DOMAINS:
    for b in DOMAINS:
      if a < b:  # total variation distance: at least half of the colour mass differs
        assert 0.5 * np.abs(colours(a) - colours(b)).sum() > 0.5, (a, b)
  questions = {d: {q["question"] for ex in examples(d) for q in ex["qa"]} for d in DOMAINS}
  # The general world asks in everyday words; a target question worded the same everyday way
  # may recur there, the domains' own terms never do.
  shared = questions[DOMAINS[0]] & (questions[DOMAINS[1]] | questions[DOMAINS[2]])
  assert shared <= {"Which way does the ball move?"}, shared
  general_text = " ".join(q["question"] + " " + q["answer"] + " " + ex["caption"]
                          for ex in examples(DOMAINS[0]) for q in ex["qa"]).lower()
  for term in MISSING["synthetic_endoscopy"] + MISSING["synthetic_sports"] + [
      "team", "player", "field", "goal", "lesion", "bump", "tool"]:
    assert not re.search(rf"\b{term}", general_text), term


def test_text_lengths_fit_the_budget():
  tok = synth_tok()
  for domain in DOMAINS:
    for ex in examples(domain, 100, split="test"):
      assert len(tok.encode(ex["caption"])) <= 32, ex["caption"]
      for q in ex["qa"]:
        n = len(tok.encode(prompts.vqa_prompt(q["question"], q["options"]))) + \
            len(tok.encode(q["answer"]))
        assert n <= 24, (q, n)


def test_generation_speed():
  """Figure for the report (20k examples must take <= ~60 s on the dev box)."""
  for domain in DOMAINS:
    t0 = time.perf_counter()
    synthetic.generate_examples(domain, "train", 150, seed=7)
    per_ex = (time.perf_counter() - t0) / 150
    print(f"{domain}: {per_ex * 1e3:.2f} ms/example -> {per_ex * 2e4:.0f} s for 20k")
    assert per_ex < 0.02  # loose: the machine is shared


def test_show_grid(tmp_path):
  from PIL import Image
  out = synthetic.show_grid("synthetic_sports", str(tmp_path / "g.png"), num=3)
  assert Image.open(out).size[0] > 300


# --- TFDS / ArrayRecord -----------------------------------------------------------------

def test_tfds_roundtrip(tmp_path):
  path = synthetic_builder.build("synthetic_sports", str(tmp_path), num_train=5, num_test=2,
                                 seed=1)
  train = datasets.load_source(path, "train")
  assert len(train) == 5 and len(datasets.load_source(path, "test")) == 2
  assert train.ids() == [f"sports-train-{i:06d}" for i in range(5)]
  want = synthetic.generate_examples("synthetic_sports", "train", 5, 1)
  for i, w in enumerate(want):
    got = train[i]
    assert got["image"].dtype == np.uint8 and np.array_equal(got["image"], w["image"])
    assert got["qa"] == w["qa"] and got["facts"] == w["facts"] and got["caption"] == w["caption"]
  name = "synthetic_sports/" + synthetic_builder.config_name(5, 2, 1, 0.15, 32, 5)
  assert len(datasets.load_source(name, "test", str(tmp_path))) == 2
  with pytest.raises(FileNotFoundError, match="build it first"):
    datasets.load_source("synthetic_general/nope", "train", str(tmp_path))


def _raw(**over):
  raw = base.to_record(examples("synthetic_endoscopy")[0])
  raw = {k: (v.encode() if isinstance(v, str) else v) for k, v in raw.items()}
  raw["qa"] = {k: [q[k].encode() for q in raw["qa"]] for k in raw["qa"][0]}
  raw.update(over)
  return raw


def test_bad_source_examples_raise_naming_the_id():
  types = set(synthetic.question_types("synthetic_endoscopy"))
  assert base.decode_example(_raw(), types)["qa"] == examples("synthetic_endoscopy")[0]["qa"]
  bad_qa = _raw()["qa"]
  cases = {
      "missing image bytes": _raw(id=b"ex-1", image=b""),
      "corrupt image bytes": _raw(id=b"ex-1", image=b"\x89PNG not really"),
      "empty question": _raw(id=b"ex-1", qa={**bad_qa, "question": [b" "] + bad_qa["question"][1:]}),
      "unknown question type": _raw(id=b"ex-1", qa={**bad_qa, "type": [b"riddle"] * 5}),
  }
  for problem, raw in cases.items():
    with pytest.raises(DataError, match=f"'ex-1'.*{problem}"):
      base.decode_example(raw, types)
  with pytest.raises(DataError, match="'ex-1'"):  # also through the grain source
    base.Source([cases["corrupt image bytes"]], types)[0]
  with pytest.raises(DataError, match="empty question"):
    records.vqa_records([{**examples("synthetic_general")[0],
                           "qa": [{"question": "", "answer": "yes"}]}])


# --- tokenizer and prompts --------------------------------------------------------------

def test_tokenizer_round_trip_and_specials(tmp_path):
  tok = synth_tok()
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)
  texts = [ex["caption"] for d in DOMAINS for ex in examples(d, 20)]
  texts += ["Where in the image is the abnormality? <5mm; 5-10mm", "Ünïcode ✓ tabs\tand\nnewlines"]
  for t in texts:
    assert tok.decode(tok.encode(t)) == t
  ids = tok.encode("yes")
  assert len(ids) == 1  # domain words are single tokens
  assert tok.decode([tok.bos_id] + ids + [tok.eos_id] + tok.encode(" junk")) == "yes"
  path = tmp_path / "tokenizer.json"
  corpus = synthetic.corpus(num_per_domain=20)
  a = tokenizer.train_tokenizer(corpus, str(path), vocab_size=400)
  b = tokenizer.load_tokenizer(str(tmp_path))
  assert a.encode(texts[0]) == b.encode(texts[0])
  assert path.read_text() == tokenizer.train_tokenizer(corpus, vocab_size=400).tok.to_str(
      pretty=True)  # training is deterministic
  assert isinstance(b, tokenizer.Tokenizer)


def test_prompts_round_trip():
  for d in DOMAINS:
    for ex in examples(d, 30):
      for q in ex["qa"]:
        text = prompts.qa_gen_target(q["question"], q["answer"], q["options"])
        assert prompts.parse_qa_gen(text) == (q["question"], q["answer"], q["options"])
  assert prompts.vqa_prompt("Which way?", {"B": "up", "A": "left"}) == "Which way? A. left B. up"
  for bad in ["", "answer: yes", "Is it? answer: ", "Q? options: B. x A. y answer: A",
              "Q? options: A. x B. y answer: C", None, 3]:
    assert prompts.parse_qa_gen(bad) is None, bad


@settings(max_examples=300, deadline=None)
@given(st.text() | st.builds(lambda a, b: f"{a} options: A. {b} answer: {a}", st.text(), st.text()))
def test_parse_qa_gen_never_raises(text):
  out = prompts.parse_qa_gen(text)
  assert out is None or (out[0] and out[1])


# --- pipeline ----------------------------------------------------------------------------

class CharTok:
  """Independent toy tokenizer: one id per character (ids 3..), no merges."""
  pad_id, bos_id, eos_id, vocab_size = 0, 1, 2, 300

  def encode(self, text):
    return [3 + ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i - 3) for i in ids if i > 2)


def test_encode_example_layout_by_hand():
  img = np.array([[[0, 255, 51]]], np.uint8)
  out = encoders.encoder_for(CharTok(), 8).encode_example(img, "ab", "c")
  sep = 3 + ord("\n")
  assert out["text"].tolist() == [1, 100, 101, sep, 102, 2, 0, 0]
  assert out["mask_ar"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
  assert out["mask_loss"].tolist() == [0, 0, 0, 0, 1, 1, 0, 0]
  assert out["mask_input"].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
  assert out["text"].dtype == np.int32
  np.testing.assert_allclose(out["image"], [[[-1.0, 1.0, 51 / 127.5 - 1]]], rtol=1e-6)


def test_truncation_keeps_bos_separator_and_eos():
  before = dict(packing.TRUNCATIONS)
  out = encoders.text.encode_text("abcdef", "xy", CharTok(), text_len=6)  # prompt cut
  sep = 3 + ord("\n")
  assert out["text"].tolist() == [1, 100, sep, 123, 124, 2]
  out = encoders.text.encode_text("ab", "vwxyz", CharTok(), text_len=5)  # target cut, prompt gone
  assert out["text"].tolist() == [1, sep, 121, 122, 2]
  assert out["mask_loss"].tolist() == [0, 0, 1, 1, 1]
  assert packing.TRUNCATIONS["prompt"] == before.get("prompt", 0) + 2
  assert packing.TRUNCATIONS["target"] == before.get("target", 0) + 1


def _records(n=10):
  return records.vqa_records(examples("synthetic_sports"))[:n]


def test_batches_have_fixed_shapes():
  recs = records.vqa_records(examples("synthetic_endoscopy", 8))
  ds = pipeline.make_dataset(recs, encoders.encoder_for(synth_tok(), 32), batch_size=4, seed=0,
                             shard_index=0, shard_count=1)
  batch = next(iter(ds))
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
  for k in ("text", "mask_ar", "mask_loss", "mask_input"):
    assert batch[k].shape == (4, 32) and batch[k].dtype == np.int32
  assert batch["index"].shape == (4,)
  for row, i in enumerate(batch["index"]):  # the answer letter is what the loss sees
    target = batch["text"][row][batch["mask_loss"][row] == 1]
    assert synth_tok().decode(target) == recs[i]["answer"]
  recs = records.vqa_records(examples("synthetic_sports", 8), mc_answer="text")
  assert recs[0]["target"] == recs[0]["options"][recs[0]["answer"]]


def test_epoch_covers_rows_in_a_new_order_each_epoch():
  recs = _records(10)
  kw = dict(batch_size=None, seed=1, shard_index=0, shard_count=1)
  enc = encoders.encoder_for(CharTok(), 32)
  one = [int(e["index"]) for e in pipeline.make_dataset(recs, enc, num_epochs=1, **kw)]
  assert sorted(one) == list(range(10)) and one != list(range(10))  # all rows, shuffled
  epoch2 = [int(e["index"]) for e in pipeline.make_dataset(recs, enc, num_epochs=2, **kw)]
  assert sorted(epoch2[10:]) == list(range(10)) and epoch2[10:] != epoch2[:10]


def test_process_shards_split_each_global_batch():
  """Process i reads rows [i*b, (i+1)*b) of every global batch: concatenated in process order,
  the shards are exactly the one-process batches, so the global batch does not depend on the
  number of processes."""
  enc = encoders.encoder_for(CharTok(), 32)
  ds = lambda i, n: iter(pipeline.make_dataset(_records(10), enc, batch_size=6, seed=3,
                                               shard_index=i, shard_count=n, prefetch=0))
  whole, parts = ds(0, 1), [ds(i, 3) for i in range(3)]
  for _ in range(4):  # crosses epochs
    want = next(whole)["index"]
    got = [next(p)["index"] for p in parts]
    assert all(len(g) == 2 for g in got)
    assert np.array_equal(np.concatenate(got), want)
  with pytest.raises(ConfigError, match="divide evenly over 4 processes"):
    ds(0, 4)


def test_mixture_follows_weights():
  enc = encoders.encoder_for(CharTok(), 32)
  kw = dict(batch_size=None, shard_index=0, shard_count=1)
  a = pipeline.make_dataset(_records(10), enc, seed=0, **kw)
  b = pipeline.make_dataset(_records(7), enc, seed=1, **kw)
  mixed = pipeline.mix([a, b], [0.8, 0.2], batch_size=20)
  it = iter(mixed)
  sources = np.concatenate([next(it)["source"] for _ in range(10)])
  assert abs(np.mean(sources == 0) - 0.8) < 0.02
  state, want = it.get_state(), next(it)  # mixtures resume too
  again = iter(mixed)
  again.set_state(state)
  got = next(again)
  assert np.array_equal(got["source"], want["source"]) and np.array_equal(got["index"], want["index"])


def test_iterator_state_resumes_at_the_same_batch():
  ds = pipeline.make_dataset(_records(10), encoders.encoder_for(CharTok(), 32), batch_size=3,
                             seed=5, shard_index=0, shard_count=1)
  it = iter(ds)
  for _ in range(4):  # crosses an epoch boundary
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  expected = [next(it) for _ in range(3)]
  resumed = iter(ds)
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert np.array_equal(got["index"], want["index"])
    assert np.array_equal(got["text"], want["text"])


def test_hf_adapter_matches_the_native_tokenizer():
  import transformers
  tok = synth_tok()
  hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tok.tok, bos_token="<bos>",
                                            eos_token="<eos>", pad_token="<pad>")
  wrapped = tokenizer.HFTokenizer(hf)
  assert (wrapped.pad_id, wrapped.bos_id, wrapped.eos_id) == (0, 1, 2)
  text = examples("synthetic_endoscopy")[0]["caption"]
  assert wrapped.encode(text) == tok.encode(text)
  ids = [1] + tok.encode(text) + [2, 5]
  assert wrapped.decode(ids) == tok.decode(ids) == text
