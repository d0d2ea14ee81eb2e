"""The machine a benchmark ran on: CPU model, the SIMD extensions that decide INT8 vs FP32
speed, and a one-line summary for the tables (bench/run.py, bench_perception)."""

import os
import platform
import time


SIMD_FLAGS = ('avx2', 'avx512f', 'avx512_vnni', 'avx_vnni', 'avx512_bf16', 'amx_int8',
              'asimddp', 'i8mm')  # x86 and Arm (asimddp: SDOT, the Pi 5's INT8 dot product)


def cpu_info(cpuinfo='/proc/cpuinfo'):
    """The CPU model and the SIMD extensions that decide INT8 vs FP32 speed (VNNI/SDOT: one
    instruction per 4 INT8 multiply-adds; without them INT8 GEMM is ~2x FP32, with them ~4x+)."""
    model, flags = None, set()
    try:
        with open(cpuinfo) as stream:
            for line in stream:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('model name', 'Model') and model is None:
                    model = value.strip()
                elif key in ('flags', 'Features'):
                    flags.update(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    return {'cpu': model, 'simd': [f for f in SIMD_FLAGS if f in flags]}


def machine():
    return {'python': platform.python_version(), 'machine': platform.machine(),
            'cpus': os.cpu_count(), **cpu_info(), 'date': time.strftime('%Y-%m-%d %H:%M:%S')}


def machine_line(m):
    """'2026-12-07 17:59, AMD EPYC (avx2 avx512f avx512_vnni), 2 CPUs' (older results: no CPU)."""
    cpu = f"{m['cpu']} ({' '.join(m['simd']) or 'no AVX2/VNNI'}), " if 'cpu' in m else ''
    return f"{m['date'][:16]}, {cpu}{m['cpus']} CPUs"
