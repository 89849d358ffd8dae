"""A transformers processor's output as our batch, for comparing `generate` with transformers.

Axis letters as in leaml_jax/models/__init__.py (T the processor's sequence length, L ours).
"""
import numpy as np

from leaml_jax.models.hf.processor_inputs import inline_inputs
from leaml_jax.models.vlm import VLM


def batch_from_hf_inputs(model: VLM, **inputs) -> dict[str, np.ndarray]:
  """Processor dict -> our batch (image, text, mask_ar, mask_input), rows left-aligned.

  For `leaml_jax.generate.generate` on prompts a processor made (either padding side).
  PaliGemma (prefix layout): image tokens dropped from the text; image [B,height,width,3] for
  one image per row, [B,I,height,width,3] for I (their tokens must lead each row, as the
  processor puts them). Qwen2-VL / Qwen2.5-VL: image [B,I,height,width,3·frames], videos as their
  temporal patches; a Qwen2.5-VL video batch's fps is `inline_inputs(...)[0].seconds_per_patch`,
  which the model generating it must carry (the batch has no field for it).
  """
  cfg, image, ids_BT, mask_ar_BT, valid_BT = inline_inputs(model, inputs)
  keep_BT = valid_BT.astype(bool)
  if model.cfg.image_token_id is None:
    if "token_type_ids" not in inputs:
      raise ValueError("hf: the image-prefix layout needs token_type_ids (the processor's prefix/suffix)")
    keep_BT &= ids_BT != cfg.image_token_id
    image = image[:, 0] if image.shape[1] == 1 else image
  B, L = ids_BT.shape[0], int(keep_BT.sum(axis=1).max())
  text_BL, mask_ar_BL, mask_input_BL = (np.zeros((B, L), np.int32), np.ones((B, L), np.int32),
                                        np.zeros((B, L), np.int32))
  for b in range(B):
    n = int(keep_BT[b].sum())
    text_BL[b, :n], mask_ar_BL[b, :n], mask_input_BL[b, :n] = ids_BT[b, keep_BT[b]], mask_ar_BT[b, keep_BT[b]], 1
  return {"image": image, "text": text_BL, "mask_ar": mask_ar_BL, "mask_input": mask_input_BL}
