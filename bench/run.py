#!/usr/bin/env python3
"""`make bench`: run every benchmark, write bench/results/*.json and BENCHMARKS.md.

Each figure is written beside its goal and the command that made it. Ratios are measured
side by side in one run (the machines are shared and noisy).
"""

import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from machine import machine, machine_line  # noqa: E402


def run_sim(args):
    import bench_sim
    from skyloc_sim.world import procedural_world
    world = procedural_world(os.path.join(ROOT, '.cache', 'worlds'), 7, 1200.0, 0.5,
                             conditions=('summer',))
    return {'camera_render': bench_sim.bench_camera_render(world),
            'sensor_rates_1x': bench_sim.bench_sensor_rates(world, seconds=args.seconds)}


def run_perception(args):
    import bench_embedder
    import bench_perception
    import bench_retrieval
    from skyloc_perception.rootsift import RootSiftBackbone
    from skyloc_perception.vit_onnx import OnnxVitBackbone
    from skyloc_sim.world import load_world, procedural_world
    world = load_world(procedural_world(os.path.join(ROOT, '.cache', 'worlds'), 7, 1200.0, 0.5,
                                        conditions=('summer',)))
    out = {'latency': bench_embedder.bench_rootsift_vlad_latency()}
    print('[bench] perception: ViT speed (one thread, side by side)', flush=True)
    out['vit_speed'] = bench_perception.bench_vit_speed(threads=1, runs=10)
    out['int8_profile'] = bench_perception.profile_int8(vitb_ms=out['vit_speed']['models'][
        'torch_fp32_vitb14_full']['cpu_median_ms'])
    print('[bench] perception: INT8 quantization error', flush=True)
    out['quantization'] = bench_perception.bench_quantization_error()
    print('[bench] perception: retrieval Recall@1 (RootSIFT, default backend)', flush=True)
    out['retrieval_rootsift'] = bench_retrieval.bench_retrieval(
        world, {'rootsift': RootSiftBackbone()}, stride_m=25.0, count=120)
    print('[bench] perception: retrieval FP32 vs INT8 ViT (random weights, outliers)',
          flush=True)
    models = bench_perception.vit_models(layerscale=0.1, outliers=True, smooth_alpha=0.5)
    out['retrieval_vit_quantized'] = bench_retrieval.bench_retrieval(
        world, {'vit_fp32': OnnxVitBackbone(models['fp32'], 224),
                'vit_int8': OnnxVitBackbone(models['int8_fused'], 224)},
        stride_m=50.0, count=60)
    r = out['retrieval_vit_quantized']
    r['recall_drop_points'] = round(100 * (r['vit_fp32']['recall_at_1']
                                           - r['vit_int8']['recall_at_1']), 1)
    print('[bench] perception: memory', flush=True)
    out['onnx_rss'] = bench_perception.bench_onnx_rss()
    _, tiles = bench_retrieval.database_tiles(world, 100.0, 100.0, 224)
    bundle = bench_embedder.vit_bundle(models['int8_fused'],
                                       os.path.join(ROOT, '.cache', 'bench', 'vit_int8_bundle'),
                                       tiles[:120])
    out['core_rss_vit_int8'] = bench_embedder.core_rss(bundle.path, tiles=10000)
    out['core_rss_vit_int8_float32_db'] = bench_embedder.core_rss(bundle.path, tiles=10000,
                                                                  dtype='float32')
    # the default bundle `make demo` uses (fitted once on its world, cached)
    from skyloc_sim.demo import _sim_params, prepare_bundle, prepare_world
    default_bundle = prepare_bundle(ROOT, prepare_world(ROOT, 'procedural', _sim_params(ROOT)))
    if os.path.isfile(os.path.join(default_bundle, 'bundle.json')):
        out['core_rss_rootsift'] = bench_embedder.core_rss(default_bundle, tiles=10000)
        out['embedder_node_rss_rootsift'] = bench_embedder.embedder_node_rss(default_bundle)
    out['embedder_node_rss_vit_int8'] = bench_embedder.embedder_node_rss(bundle.path)
    return out


def run_coverage(args):
    import bench_coverage
    return bench_coverage.bench_coverage(os.path.join(HERE, 'results', 'coverage_maps.png'))


def run_localization(args):
    """Issue 4: retrieval + fine fix Recall@1, filter step times, the synthetic survey and
    kidnap simulation of bench_filters, and the closed-loop survey of bench_survey."""
    import bench_cold_start
    import bench_filters
    import bench_localization
    import bench_survey
    out = {}
    print('[bench] localization: cold start on a 10k-tile database', flush=True)
    out['cold_start'] = bench_cold_start.bench_cold_start()
    print('[bench] localization: probability map and Kalman filter step times', flush=True)
    out['histogram_200x200'] = bench_filters.bench_histogram()
    out['kalman_step'] = bench_filters.bench_kalman_step()
    print(f'[bench] localization: synthetic {args.minutes:g}-minute survey (bench_filters)',
          flush=True)
    out['synthetic_survey'] = bench_filters.bench_survey(args.minutes)
    print('[bench] localization: kidnap pipeline simulation (bench_filters)', flush=True)
    out['pipeline_with_kidnap'] = bench_filters.bench_pipeline()
    print('[bench] localization: LOST hover with and without the hold (bench_filters)',
          flush=True)
    out['hold'] = bench_filters.bench_hold()
    print('[bench] localization: Recall@1 per altitude, procedural + real satellite tiles',
          flush=True)
    out['recall'] = bench_localization.bench_localization()
    # the other backend: the INT8 ViT bundle of the perception suite (random weights here,
    # none can be downloaded: its retrieval is noise, the correlation does the work)
    vit = os.path.join(ROOT, '.cache', 'bench', 'vit_int8_bundle')
    if os.path.isfile(os.path.join(vit, 'bundle.json')):
        print('[bench] localization: Recall@1 with the INT8 ViT bundle (random weights)',
              flush=True)
        out['recall_vit_int8'] = bench_localization.bench_localization(count=20, bundle_dir=vit)
    print(f'[bench] localization: closed-loop {args.minutes:g}-minute survey (bench_survey)',
          flush=True)
    out['survey'] = bench_survey.bench_survey(
        args.minutes, plot=os.path.join(HERE, 'results', 'survey.png'))
    return out


def run_training(args):
    """Issue 6: `make model` (python -m skyloc_training.pipeline, its default small
    configuration) and the phase-2 variants (INT4 weight-only, mixed precision, distilled
    student) of the model it trained."""
    import subprocess
    out_dir = os.path.join(ROOT, '.cache', 'models', 'bench')
    t0 = time.monotonic()
    print('[bench] training: make model (skyloc_training.pipeline)', flush=True)
    code = subprocess.call([sys.executable, '-m', 'skyloc_training.pipeline', '--out', out_dir,
                            '--quiet'], cwd=ROOT)
    wall = time.monotonic() - t0
    if code != 0:
        return {'error': f'skyloc_training.pipeline exited with {code}', 'wall_s': wall}
    with open(os.path.join(out_dir, 'report.json')) as stream:
        report = json.load(stream)
    out = {'make_model': {k: report[k] for k in ('config', 'times_s', 'total_s',
                                                 'verification', 'comparison', 'selection',
                                                 'loss_first_last')},
           'make_model_wall_s': round(wall, 1)}
    print('[bench] training: static QDQ INT8 of the trained local_vlad model', flush=True)
    static = os.path.join(out_dir, 'bundles', 'local_vlad_static')
    code = subprocess.call([sys.executable, '-m', 'skyloc_training.export', '--checkpoint',
                            report['checkpoint'], '--kind', 'local_vlad', '--map',
                            report['world_yaml'], '--quantize', 'static', '--out', static,
                            '--tiles', str(report['config']['vocab_tiles']), '--quiet'],
                           cwd=ROOT)
    if code == 0:
        from skyloc_training.verify import verify
        out['static_qdq'] = verify(report['bundles']['local_vlad']['fp32'], static,
                                   report['world_yaml'], queries=report['config']['queries'],
                                   progress=False)
    else:
        out['static_qdq'] = {'error': f'skyloc_training.export --quantize static exited {code}'}
    print('[bench] training: phase 2 (INT4, mixed precision, distillation)', flush=True)
    phase2_dir = os.path.join(out_dir, 'phase2')
    code = subprocess.call([sys.executable, '-m', 'skyloc_training.phase2', '--checkpoint',
                            report['checkpoint'], '--map', report['world_yaml'], '--out',
                            phase2_dir, '--quiet'], cwd=ROOT)
    if code == 0:
        with open(os.path.join(phase2_dir, 'phase2.json')) as stream:
            out['phase2'] = json.load(stream)
    else:
        out['phase2'] = {'error': f'skyloc_training.phase2 exited with {code}'}
    return out


def run_mission(args):
    """Issue 7: `make demo` (python -m skyloc_sim.demo, its defaults) measured from its
    report.json and run.json; the run folder goes to .cache/bench/mission/."""
    import glob
    import subprocess
    out = os.path.join(ROOT, '.cache', 'bench', 'mission')
    os.makedirs(out, exist_ok=True)
    before = set(glob.glob(os.path.join(out, '*')))
    t0 = time.monotonic()
    print('[bench] mission: make demo (python -m skyloc_sim.demo)', flush=True)
    code = subprocess.call([sys.executable, '-m', 'skyloc_sim.demo', '--out', out], cwd=ROOT,
                           stdout=subprocess.DEVNULL)
    wall = time.monotonic() - t0
    runs = sorted(set(glob.glob(os.path.join(out, '*'))) - before)
    if not runs or not os.path.isfile(os.path.join(runs[-1], 'report.json')):
        return {'error': f'skyloc_sim.demo exited with {code} and wrote no report',
                'wall_s': round(wall, 1)}
    with open(os.path.join(runs[-1], 'report.json')) as stream:
        report = json.load(stream)
    with open(os.path.join(runs[-1], 'run.json')) as stream:
        run = json.load(stream)
    states = [s['state'] for s in report.get('mission_states', [])]
    return {'run_dir': runs[-1], 'exit_code': code, 'wall_s': round(wall, 1),
            'sim_seconds': run['sim_seconds'], 'real_time_factor': run['real_time_factor'],
            'error': report['error'], 'coverage_percent': report['coverage_percent'],
            'replans': report['replans'], 'path_length_m': report['path_length_m'],
            'mission_time_s': report['mission_time_s'], 'landed': bool(states) and
            states[-1] == 'DONE', 'mission_states': states,
            'resources': report.get('resources', {})}


def run_pi(args):
    """Issue 7: the Pi graph's memory, single process vs one process per node (bench_pi)."""
    from bench_pi import bench_pi
    return bench_pi(seconds=120.0, tiles=10000)


def run_reliability(args):
    """Issue 7: the full fault scenario (python -m skyloc_sim.faults) and a soak
    (python -m skyloc_sim.faults --soak MIN), each judged from its bag."""
    import glob
    import subprocess
    out = {}
    previous = os.path.join(HERE, 'results', 'reliability.json')
    if os.path.isfile(previous):   # a part not run now keeps its last result
        with open(previous) as stream:
            out = json.load(stream).get('reliability', {})
    parts = (('faults', []), ('soak', ['--soak', str(args.soak_minutes)]))
    for key, extra in [p for p in parts if p[0] in args.reliability_parts.split(',')]:
        folder = os.path.join(ROOT, '.cache', 'bench', key)
        os.makedirs(folder, exist_ok=True)
        before = set(glob.glob(os.path.join(folder, '*')))
        t0 = time.monotonic()
        print(f'[bench] reliability: python -m skyloc_sim.faults {" ".join(extra)}', flush=True)
        code = subprocess.call([sys.executable, '-m', 'skyloc_sim.faults', '--out', folder]
                               + extra, cwd=ROOT, stdout=subprocess.DEVNULL)
        runs = sorted(set(glob.glob(os.path.join(folder, '*'))) - before)
        result_file = os.path.join(runs[-1], f'{key}.json') if runs else ''
        if not os.path.isfile(result_file):
            out[key] = {'error': f'exit code {code}, no {key}.json', 'exit_code': code}
            continue
        with open(result_file) as stream:
            out[key] = json.load(stream)
        out[key]['wall_s'] = round(time.monotonic() - t0, 1)
    return out


SUITES = {'sim': run_sim, 'perception': run_perception, 'coverage': run_coverage,
          'localization': run_localization, 'training': run_training, 'mission': run_mission,
          'pi': run_pi, 'reliability': run_reliability}


def table(results):
    lines = ['# Benchmarks', '',
             f"Written by `make bench` (`python bench/run.py`) on {results['machine']['date']},"
             f" {results['machine']['cpus']} CPUs, Python {results['machine']['python']}.",
             'Results in bench/results/*.json. Each suite ran on '
             + '; '.join(f'{name}: {machine_line(m)}' for name, m in
                         results.get('machines', {}).items()) + '.', '',
             '| suite | figure | measured | goal | pass |', '|---|---|---|---|---|']
    sim = results.get('sim')
    if sim:
        cam = sim['camera_render']
        lines.append(f"| sim | camera render 640x480, one core, median / p95 | "
                     f"{cam['median_ms']} / {cam['p95_ms']} ms | <= {cam['goal_ms']} ms | "
                     f"{'yes' if cam['pass'] else 'NO'} |")
        for topic, r in sim['sensor_rates_1x'].items():
            lines.append(f"| sim | {topic} rate at 1x | {r['hz']} Hz ({r['error_percent']:+}%)"
                         f" | {r['goal_hz']} Hz +-10% | {'yes' if r['pass'] else 'NO'} |")
    per = results.get('perception')
    if per:
        lines += perception_rows(per)
    notes = []
    cov = results.get('coverage')
    if cov:
        lines += coverage_rows(cov)
        notes += ['', 'Coverage (issue 5): `python bench/run.py --suite coverage`; every map, '
                  'both planners, one evaluator (bench/coverage_eval.py): '
                  'bench/results/coverage.json; paths: bench/results/coverage_maps.png.']
    loc = results.get('localization')
    if loc:
        lines += localization_rows(loc)
        notes += ['', 'Localization (issue 4): `python bench/run.py --suite localization` '
                  '(bench/results/localization.json); the parts alone: '
                  '`python bench/bench_localization.py` (Recall@1), '
                  '`python bench/bench_filters.py` (step times, synthetic survey, kidnap), '
                  '`python bench/bench_survey.py [--minutes 10] [--plot PNG]` (closed-loop '
                  'survey: rendered images -> embedder path -> LocalizerCore; track and errors '
                  'over time: bench/results/survey.png), `python bench/bench_cold_start.py` '
                  '(10k-tile database).']
    mi = results.get('mission')
    if mi:
        lines += mission_rows(mi)
        notes += ['', 'Mission (issue 7): `python bench/run.py --suite mission` runs `make demo` '
                  '(its run folder with report.html under .cache/bench/mission/).']
    pi = results.get('pi')
    if pi:
        lines += pi_rows(pi)
        notes += ['', 'Raspberry Pi graph (issue 7): `python bench/run.py --suite pi` '
                  '(`python bench/bench_pi.py`): config/pi.yaml, a 10k-tile database, the '
                  'simulator as the sensors, on this x86 machine (no Pi here).']
    rel = results.get('reliability')
    if rel:
        lines += reliability_rows(rel)
        notes += ['', 'Reliability (issue 7): `python bench/run.py --suite reliability '
                  '[--soak-minutes 60]` runs `python -m skyloc_sim.faults` (faults.json, '
                  'faults.png under .cache/bench/faults/) and `python -m skyloc_sim.faults '
                  '--soak MIN` (soak.json under .cache/bench/soak/).']
    tr = results.get('training')
    if tr:
        lines += training_rows(tr)
        notes += ['', 'Training (issue 6): `python bench/run.py --suite training` runs '
                  '`make model` (`python -m skyloc_training.pipeline`; its report: '
                  '.cache/models/bench/report.md, loss and Recall@1 curves: training.png '
                  'there) and `python -m skyloc_training.phase2` on its checkpoint '
                  '(bench/results/training.json).']
    return '\n'.join(lines + notes) + '\n'


def pi_rows(pi):
    """Issue 7: memory of the Pi graph."""
    rows = []
    single = pi.get('single_process', {})
    multi = pi.get('multi_process', {})
    if single:
        rows.append(f"| pi | Pi graph (7 nodes, {pi['tiles']} tiles) in one process, peak RSS "
                    f"over {pi['seconds']:.0f} s | {single.get('peak_rss_mb')} MB | <= "
                    f"{pi['goal_mb']:.0f} MB | {'yes' if pi.get('meets_goal') else 'NO'} |")
    if multi:
        per = ', '.join(f'{k} {v:.0f}' for k, v in multi.get('peak_rss_mb_per_node', {}).items())
        rows.append(f"| pi | same, one process per node: peak RSS per node (MB) | {per} "
                    f"(sum {multi.get('sum_peak_rss_mb')}) | - | - |")
    return rows


def reliability_rows(rel):
    """Issue 7: faults and soak."""
    rows = []
    faults = rel.get('faults', {})
    if 'faults' in faults:
        for v in faults['faults']:
            det = ', '.join(n.split(':')[0] for n in v['reported_by']) or (
                'not detected' if v['observable'] else 'not observable')
            rec = '-' if v['recovered_after_s'] is None else f"{v['recovered_after_s']:.0f} s"
            rows.append(f"| reliability | fault {v['fault']} at {v['t_s']:.0f} s: seen by; "
                        f"within {faults['goal_m']:g} m again after | {det}; {rec} | seen; "
                        f"<= {faults['recovery_limit_s']:.0f} s | "
                        f"{'yes' if v['passed'] else 'NO'} |")
        rows.append(f"| reliability | fault run: no node died, RMSE while airborne | "
                    f"{faults['no_node_died']}, {_num(faults.get('rmse_m'), 'm')} | True | "
                    f"{'yes' if faults['no_node_died'] else 'NO'} |")
    elif faults:
        rows.append(f"| reliability | fault run | {faults.get('error')} | - | NO |")
    soak = rel.get('soak', {})
    if 'rss_growth' in soak:
        worst = max(soak['rss_growth'].items(), key=lambda kv: kv[1]['growth_percent'],
                    default=(None, None))
        gap = max(soak['max_topic_gap_s'].items(), key=lambda kv: kv[1], default=(None, 0))
        rows.append(f"| reliability | soak {soak['sim_seconds'] / 60:.0f} min simulated "
                    f"(asked {soak['requested_minutes']:g}): largest RSS growth per node | "
                    f"{worst[0]} {worst[1]['growth_percent']:+.1f}% | < "
                    f"{soak['rss_growth_limit_percent']:.0f}% | "
                    f"{'yes' if worst[1]['growth_percent'] < 10 else 'NO'} |")
        rows.append(f"| reliability | soak: longest gap of a sensor/pipeline topic above "
                    f"50 m | {gap[0]} {gap[1]:.1f} s | <= {soak['stall_limit_s']:.0f} s | "
                    f"{'yes' if not soak['stalls'] else 'NO'} |")
        err = soak.get('error') or {}
        if err.get('rmse_m') is not None:
            rows.append(f"| reliability | soak: position error while airborne, RMSE / median "
                        f"/ max | {err['rmse_m']:.1f} / {err['median_m']:.1f} / "
                        f"{err['max_m']:.0f} m | RMSE <= 5 m (the mission goal) | "
                        f"{'yes' if err['rmse_m'] <= 5.0 else 'NO'} |")
    elif soak:
        rows.append(f"| reliability | soak | {soak.get('error')} | - | NO |")
    return rows


def mission_rows(mi):
    """Issue 7; command `make bench` or `python bench/run.py --suite mission`."""
    yes = {True: 'yes', False: 'NO'}
    if 'mission_states' not in mi:
        return [f"| mission | make demo | {mi.get('error')} | - | NO |"]
    e = mi['error']
    died = mi['exit_code'] != 0
    rows = [f"| mission | make demo: wall time ({mi['sim_seconds']:.0f} s simulated, "
            f"{mi['real_time_factor']}x) | {mi['wall_s'] / 60:.1f} min | <= 10 min | "
            f"{yes[mi['wall_s'] <= 600]} |",
            f"| mission | fused horizontal RMSE, airborne (median / p95 / max) | "
            f"{e['rmse_m']:.2f} m ({e['median_m']:.2f} / {e['p95_m']:.2f} / {e['max_m']:.1f} m)"
            f" | <= 5 m | {yes[e['rmse_m'] <= 5.0]} |",
            f"| mission | coverage of the survey area | {mi['coverage_percent']:.2f} % | >= 99 % "
            f"| {yes[mi['coverage_percent'] >= 99.0]} |",
            f"| mission | states; landed; make demo exit code | "
            f"{' > '.join(mi['mission_states'])}; {mi['landed']}; {mi['exit_code']} | DONE, 0 | "
            f"{yes[mi['landed'] and not died]} |",
            f"| mission | replans (mast), path flown, mission time | {mi['replans']}, "
            f"{mi['path_length_m']:.0f} m, {mi['mission_time_s']:.0f} s | - | - |"]
    res = mi.get('resources') or {}
    if res:
        rows.append('| mission | peak RSS / CPU per node | ' + ', '.join(
            f"{n} {r['peak_rss_mb']:.0f} MB / {r['cpu_s']:.0f} s" for n, r in res.items())
            + ' | - | - |')
    return rows


def training_rows(tr):
    """Issue 6; command `make bench` or `python bench/run.py --suite training`."""
    yes = {True: 'yes', False: 'NO'}
    if 'error' in tr:
        return [f"| training | make model | {tr['error']} | - | NO |"]
    mm = tr['make_model']
    cfg = mm['config']
    steps = ', '.join(f'{k} {v:.0f} s' for k, v in mm['times_s'].items())
    rows = [f"| training | make model ({cfg['arch']}, {cfg['img_size']} px, {cfg['steps']} steps,"
            f" weights {'given' if cfg.get('weights') else 'none: random init'}), wall | "
            f"{tr['make_model_wall_s'] / 60:.1f} min ({steps}) | <= 15 min | "
            f"{yes[tr['make_model_wall_s'] <= 900]} |"]
    if mm.get('loss_first_last'):
        a, b = mm['loss_first_last']
        rows.append(f'| training | WeightedInfoNCE loss, first / last step | {a:.3f} / {b:.3f} '
                    f'| lower | {yes[b < a]} |')
    for kind, v in mm['verification'].items():
        cos = v['feature_cosine']
        rows.append(f"| training | {kind} INT8 vs FP32 feature cosine, trained model, mean (p1) "
                    f"| {cos['mean']:.5f} ({cos['p1']:.5f}) | >= 0.999 | {yes[cos['passed']]} |")
        rec = v.get('recall')
        if rec:
            rows.append(f"| training | {kind} Recall@1 FP32 / INT8, {rec['benchmark']['queries']}"
                        f" queries | {rec['fp32']['recall_at_1']:.3f} / "
                        f"{rec['int8']['recall_at_1']:.3f} (drop {rec['drop_points']} pt) | "
                        f"drop <= 1 pt | {yes[rec['passed']]} |")
    st = tr.get('static_qdq', {})
    if 'feature_cosine' in st:
        cos, rec = st['feature_cosine'], st['recall']
        rows.append(f"| training | local_vlad static QDQ INT8 vs FP32, trained model: cosine mean "
                    f"(p1); Recall@1 FP32 / INT8 | {cos['mean']:.5f} ({cos['p1']:.5f}); "
                    f"{rec['fp32']['recall_at_1']:.3f} / {rec['int8']['recall_at_1']:.3f} | "
                    f">= 0.999; drop <= 1 pt | {yes[st['passed']]} |")
    elif st:
        rows.append(f"| training | static QDQ | {st.get('error')} | - | NO |")
    comp = mm['comparison']
    res = comp['results']
    rows.append('| training | Recall@1 on the demo world, ' + str(comp['benchmark']['queries'])
                + ' queries: ' + ' / '.join(res) + ' | ' + ' / '.join(
                    f"{r['recall_at_1']:.3f}" for r in res.values())
                + ' | trained > default to be selected | - |')
    sel = mm['selection']
    rows.append(f"| training | bundle make demo uses | {sel['selected']} ({sel['reason']}) | "
                f"- | - |")
    p2 = tr.get('phase2', {})
    if 'variants' in p2:
        for name, r in p2['variants'].items():
            rows.append(f"| training | phase 2 {name}: size, 1-thread latency, cosine vs FP32 "
                        f"(mean), Recall@1 | {r['size_mb']:.1f} MB, "
                        f"{r['latency_ms_1_thread']:.1f} ms, {r['cosine_vs_fp32']['mean']:.5f}, "
                        f"{r.get('recall_at_1', '-')} | - | - |")
    elif p2:
        rows.append(f"| training | phase 2 | {p2.get('error')} | - | NO |")
    return rows


def perception_rows(per):
    yes = {True: 'yes', False: 'NO'}
    rows = []
    lat = per['latency']
    rows.append(f"| perception | RootSIFT dense features, 224 px, one thread | "
                f"{lat['rootsift_224_ms']} ms | - | - |")
    rows.append(f"| perception | VLAD ({lat['vlad_dim']}) + PCA ({lat['pca_dim']}) | "
                f"{lat['vlad_pca_ms']} ms | - | - |")
    vs = per['vit_speed']
    for name, m in vs['models'].items():
        rows.append(f"| perception | {name}, 224 px, one thread, median | {m['median_ms']} ms "
                    f"| - | - |")
    verdict = 'no verdict: core shared (CPU share ' + str(vs['cpu_share_min']) + ')' \
        if vs.get('contended') else yes[vs['pass']]
    rows.append(f"| perception | speed-up FP32 ViT-B/14 (PyTorch) / INT8 ViT-S/14 (ONNX, "
                f"fused attention: the deployed model), wall-time medians | "
                f"{vs['speedup_torch_vitb14_fp32_over_onnx_int8_vits14']}x | >= 10x | "
                f"{verdict} |")
    if 'speedup_cpu_time' in vs:
        rows.append(f"| perception | same on thread CPU time / with the unfused INT8 model | "
                    f"{vs['speedup_cpu_time']}x / {vs['speedup_unfused_int8']}x | - | - |")
    prof = per.get('int8_profile')
    if prof:
        top = ', '.join(f"{op} {o['ms']}" for op, o in list(prof['ops'].items())[:5])
        rates = prof['gemm_gmac_per_s_one_thread']
        work_s = round(prof['gmac']['vits14_L9_value_linear']
                       + prof['gmac']['vits14_L9_value_attention'], 2)
        rows.append(f"| perception | ORT profile of the deployed INT8 model, ms per image | "
                    f"{top} (total CPU {prof['cpu_median_ms']}) | - | - |")
        rows.append(f"| perception | one-thread GEMM [257x384]@[384x1536], GMAC/s: INT8 ORT / "
                    f"FP32 ORT / FP32 PyTorch; work ViT-B / ViT-S L9, GMAC | "
                    f"{rates['int8_dynamic_quantize_matmul']} / {rates['fp32_ort_matmul']} / "
                    f"{rates['fp32_torch_matmul']}; {prof['gmac']['vitb14_full']} / {work_s} "
                    f"| - | - |")
        if 'speedup_bound' in prof:
            rows.append(f"| perception | speed-up bound on this CPU: ViT-B / (INT8 matrix "
                        f"products at the GEMM rate + other ops as profiled); other ops free | "
                        f"{prof['speedup_bound']}x; {prof['speedup_bound_if_other_ops_free']}x"
                        f" | - | - |")
    for variant, q in per['quantization'].get('variants', {}).items():
        for mode in ('int8_dynamic', 'int8_fused', 'int8_static_qdq'):
            if mode in q:
                c = q[mode]
                rows.append(f"| perception | {mode} cosine vs FP32, {variant}, mean / p1 | "
                            f"{c['mean']} / {c['p1']} | >= 0.999 | "
                            f"{yes[c['mean'] >= 0.999]} |")
    rs = per['retrieval_rootsift']
    rows.append(f"| perception | Recall@1 RootSIFT (default), {rs['tiles']} tiles, "
                f"{rs['queries']} '{rs['condition']}' queries, yaw +-3 deg, alt +-7% | "
                f"{rs['rootsift']['recall_at_1']} (median error "
                f"{rs['rootsift']['median_error_m']} m) | - | - |")
    rv = per['retrieval_vit_quantized']
    rows.append(f"| perception | Recall@1 ViT FP32 / INT8 (random weights + outliers) | "
                f"{rv['vit_fp32']['recall_at_1']} / {rv['vit_int8']['recall_at_1']} "
                f"(drop {rv['recall_drop_points']} points) | drop <= 1 point | "
                f"{yes[rv['recall_drop_points'] <= 1.0]} |")
    rows.append(f"| perception | peak RSS: ORT + INT8 ViT-S, one inference (no ROS) | "
                f"{per['onnx_rss']['peak_rss_mb']} MB | - | - |")
    c = per['core_rss_vit_int8']
    rows.append(f"| perception | peak RSS inference core: INT8 ViT-S + VLAD + PCA + "
                f"{c['tiles']}-tile {c.get('db_dtype', 'float32')} db | {c['peak_rss_mb']} MB | "
                f"<= 100 MB | {yes[c['peak_rss_mb'] <= 100]} |")
    if 'core_rss_vit_int8_float32_db' in per:
        c = per['core_rss_vit_int8_float32_db']
        rows.append(f"| perception | same with a float32 db | {c['peak_rss_mb']} MB | - | - |")
    if 'core_rss_rootsift' in per:
        c = per['core_rss_rootsift']
        rows.append(f"| perception | peak RSS inference core: RootSIFT + VLAD + PCA + "
                    f"{c['tiles']}-tile db | {c['peak_rss_mb']} MB | - | - |")
    if 'embedder_node_rss_rootsift' in per:
        n = per['embedder_node_rss_rootsift']
        rows.append(f"| perception | peak RSS embedder node (rclpy, RootSIFT default bundle) | "
                    f"{n['peak_rss_mb']} MB | <= 160 MB | {yes[n['pass']]} |")
    n = per['embedder_node_rss_vit_int8']
    started = f" (started: {n['started_rss_mb']} MB)" if 'started_rss_mb' in n else ''
    rows.append(f"| perception | peak RSS embedder node (rclpy, INT8 ViT-S){started} | "
                f"{n['peak_rss_mb']} MB | <= 160 MB | {yes[n['pass']]} |")
    return rows


def coverage_rows(cov):
    """Issue 5: skyloc's planner and coverage-path-planner, one evaluator (bench/coverage_eval.py);
    command `make bench` or `python bench/run.py --suite coverage`."""
    yes = {True: 'yes', False: 'NO'}
    s = cov['summary']
    n, g, ok = s['maps'], s['goals'], s['passes']
    kinds = f"{n} maps (rooms + fields)"
    rows = []
    if s['skyloc_ok'] < n:
        rows.append(f"| coverage | skyloc plans made | {s['skyloc_ok']} / {n} | {n} / {n} | NO |")
    if s['skyloc_ok'] == 0:
        return rows + [f"| coverage | skyloc planner | not available: "
                       f"{cov.get('skyloc_error', 'failed')} | - | NO |"]
    rows.append(f"| coverage | coverage of the reachable free C-space, {kinds}, min / mean | "
                f"{s['coverage_percent_min']:.2f} / {s['coverage_percent_mean']:.2f} % "
                f"({ok['coverage']}/{n} maps) | >= {g['coverage_percent']} % | "
                f"{yes[ok['coverage'] == n]} |")
    rows.append(f"| coverage | path inside inflated obstacles, max | {s['collision_m_max']:.2f} m "
                f"({ok['collision']}/{n} maps at 0) | 0 m | {yes[ok['collision'] == n]} |")
    for kind in ('field', 'room'):
        if f'length_ratio_max_{kind}' in s:
            goal = g[f'length_ratio_{kind}']
            rows.append(f"| coverage | path length / ideal (free area / swath), {kind}s, max / "
                        f"mean{_over(cov, kind)} | "
                        f"{s[f'length_ratio_max_{kind}']:.3f} / "
                        f"{s[f'length_ratio_mean_{kind}']:.3f} | <= {goal:.2f} | "
                        f"{yes[s[f'length_ratio_max_{kind}'] <= goal]} |")
        if f'length_ratio_eroded_max_{kind}' in s:
            rows.append(f"| coverage | path length / (free area eroded by the radius / swath), "
                        f"{kind}s, max / mean (informational: the stricter reading) | "
                        f"{s[f'length_ratio_eroded_max_{kind}']:.3f} / "
                        f"{s[f'length_ratio_eroded_mean_{kind}']:.3f} | - | - |")
    shapes = [(r['map'], r['skyloc']['length_ratio'], r['shape_only']['length_ratio'])
              for r in cov.get('maps', []) if r.get('shape_only', {}).get('ok')
              and r['skyloc'].get('ok')]
    if shapes:
        rows.append("| coverage | fields: path length / ideal, with the obstacles / the same "
                    "boundary with none (informational: what the shape alone costs) | "
                    + ', '.join(f"{name.removeprefix('field_')} {a:.3f} / {b:.3f}"
                                for name, a, b in shapes)
                    + " | - | - |")
    rows.append(f"| coverage | planning time (400 x 400 cells at most), max | "
                f"{s['planning_time_s_max']:.2f} s | <= {g['planning_s']} s | "
                f"{yes[ok['planning_time'] == n]} |")
    if 'replan_time_s_max' in s:
        rows.append(f"| coverage | replanning the remainder after a new obstacle, max | "
                    f"{1000 * s['replan_time_s_max']:.0f} ms ({ok['replan_replan_time']}/{n} "
                    f"maps) | <= {1000 * g['replan_s']:.0f} ms | "
                    f"{yes[ok['replan_replan_time'] == n]} |")
        rows.append(f"| coverage | after replanning: flown + remainder coverage min, remainder "
                    f"in obstacles max | {s['replan_total_coverage_percent_min']:.2f} %, "
                    f"{s['replan_remainder_collision_m_max']:.2f} m | >= "
                    f"{g['coverage_percent']} %, 0 m | "
                    f"{yes[ok['replan_coverage'] == n and ok['replan_collision'] == n]} |")
    rows.append(f"| coverage | turns (> 10 deg) / total rotation, all maps | "
                f"{s['turns_total']} / {s['total_rotation_deg_total'] / 1000:.1f}k deg | - | - |")
    for c in cov.get('cli', []):
        if c.get('ok'):
            good = c['coverage_percent'] >= g['coverage_percent'] and c['collision_m'] <= 0
            rows.append(f"| coverage | CLI (map_server YAML -> python -m skyloc_coverage.plan), "
                        f"{c['map']}: coverage, in obstacles, process | "
                        f"{c['coverage_percent']:.2f} %, {c['collision_m']:.2f} m, "
                        f"{c['process_wall_s']:.1f} s | >= {g['coverage_percent']} %, 0 m | "
                        f"{yes[good]} |")
        else:
            rows.append(f"| coverage | CLI (python -m skyloc_coverage.plan), {c['map']} | failed "
                        f"(exit {c.get('returncode')}) | runs | NO |")
    for laps in (0, 1):
        b = s.get(f'baseline_laps{laps}', {})
        k = f'vs_baseline_laps{laps}'
        label = f"coverage-path-planner lines, {'no lap' if laps == 0 else 'one border lap'}"
        if b.get('ok'):
            rows.append(f"| coverage | {label}: coverage min / mean, maps with collision "
                        f"(max), length / ideal mean | {b['coverage_percent_min']:.2f} / "
                        f"{b['coverage_percent_mean']:.2f} %, {b['maps_with_collision']} "
                        f"({b['collision_m_max']:.2f} m), {b['length_ratio_mean']:.3f} | - | - |")
        ratio = b.get('skyloc_length_over_baseline_mean')
        ratio_txt = f", skyloc length / baseline mean {ratio:.3f}" if ratio else ''
        rows.append(f"| coverage | skyloc vs {label}: covers >= it, no collision, shorter | "
                    f"{ok[k]}/{n} maps{ratio_txt} | {n}/{n} | {yes[ok[k] == n]} |")
    return rows


def _over(cov, kind):
    """', over the goal: MAP RATIO, ...' for the maps of a kind that miss the length goal."""
    over = [(r['map'], r['skyloc']['length_ratio']) for r in cov.get('maps', [])
            if r['kind'] == kind and r['skyloc'].get('ok')
            and not r['skyloc'].get('pass', {}).get('length_ratio', True)]
    return (' (over the goal: ' + ', '.join(f'{m} {x:.4f}' for m, x in over) + ')') if over \
        else ''


def _num(v, unit, digits=1):
    return 'never' if v is None else f'{v:.{digits}f} {unit}'


def localization_rows(loc):
    """Issue 4; command `make bench` or `python bench/run.py --suite localization`."""
    yes = {True: 'yes', False: 'NO'}
    rows = []
    rec = loc.get('recall')
    if rec:
        for world in ('procedural', 'real_satellite'):
            if world not in rec:
                continue
            w = rec[world]
            if 'overall' in w:
                o = w['overall']
                ok = o['recall_at_1'] >= 0.90 and o['median_error_m'] <= 5.0
                conds = ', '.join(w.get('per_condition', {w['condition']: 0}))
                rows.append(f"| localization | Recall@1 (fine fix within {rec['radius_m']:g} m)"
                            f" / median error, {world}, every condition ({conds}) and altitude "
                            f"(70/100/150 m), {o['queries']} queries | {o['recall_at_1']} / "
                            f"{o['median_error_m']} m | >= 0.90 / <= 5 m | {yes[ok]} |")
            for cond, per_alt in w.get('per_condition', {w['condition']: w['per_altitude']}
                                       ).items():
                for alt, a in per_alt.items():
                    ok = a['recall_at_1'] >= 0.90 and a['median_error_m'] <= 5.0
                    r5 = f" (R@5 {a['recall_at_5']})" if 'recall_at_5' in a else ''
                    rows.append(f"| localization | Recall@1 (fine fix within "
                                f"{rec['radius_m']:g} m) / median error, {world} "
                                f"({w['tiles']} tiles, '{cond}' queries), {alt}, "
                                f"{a['queries']} queries | {a['recall_at_1']}{r5} / "
                                f"{a['median_error_m']} m ({a['median_query_ms']} ms per "
                                f"query, CLI path: 9 variants embedded) | (per cell) >= 0.90 / "
                                f"<= 5 m | {yes[ok]} |")
    rv = loc.get('recall_vit_int8')
    for world in ('procedural', 'real_satellite'):
        if not rv or world not in rv:
            continue
        w = rv[world]
        cells = '; '.join(f"{cond} " + ' / '.join(f"{a['recall_at_1']}" for a in per.values())
                          for cond, per in w['per_condition'].items())
        rows.append(f"| localization | Recall@1 / median error with the INT8 ViT-S bundle "
                    f"(random weights: retrieval is noise, informational), {world}, "
                    f"{w['overall']['queries']} queries; per season at 70 / 100 / 150 m | "
                    f"{w['overall']['recall_at_1']} / {w['overall']['median_error_m']} m; "
                    f"{cells} | - | - |")
    h = loc.get('histogram_200x200')
    if h:
        rows.append(f"| localization | probability map 200x200 cells predict + update + "
                    f"estimate, wall median / CPU p95 | {h['total_ms_median']} / "
                    f"{h['total_cpu_ms_p95']} ms | <= {h['goal_ms']:g} ms | {yes[h['pass']]} |")
    k = loc.get('kalman_step')
    if k:
        rows.append(f"| localization | Kalman filter: IMU predict / fix 0.8 s late (roll back "
                    f"+ replay) | {k['imu_predict_us']} us / {k['late_fix_0.8s_ms']} ms | - | - |")
    s = loc.get('synthetic_survey')
    if s:
        rows.append(f"| localization | synthetic {s['minutes']:g}-min survey (fixes = truth + "
                    f"2-6 m noise, 5% outliers, bench_filters): fused / vision-only / IMU-only "
                    f"RMSE | {s['fused']['rmse_m']} / {s['vision_only']['rmse_m']} / "
                    f"{s['imu_only']['rmse_m']} m | fused <= {s['goal_fused_rmse_m']:g} m | "
                    f"{yes[s['pass']]} |")
    p = loc.get('pipeline_with_kidnap')
    if p:
        for name in ('fix', 'mode'):
            v = p.get(f'kf_input_{name}')
            if v:
                rows.append(f"| localization | kidnap simulation ({p['kidnap_m']:.0f} m teleport "
                            f"at {p['kidnap_at_s']:g} s, synthetic retrieval), Kalman fed the "
                            f"{name}: recovered after / RMSE outside recovery | "
                            f"{_num(v['recovered_after_s'], 's')} / "
                            f"{v['rmse_m_outside_recovery']} m | "
                            f"- | - |")
    h = loc.get('hold')
    if h:
        for label, text in (('calm', 'calm air'), ('wind_2m_s', 'a 2 m/s wind (+0.5 gusts)')):
            r = h[label]
            rows.append(f"| localization | LOST hover in {text}, no fixes, simulator IMU "
                        f"(bench_filters.bench_hold, median of {h['seeds']} seeds): error at "
                        f"30 / 60 / 120 s, IMU only vs with the hold's zero velocity | "
                        f"{' / '.join(str(v) for v in r['imu_only'].values())} m vs "
                        f"{' / '.join(str(v) for v in r['hold'].values())} m | - | - |")
    c = loc.get('survey')
    if c:
        f, v, d = c['fused'], c['vision_only'], c['imu_only']
        rows.append(f"| localization | closed-loop {c['minutes']:g}-min survey at "
                    f"{c['altitude_m']:g} m, 1 Hz rendered '{c['condition']}' images -> "
                    f"embedder path -> LocalizerCore: fused RMSE (median / p95 / max) | "
                    f"{f['rmse_m']} m ({f['median_m']} / {f['p95_m']} / {f['max_m']} m) | "
                    f"<= {c['goal_fused_rmse_m']:g} m | {yes[c['pass']]} |")
        rows.append(f"| localization | same flight: vision-only (each valid fine fix) RMSE "
                    f"(median / p95 / max), IMU-only dead reckoning RMSE (final) | "
                    f"{v.get('rmse_m')} m ({v.get('median_m')} / {v.get('p95_m')} / "
                    f"{v.get('max_m')} m); {d.get('rmse_m')} m ({d['final_m']} m) | - | - |")
        lost = ', '.join(f'{a:.0f}-{b:.0f} s (max {m:.0f} m)'
                         for a, b, m in c['lost_episodes']) or 'none'
        rows.append(f"| localization | same flight: valid fixes / queries, reseeds, fused "
                    f"error > 25 m | {c['valid_fixes']} / {c['queries']} "
                    f"({c['valid_fix_fraction']}), {c['reseeds']}, {lost} | - | - |")
        rows.append(f"| localization | same flight: query time (LocalizerCore.query) median / "
                    f"p95, embedding (normalize + describe) median / p95 | "
                    f"{c['query_ms']['median']} / {c['query_ms']['p95']} ms, "
                    f"{c['embed_ms']['median']} / {c['embed_ms']['p95']} ms | <= 200 ms (query) | "
                    f"{yes[c['query_ms']['median'] <= 200.0]} |")
    cs = loc.get('cold_start')
    if cs:
        rows.append(f"| localization | cold start, {cs['tiles']}-tile database "
                    f"(bench_cold_start): first query incl. database load + core set-up "
                    f"(Python imports {cs['import_s']} s more) | "
                    f"{cs['first_query_with_load_s']} s | <= {cs['goal_first_s']:g} s | "
                    f"{yes[cs['first_query_with_load_s'] <= cs['goal_first_s']]} |")
        rows.append(f"| localization | same database: each query after (retrieval + fine "
                    f"position), median / p95 | {cs['later_query_ms_median']} / "
                    f"{cs['later_query_ms_p95']} ms | <= {cs['goal_later_ms']:g} ms | "
                    f"{yes[cs['later_query_ms_median'] <= cs['goal_later_ms']]} |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--suite', action='append', choices=sorted(SUITES),
                        help='run only these suites (default: all)')
    parser.add_argument('--seconds', type=float, default=10.0,
                        help='length of rate measurements, s')
    parser.add_argument('--minutes', type=float, default=10.0,
                        help='simulated survey length of the localization suite, min')
    parser.add_argument('--soak-minutes', type=float, default=60.0,
                        help='simulated minutes of the reliability soak (default 60)')
    parser.add_argument('--reliability-parts', default='faults,soak',
                        help='parts of the reliability suite to run (the others keep their '
                             'last result): faults,soak')
    parser.add_argument('--table-only', action='store_true',
                        help='only rewrite BENCHMARKS.md from bench/results/*.json')
    args = parser.parse_args(argv)
    os.makedirs(os.path.join(HERE, 'results'), exist_ok=True)
    results = {'machine': machine()}
    for name in SUITES:  # earlier results of suites not run now stay in the table
        path = os.path.join(HERE, 'results', f'{name}.json')
        if os.path.isfile(path):
            with open(path) as stream:
                saved = json.load(stream)
            results[name] = saved[name]
            results.setdefault('machines', {})[name] = saved.get('machine', {})
    for name in [] if args.table_only else (args.suite or sorted(SUITES)):
        print(f'[bench] {name} ...', flush=True)
        results[name] = SUITES[name](args)
        results.setdefault('machines', {})[name] = results['machine']
        with open(os.path.join(HERE, 'results', f'{name}.json'), 'w') as stream:
            json.dump({'machine': results['machine'], name: results[name]}, stream, indent=2)
    text = table(results)
    with open(os.path.join(ROOT, 'BENCHMARKS.md'), 'w') as stream:
        stream.write(text)
    print(text)
    return 0


if __name__ == '__main__':
    sys.exit(main())
