"""Every test process sees 8 fake CPU devices, so sharding is tested without accelerators.

Set before jax is imported anywhere; tests that want one device build a 1-device mesh.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# A persistent XLA compilation cache of this test session only (main.enable_compilation_cache reads
# LEAML_COMPILATION_CACHE): the subprocess runs reuse each other's compilations (without any cache
# the suite took 28 min 39 s on a 2-core CPU, 2026-12-02), and no test loads executables written by other runs or
# other jobs sharing ~/.cache/leaml_jax/xla (with that shared cache, processes that train and
# generate aborted now and then inside XLA:CPU).
if "LEAML_COMPILATION_CACHE" not in os.environ:
  import tempfile
  os.environ["LEAML_COMPILATION_CACHE"] = tempfile.mkdtemp(prefix="leaml_test_xla_cache_")
