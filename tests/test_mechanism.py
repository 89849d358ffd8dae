"""Ground truth for LEAML's chain on the synthetic worlds: true answers to generated questions and
the facts a caption states, checked against what the world itself recorded (gold QA, the teacher's
own audited claims)."""
import pytest

from leaml_jax.data import datasets
from leaml_jax.data.datasets import synthetic

DOMAINS = ("synthetic_sports", "synthetic_endoscopy", "synthetic_general")


@pytest.mark.parametrize("domain", DOMAINS)
def test_true_answer_is_the_gold_answer_of_every_generated_qa(domain):
  for ex in synthetic.generate_examples(domain, "train", 30, 0):
    for q in ex["qa"]:
      gold = q["options"][q["answer"]] if q["options"] else q["answer"]
      assert datasets.true_answer(domain, ex, q["question"]) == gold
  assert datasets.true_answer(domain, ex, "What is the meaning of life?") is None


@pytest.mark.parametrize("domain", DOMAINS)
def test_caption_statements_recover_the_teachers_audited_claims(domain):
  # At a 30% error rate the teacher says many wrong values; each one is recovered from its text.
  for ex in synthetic.generate_examples(domain, "train", 30, 0, caption_error_rate=0.3):
    stated = datasets.caption_statements(domain, ex, ex["caption"])
    assert [(s["fact"], s["said"], s["true"]) for s in stated] == [
        (c["fact"], c["said"], c["true"]) for c in ex["caption_claims"]]
    assert all(s["said"] == s["true"] for s in datasets.caption_statements(domain, ex, ex["gt_caption"]))


def test_a_caption_that_names_nothing_states_nothing():
  ex = synthetic.generate_examples("synthetic_sports", "train", 1, 0)[0]
  stated = datasets.caption_statements("synthetic_sports", ex, "")
  assert [s["said"] for s in stated] == [None] * len(stated)


def test_datasets_without_hidden_facts_have_no_ground_truth():
  ex = {"id": "x", "facts": {}, "qa": []}
  assert datasets.true_answer("kvasir_vqa", ex, "Is there a polyp?") is None
  assert datasets.caption_statements("sportu_video", ex, "a caption") is None
