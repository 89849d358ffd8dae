"""Every test process sees 8 fake CPU devices, so sharding is tested without accelerators.

Set before jax is imported anywhere; tests that want one device build a 1-device mesh.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# No persistent XLA compilation cache in tests (main.enable_compilation_cache reads this; "0" = off):
# test processes then never load executables that other runs or concurrent subprocesses wrote. With
# the shared ~/.cache/leaml_jax/xla, tests that train and generate in one process aborted now and
# then (Fatal Python error: Aborted, inside an XLA:CPU execution); without it they did not.
os.environ.setdefault("LEAML_COMPILATION_CACHE", "0")
