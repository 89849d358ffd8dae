"""leaml_jax: label-efficient adaptation of VLMs (LEAML) in JAX/Flax."""
