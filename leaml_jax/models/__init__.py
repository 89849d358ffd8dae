"""Model layer: presets (configs), SigLIP ViT, decoder LM, the VLM. See models/vlm.py for usage."""
from leaml_jax.models.presets import LMConfig, ViTConfig, VLMConfig, config_from_dict, get, to_dict  # noqa: F401
from leaml_jax.models.vlm import VLM, count_params, dummy_inputs  # noqa: F401
