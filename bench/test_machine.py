"""The machine record of bench/run.py (bench/machine.py): the CPU and its INT8 SIMD extensions.

Run: .venv/bin/python -m pytest bench/test_machine.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import machine  # noqa: E402


def test_cpu_info_x86(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nmodel name\t: AMD EPYC 9999\n'
                    'flags\t\t: fpu sse avx2 avx512f avx512_vnni avx_vnni\n\n'
                    'processor\t: 1\nmodel name\t: AMD EPYC 9999\nflags\t\t: fpu avx2\n')
    got = machine.cpu_info(str(info))
    assert got == {'cpu': 'AMD EPYC 9999', 'simd': ['avx2', 'avx512f', 'avx512_vnni', 'avx_vnni']}


def test_cpu_info_arm_dotprod(tmp_path):
    info = tmp_path / 'cpuinfo'
    info.write_text('processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 asimddp\n'
                    'CPU part\t: 0xd0b\n\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n')
    got = machine.cpu_info(str(info))
    assert got['simd'] == ['asimddp']
    assert got['cpu'] == 'Raspberry Pi 5 Model B Rev 1.0'


def test_machine_line_old_and_new():
    old = {'date': '2026-11-22 06:56:52', 'cpus': 2}
    assert machine.machine_line(old) == '2026-11-22 06:56, 2 CPUs'
    new = dict(old, cpu='X', simd=[])
    assert machine.machine_line(new) == '2026-11-22 06:56, X (no AVX2/VNNI), 2 CPUs'
