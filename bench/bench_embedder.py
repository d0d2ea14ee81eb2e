"""Perception figures that need a bundle: latency of RootSIFT and VLAD + PCA, peak RSS of the
inference core with a 10k-tile database, and of the whole embedder node process."""

import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def bench_rootsift_vlad_latency(runs=40):
    """Median ms of RootSIFT features (224 px) and of VLAD + PCA alone, one thread."""
    import cv2
    from skyloc_perception.rootsift import RootSiftBackbone
    from skyloc_perception.vlad import Pca, Vlad
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    crop = cv2.resize(rng.integers(0, 255, (28, 28, 3), np.uint8), (224, 224))
    backbone = RootSiftBackbone(input_size=224)
    feats = backbone.features(crop)
    vlad = Vlad(feats[rng.choice(len(feats), 32, replace=False)])
    pca = Pca().fit(rng.standard_normal((600, vlad.dim)).astype(np.float32), 256)
    out = {}
    for label, fn in (('rootsift_224_ms', lambda: backbone.features(crop)),
                      ('vlad_pca_ms', lambda: pca.transform(vlad.encode(feats)[None, :]))):
        fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        out[label] = round(float(np.median(times)), 2)
    out['features'], out['vlad_dim'], out['pca_dim'] = len(feats), vlad.dim, 256
    return out


def vit_bundle(onnx_int8, out_dir, map_tiles):
    """An INT8 ViT bundle (vocabulary + PCA fitted on map tiles, written with write_bundle's
    defaults) for the memory figures; rebuilt if the cached one holds another model."""
    import shutil
    from skyloc_perception.bundle import load_bundle, write_bundle
    from skyloc_perception.vit_onnx import OnnxVitBackbone
    from skyloc_perception.vlad import fit_vocabulary, Pca, Vlad
    if os.path.isfile(os.path.join(out_dir, 'bundle.json')):
        bundle = load_bundle(out_dir)
        if os.path.basename(onnx_int8) in bundle.meta['files'] and \
                bundle.pca.components.dtype == np.float16:
            return bundle
        shutil.rmtree(out_dir)
    backbone = OnnxVitBackbone(onnx_int8, 224, threads=1)
    feats = [backbone.features(t) for t in map_tiles]
    vlad = Vlad(fit_vocabulary(np.concatenate(feats), k=32))
    vectors = np.stack([vlad.encode(f) for f in feats])
    pca = Pca().fit(vectors, min(256, len(vectors) - 1))
    return write_bundle(out_dir, 'onnx', 224, vlad.centers, pca, onnx_file=onnx_int8, layer=9,
                        facet='value')


def core_rss(bundle_dir, tiles=10000, dtype='float16'):
    """Peak RSS (MB) of bench/core_rss.py: the inference core without ROS, searching a random
    ``tiles``-row database of ``dtype`` (skyloc_localization's default is float16) written
    here beforehand, so that the measured process only maps it."""
    import tempfile
    sys.path.insert(0, HERE)
    import core_rss as script
    from skyloc_perception.bundle import load_bundle
    bundle = load_bundle(bundle_dir)
    dim = bundle.descriptor_dim
    with tempfile.TemporaryDirectory() as tmp:
        db = script.write_database(os.path.join(tmp, 'descriptors.npy'), tiles, dim, dtype)
        out = subprocess.run([sys.executable, os.path.join(HERE, 'core_rss.py'), bundle_dir,
                              '--database', db], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_mb(pid):
    with open(f'/proc/{pid}/status') as stream:
        return {line.split(':')[0]: round(int(line.split()[1]) / 1024, 1) for line in stream
                if line.startswith(('VmHWM:', 'VmRSS:', 'RssAnon:', 'RssFile:', 'RssShmem:'))}


def _top_mappings_mb(pid, count=12):
    """Resident MB per mapped file (anonymous memory as '[anon]'), largest first."""
    sizes, name = {}, None
    with open(f'/proc/{pid}/smaps') as stream:
        for line in stream:
            parts = line.split()
            if parts and '-' in parts[0] and not parts[0].endswith(':'):
                name = os.path.basename(parts[5]) if len(parts) > 5 else '[anon]'
            elif parts and parts[0] == 'Rss:':
                sizes[name] = sizes.get(name, 0) + int(parts[1])
    top = sorted(sizes.items(), key=lambda kv: -kv[1])[:count]
    return {k: round(v / 1024, 1) for k, v in top}


def embedder_node_rss(bundle_dir, seconds=8.0, domain=160):
    """Peak RSS (MB) of the embedder node process embedding 640x480 frames at 2 Hz; also its
    RSS once started (before any frame) and its largest mappings at the end (attribution)."""
    import math
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import FluidPressure, Image, Imu
    from skyloc_interfaces.msg import Descriptor
    from skyloc_sim.testing import start_node, stop_process, TestNode
    proc = start_node('skyloc_perception', 'embedder', 'embedder',
                      {'bundle': bundle_dir, 'footprint_m': 100.0, 'query_rate': 2.0}, domain,
                      os.path.join(ROOT, '.cache', 'bench'))
    probe = TestNode('rss_probe', domain)
    node, spin = probe.node, probe.spin
    got = []
    node.create_subscription(Descriptor, '/skyloc/descriptor', got.append, 10)
    img_pub = node.create_publisher(Image, '/camera/image_raw', qos_profile_sensor_data)
    imu_pub = node.create_publisher(Imu, '/imu/data', qos_profile_sensor_data)
    baro_pub = node.create_publisher(FluidPressure, '/baro', qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    frame = np.repeat(np.repeat(rng.integers(0, 255, (60, 80, 3), np.uint8), 8, 0), 8, 1)
    try:
        end = time.monotonic() + 20
        while img_pub.get_subscription_count() == 0 and time.monotonic() < end:
            spin(0.1)
        spin(1.0)
        started = _status_mb(proc.pid)
        t = 0.0
        for i in range(int(seconds * 10)):
            imu = Imu()
            imu.orientation.w = 1.0
            imu_pub.publish(imu)
            baro = FluidPressure()
            baro.fluid_pressure = 101325.0 if i < 5 else 101325.0 - 1180.0  # ~100 m
            baro_pub.publish(baro)
            if i % 5 == 0 and i >= 5:
                msg = Image()
                t += 0.5
                msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int((t % 1) * 1e9)
                msg.height, msg.width, msg.encoding, msg.step = 480, 640, 'rgb8', 1920
                msg.data = frame.tobytes()
                img_pub.publish(msg)
            spin(0.1)
        spin(1.0)
        status = _status_mb(proc.pid)
        result = {'peak_rss_mb': status['VmHWM'], 'rss_mb': status['VmRSS'],
                  'descriptors_received': len(got), 'goal_mb': 160.0,
                  'started_rss_mb': started['VmRSS'], 'end': status,
                  'top_mappings_mb': _top_mappings_mb(proc.pid)}
        result['pass'] = result['peak_rss_mb'] <= 160.0 and not math.isnan(result['rss_mb'])
        return result
    finally:
        probe.close()
        stop_process(proc)
