"""Tiny random transformers families (PaliGemma, PaliGemma 2, SmolVLM, Gemma 3, Qwen2-VL, Qwen2.5-VL)
saved as checkpoint directories.

Built with transformers' own config/model classes, saved with `save_pretrained`, and fed
batches from real processors (built offline around a tiny word-level tokenizer). Every weight,
norms and biases included, is randomised so that a swapped mapping cannot hide.
"""
import dataclasses
import functools
import tempfile
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil, Gemma3Processor,
                          Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessorPil,
                          Idefics3Processor, PaliGemmaConfig, PaliGemmaForConditionalGeneration,
                          PaliGemmaProcessor, PreTrainedTokenizerFast, Qwen2_5_VLConfig,
                          Qwen2_5_VLForConditionalGeneration, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                          Qwen2VLImageProcessorPil, SiglipImageProcessorPil)

from leaml_jax.models import hf

WINDOW = 24     # PaliGemma 2 sliding window: prompts fit in it, prompt + answer do not
GEMMA3_WINDOW = 10   # Gemma 3 sliding window: shorter than one image's 16 tokens, so it cuts image blocks
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              image_size=32, patch_size=8)
TEXT = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=12)


def word_tokenizer(specials, named=None, add_bos=False):
  """Word-level tokenizer: <pad> <eos> <bos> <unk> \n w0..w59, then `specials`; `named`: special
  tokens the processor looks up by name (extra_special_tokens); add_bos: prepend <bos> as Gemma's."""
  words = ["<pad>", "<eos>", "<bos>", "<unk>", "\n"] + [f"w{i}" for i in range(60)]
  tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"),
                                               pre_tokenizers.Split("\n", "isolated")])
  if add_bos:
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
  t = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                              pad_token="<pad>", unk_token="<unk>", extra_special_tokens=named or {})
  if specials:
    t.add_special_tokens({"additional_special_tokens": specials})
  return t


def randomise(model, seed):
  """Kernels ~ N(0, 1/fan_in) (clear greedy winners, unlike HF's 0.02 init); 1-D params jittered."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      if p.ndim == 1:
        p.add_(0.1 * torch.randn(p.shape, generator=g))
      else:
        p.copy_(torch.randn(p.shape, generator=g) / np.sqrt(np.prod(p.shape[1:])))
    # Full-size (tied) embeddings dominate the residual stream and greedy decoding then repeats
    # its input token forever; smaller ones give varied continuations to compare.
    model.get_input_embeddings().weight.mul_(0.3)
  return model.eval()


def words(rng, n):
  return " ".join(f"w{i}" for i in rng.integers(0, 60, n))


def images(rng, sizes):
  return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@dataclasses.dataclass
class Family:
  name: str
  hf_model: object
  processor: object
  directory: Path

  @functools.cached_property
  def loaded(self):
    return hf.load(self.directory, dtype="float32")

  def batch(self, purpose, padding_side):
    """Processor output: "logits" (prompt + answer, several lengths) or "generate" (prompts only)."""
    rng = np.random.default_rng(len(purpose))
    self.processor.tokenizer.padding_side = padding_side
    kw = dict(return_tensors="pt", padding="longest")
    if self.name.startswith("paligemma"):
      prompts = ["<image>" + words(rng, 5), "<image>" + words(rng, 2)]
      if purpose == "logits":
        kw["suffix"] = [words(rng, 14), words(rng, 6)]
      return self.processor(images=images(rng, [(40, 50), (30, 20)]), text=prompts, **kw)
    if self.name.startswith("qwen"):  # two images in the first row, one in the second, all 56x84 pixels
      img = "<|vision_start|><|image_pad|><|vision_end|>"
      text = [f"{words(rng, 2)}{img}{words(rng, 3)}{img}", f"{img}{words(rng, 2)}"]
      if purpose == "logits":
        text = [text[0] + words(rng, 6), text[1] + words(rng, 14)]
      return self.processor(images=[images(rng, [(56, 84), (56, 84)]), images(rng, [(56, 84)])], text=text, **kw)
    if self.name.startswith("gemma3"):  # two images in the first row, one in the second
      text = [f"{words(rng, 2)}<start_of_image>{words(rng, 3)}<start_of_image>", f"<start_of_image>{words(rng, 2)}"]
      if purpose == "logits":
        text = [text[0] + words(rng, 6), text[1] + words(rng, 14)]
      return self.processor(images=[images(rng, [(40, 50), (20, 30)]), images(rng, [(30, 30)])], text=text, **kw)
    text = [f"<image>{words(rng, 2)}<image>{words(rng, 3)}\n", f"{words(rng, 1)}<image>{words(rng, 2)}"]
    if purpose == "logits":
      text = [t + words(rng, 4) for t in text]
    return self.processor(images=[images(rng, [(40, 50), (20, 30)]), images(rng, [(30, 30)])], text=text, **kw)

  @functools.cached_property
  def logits(self):
    """(transformers, ours, attention_mask) on the "logits" batch."""
    inputs = self.batch("logits", "left" if self.name == "paligemma2" else "right")
    with torch.no_grad():
      ref = self.hf_model(**inputs).logits.numpy()
    model, params, _ = self.loaded
    return ref, hf.logits_from_hf_inputs(model, params, **inputs), inputs["attention_mask"].numpy().astype(bool)


def _paligemma(name, directory):
  text = dict(TEXT, model_type="gemma", vocab_size=1280)
  if name == "paligemma2":
    text.update(model_type="gemma2", sliding_window=WINDOW, query_pre_attn_scalar=16,
                attn_logit_softcapping=50.0, final_logit_softcapping=30.0)
  ip = SiglipImageProcessorPil(size={"height": 32, "width": 32})
  ip.image_seq_length = 16
  processor = PaliGemmaProcessor(image_processor=ip, tokenizer=word_tokenizer([]))
  assert len(processor.tokenizer) <= 1280  # the processor adds <image> and 1152 <loc>/<seg> tokens
  cfg = PaliGemmaConfig(vision_config=dict(VISION, vision_use_head=False), text_config=text,
                        image_token_index=processor.image_token_id, vocab_size=1280, projection_dim=48,
                        hidden_size=48)
  model = randomise(PaliGemmaForConditionalGeneration(cfg), seed=len(name))
  return model, processor


def _smolvlm(directory):
  rows = [f"<row_{i}_col_{j}>" for i in (1, 2) for j in (1, 2)]
  tok = word_tokenizer(["<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *rows])
  ip = Idefics3ImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                 do_image_splitting=True)
  processor = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4)
  cfg = Idefics3Config(vision_config=VISION, text_config=dict(TEXT, model_type="llama", vocab_size=128),
                       scale_factor=2, image_token_id=tok.convert_tokens_to_ids("<image>"))
  return randomise(Idefics3ForConditionalGeneration(cfg), seed=3), processor


# Gemma 3's chat template (google/gemma-3-4b-it), system-turn handling left out.
GEMMA3_CHAT = (
    "{{ bos_token }}{%- for message in messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '<end_of_turn>\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}")


def _gemma3(chat):
  """SigLIP 32x32 in 2x2 patches (256), pooled 4x4 to 16 tokens per image; 7 layers, so local
  layers 0-4 and 6 and global layer 5, with the 4B model's RoPE (linear x8 on the global ones)."""
  named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
  tok = word_tokenizer([*named.values(), "<start_of_turn>", "<end_of_turn>"], named, add_bos=True)
  processor = Gemma3Processor(image_processor=Gemma3ImageProcessorPil(size={"height": 32, "width": 32}),
                              tokenizer=tok, image_seq_length=16, chat_template=GEMMA3_CHAT if chat else None)
  text = dict(TEXT, num_hidden_layers=7, vocab_size=128, sliding_window=GEMMA3_WINDOW, query_pre_attn_scalar=16,
              rope_scaling=dict(rope_type="linear", factor=8.0))
  cfg = Gemma3Config(vision_config=dict(VISION, patch_size=2, vision_use_head=False), text_config=text,
                     mm_tokens_per_image=16, image_token_index=tok.image_token_id, boi_token_index=tok.boi_token_id,
                     eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"))
  return randomise(Gemma3ForConditionalGeneration(cfg), seed=11), processor


class Qwen2VLInputs:
  """What Qwen2VLProcessor / Qwen2_5_VLProcessor return for images, videos and text, built from the
  image processor and tokenizer: the processors cannot be made without torchvision (their video
  processor needs it). Videos (lists of equal-size uint8 frames, an even number) are resized and
  normalised frame by frame by the image processor and laid out as Qwen2VLVideoProcessor lays them
  out: per temporal patch of 2 frames, the image processor's patch order with the two frames along
  the temporal axis (video_processing_qwen2_vl.py `_preprocess`); second_per_grid_ts = 2 / fps
  (Qwen2.5-VL)."""

  def __init__(self, image_processor, tokenizer, with_seconds=False):
    self.image_processor, self.tokenizer, self.with_seconds = image_processor, tokenizer, with_seconds

  def _videos(self, videos, fps):
    ip, patches, grids = self.image_processor, [], []
    T, p = ip.temporal_patch_size, ip.patch_size
    for frames in videos:
      assert len(frames) % T == 0
      out = ip(images=list(frames), return_tensors="np")
      (_, h, w), n = out["image_grid_thw"][0], len(frames)
      per_frame = out["pixel_values"].reshape(n, h * w, 3, T, p, p)[:, :, :, 0]  # each frame is repeated T times
      clip = per_frame.reshape(n // T, T, h * w, 3, p, p).transpose(0, 2, 3, 1, 4, 5)
      patches.append(clip.reshape(n // T * h * w, 3 * T * p * p))
      grids.append([n // T, h, w])
    out = {"pixel_values_videos": torch.tensor(np.concatenate(patches)), "video_grid_thw": torch.tensor(grids)}
    if self.with_seconds:
      out["second_per_grid_ts"] = torch.tensor([T / fps] * len(videos))
    return out

  def __call__(self, images=None, text=None, videos=None, fps=2.0, return_tensors="pt", padding="longest"):
    out = {}
    if images:
      out.update(self.image_processor(images=[im for row in images for im in row], return_tensors=return_tensors))
    if videos:
      out.update(self._videos([v for row in videos for v in row], fps))
    m2 = self.image_processor.merge_size ** 2
    for pad, key in (("<|image_pad|>", "image_grid_thw"), ("<|video_pad|>", "video_grid_thw")):
      if key in out:
        counts = iter((out[key].prod(-1) // m2).tolist())
        text = [t.replace(pad, "\0").replace("\0", "{}").format(*[pad * next(counts) for _ in range(t.count(pad))])
                for t in text]
    tok = self.tokenizer(text, return_tensors=return_tensors, padding=padding)
    kind = (tok["input_ids"] == self.tokenizer.image_token_id).int() + 2 * (
        tok["input_ids"] == self.tokenizer.video_token_id).int()
    return {**tok, **out, "mm_token_type_ids": kind}


def _qwen2_vl():
  """Its tower in 14-pixel patches, 2x2 merged: a 56x84 image is 4x6 patches, 2x3 = 6 tokens;
  M-RoPE sections (2, 2, 2) of head_dim 12."""
  named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
  tok = word_tokenizer(["<|vision_start|>", "<|vision_end|>", *named.values()], named)
  ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112)
  processor = Qwen2VLInputs(ip, tok)
  text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=128, rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 2, 2]),
              pad_token_id=0, eos_token_id=1, bos_token_id=2)
  vision = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=4, mlp_ratio=2, patch_size=14)
  cfg = Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=tok.image_token_id,
                      video_token_id=tok.video_token_id,
                      vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"))
  return randomise(Qwen2VLForConditionalGeneration(cfg), seed=13), processor


def _qwen2_5_vl():
  """The 2.5 tower in 14-pixel patches, 2x2 merged, 4 blocks: 1 and 3 attend over the whole image,
  0 and 2 within 56-pixel windows (4x4 patches, 2x2 tokens), so a 112x84 image (8x6 patches) has
  four windows, two of them cut by its right edge. Untied LM head (as the 7B and 72B), M-RoPE
  sections (2, 2, 2), tokens_per_second 2 (as the released checkpoints)."""
  named = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"}
  tok = word_tokenizer(["<|vision_start|>", "<|vision_end|>", *named.values()], named)
  processor = Qwen2VLInputs(Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112), tok, with_seconds=True)
  text = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=128, rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 2, 2]),
              pad_token_id=0, eos_token_id=1, bos_token_id=2)
  vision = dict(depth=4, hidden_size=32, intermediate_size=40, num_heads=4, out_hidden_size=48, patch_size=14,
                window_size=56, fullatt_block_indexes=[1, 3], tokens_per_second=2)
  cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, image_token_id=tok.image_token_id,
                         video_token_id=tok.video_token_id, tie_word_embeddings=False,
                         vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"))
  return randomise(Qwen2_5_VLForConditionalGeneration(cfg), seed=17), processor


@functools.lru_cache(maxsize=None)
def family(name) -> Family:
  """"paligemma", "paligemma2", "smolvlm", "gemma3" (no chat template), "gemma3_chat", "qwen2_vl" or
  "qwen2_5_vl"."""
  directory = Path(tempfile.mkdtemp(prefix=f"hf_{name}_"))
  if name == "qwen2_vl":
    model, processor = _qwen2_vl()
  elif name == "qwen2_5_vl":
    model, processor = _qwen2_5_vl()
  elif name.startswith("gemma3"):
    model, processor = _gemma3(chat=name == "gemma3_chat")
  else:
    model, processor = _smolvlm(directory) if name == "smolvlm" else _paligemma(name, directory)
  model.save_pretrained(directory, safe_serialization=True)
  if not name.startswith("qwen"):
    processor.save_pretrained(directory)
  return Family(name, model, processor, directory)
