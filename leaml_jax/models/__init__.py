"""Model layer: presets (configs), SigLIP ViT, decoder LM, the VLM, HF interop. See models/vlm.py for usage.

Axis letters, one meaning in every module under models/ (shape suffixes such as `x_BTD`, and
shapes in docstrings); each module's legend only adds which sizes it meets:
  B  batch rows
  T  sequence positions a model runs over (its queries); in the VLM image-prefix tokens + text
  S  key positions attended to (the KV-cache length when decoding)
  L  text positions (the VLM's `text` input)
  I  images per row (several images, or video frames)
  P  tokens of one image: the ViT's patches, fewer after a pixel-shuffle connector
  D  width of the residual stream of the tower at hand (the ViT's in vit.py, the LM's elsewhere)
  E  the LM width the vision connector maps ViT tokens to (vit.py; D once they are in the LM)
  F  MLP hidden units (the LEAML neurons)
  N  query heads;  K  key/value heads;  G = N // K query heads per key/value head
  H  head_dim
  V  vocabulary
Layers are written out as `depth` (a stacked KV cache is [depth,B,S,K,H]), and so are pixel
axes (an image is [B,height,width,3]), so that no letter means two things.
"""
from leaml_jax.models.presets import LMConfig, ViTConfig, VLMConfig, config_from_dict, get, to_dict  # noqa: F401
from leaml_jax.models.vlm import VLM, count_params, dummy_inputs  # noqa: F401
