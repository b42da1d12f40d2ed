"""What the Keras backend computes on, and the precision a trial trains in there.

Works the same on the TensorFlow, JAX and PyTorch backends; nothing is imported that the backend
in use does not already need.
"""
import platform

import keras

def _cpu():
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:  # not Linux: no flags, so float32 only
        pass
    return name, flags


def find_device():
    """(kind, name, detail): ("gpu", name, (major, minor) compute capability), ("tpu", name, None)
    or ("cpu", name, set of CPU flags), for the first device the Keras backend uses."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        d = jax.devices()[0]
        if d.platform == "gpu":
            cc = getattr(d, "compute_capability", None)  # "9.0" on NVIDIA GPUs
            return "gpu", d.device_kind, tuple(int(v) for v in cc.split(".")) if cc else None
        if d.platform == "tpu":
            return "tpu", d.device_kind, None
    elif backend == "tensorflow":
        import tensorflow as tf  # the backend in use: only asked which GPUs it sees
        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return "gpu", details.get("device_name", gpus[0].name), details.get("compute_capability")
    elif backend == "torch":
        import torch
        if torch.cuda.is_available():
            return "gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0)
    return ("cpu", *_cpu())


def describe(device=None):
    kind, name, detail = device or find_device()
    extra = f", compute capability {detail[0]}.{detail[1]}" if kind == "gpu" and detail else ""
    return f"{kind.upper()}: {name}{extra} (Keras {keras.__version__}, backend {keras.backend.backend()})"


def supported_precisions(device=None):
    """The precisions the hardware computes natively (emulated ones are many times slower)."""
    kind, _, detail = device or find_device()
    if kind == "tpu":
        return ["float32", "mixed_bfloat16"]
    if kind == "gpu":  # tensor cores: float16 from Volta (7.0), bfloat16 from Ampere (8.0)
        cc = detail or (0, 0)
        return ["float32"] + ["mixed_float16"] * (cc >= (7, 0)) + ["mixed_bfloat16"] * (cc >= (8, 0))
    # CPUs: bfloat16 where the instructions exist. float16 ran at 0.3 images/s on a CPU that has
    # avx512_fp16 (bench/throughput.py, TensorFlow 2.20): emulated, so never offered on CPUs.
    return ["float32"] + ["mixed_bfloat16"] * bool((detail or set()) & {"avx512_bf16", "amx_bf16"})


def choose_precision(name="auto", device=None):
    """The Keras dtype policy for --precision NAME; auto picks the fastest one that trains as well."""
    if name != "auto":
        return name
    kind, _, detail = device or find_device()
    supported = supported_precisions((kind, None, detail))
    if kind in ("gpu", "tpu") and "mixed_bfloat16" in supported:
        return "mixed_bfloat16"  # as fast as float16 on tensor cores, and needs no loss scaling
    if kind == "gpu" and "mixed_float16" in supported:
        return "mixed_float16"  # Volta and Turing; Keras adds dynamic loss scaling
    return "float32"  # CPUs: see "Precision" in the README for the measurement behind this
