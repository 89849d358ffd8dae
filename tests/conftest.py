"""Every test process sees 8 fake CPU devices, so sharding is tested without accelerators.

Set before jax is imported anywhere; tests that want one device build a 1-device mesh.
"""
import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
