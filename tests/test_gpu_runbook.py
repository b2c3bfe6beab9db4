"""The GPU runbook (`./course.sh gpu`, `ldm_course.bench.gpu_runbook`) known to work before a GPU touches it.

Its time box on the course Trainer is tested against a fake clock; the runbook itself runs as a CPU dry run (every stage
at tiny sizes, the same code path) whose JSON must have every key a GPU run's has, keep to its budget, and record a stage
that cannot fit as skipped, with its reason. `./course.sh gpu` must refuse clearly on a machine without a CUDA GPU.
About a minute on one thread."""
import json, os, subprocess
from pathlib import Path
import pytest
import torch
from torch import nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
import ldm_course.bench as bench
import time
from ldm_course.bench import StageTimeout, TimeBox, fit_timeboxed, gpu_runbook, runbook_main, time_limit
from ldm_course.training import TrainConfig, Trainer, lr_at

ROOT = Path(__file__).resolve().parents[1]
BUDGET = 90
STAGES = ['benchmark', 'classifier', 'vae', 'latents', 'denoiser', 'fid_floor', 'fid_dpmpp_2m', 'fid_ddim']

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def _trainer(steps=1000, warmup=100):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g); y = x @ torch.randn(4, 1, generator=g)
    tc = TrainConfig(steps=steps, batch_size=16, lr=1e-2, warmup_steps=warmup, progress=False, log_every=1000, optimizer_impl='foreach')
    return Trainer(nn.Linear(4, 1), lambda m, b: (F.mse_loss(m(b[0]), b[1]), {}),
                   DataLoader(TensorDataset(x, y), 16, shuffle=True, drop_last=True), tc, device='cpu')

def test_time_box_shortens_the_run_and_its_schedule():
    tr = _trainer()
    info = fit_timeboxed(tr, 50, probe=10, skip=3, clock=lambda: 0.5 * tr.step)      # half a second per step
    # the probe ends at step 14 (7 s): 43 s left, 0.9 of it at 0.5 s per step = 77 more steps
    assert (info['steps'], info['planned_steps'], info['configured_steps'], info['stopped_by']) == (91, 91, 1000, 'time box')
    assert tr.total_steps == 91 and tr.cfg.warmup_steps == 9                          # warm-up scaled with the run
    assert lr_at(tr.step - 1, tr.cfg, tr.total_steps) == pytest.approx(0.0, abs=1e-12)  # the cosine reached its end
    assert tr.callbacks == []

def test_time_box_deadline_and_bad_input():
    tr = _trainer()
    info = fit_timeboxed(tr, 50, probe=20, skip=3, clock=lambda: 10.0 * tr.step)
    assert (info['steps'], info['stopped_by'], info['planned_steps']) == (5, 'deadline', None)
    tr = _trainer(steps=30, warmup=0)
    assert fit_timeboxed(tr, 1e6, probe=5, skip=1)['stopped_by'] == 'finished' and tr.step == 30
    with pytest.raises(ValueError, match='expected a time limit > 0'): TimeBox(0)
    with pytest.raises(ValueError, match='expected probe >= 1'): TimeBox(10, probe=0)

def test_time_limit_stops_a_block_without_a_clock():
    t0 = time.monotonic()
    with pytest.raises(StageTimeout, match='stopped at its time limit'):
        with time_limit(0.3): time.sleep(5)
    assert time.monotonic() - t0 < 2
    with time_limit(5): pass
    time.sleep(0.1)                      # no alarm left behind

@pytest.fixture(scope='module')
def dry_run(tmp_path_factory):
    "One CPU dry run in which the DDIM FID stage is given a minimum it cannot meet (so it must be skipped, and say why)."
    orig = bench.runbook_plan
    def plan(dry_run=False):
        p = orig(dry_run); p['need_s'] = {**p['need_s'], 'fid_ddim': 10_000}
        return p
    bench.runbook_plan = plan
    try:
        out = tmp_path_factory.mktemp('runbook')/'dry.json'
        res = gpu_runbook(out, budget_s=BUDGET, dry_run=True)
    finally: bench.runbook_plan = orig
    return out, res

def test_dry_run_json(dry_run):
    out, res = dry_run
    saved = json.loads(out.read_text())
    assert saved['stages'] == json.loads(json.dumps(res['stages'], default=str))       # the file is the result
    assert {'runbook', 'dry_run', 'budget_s', 'machine', 'plan', 'stages', 'elapsed_s', 'finished', 'goal'} <= set(saved)
    assert saved['dry_run'] and saved['finished'] and saved['budget_s'] == BUDGET
    assert {'gpu', 'torch', 'cuda', 'peak_bf16_flops', 'peak', 'commit', 'date'} <= set(saved['machine'])
    assert list(saved['stages']) == STAGES
    st = saved['stages']
    assert not [k for k, v in st.items() if v['status'] == 'failed'], {k: v.get('error') for k, v in st.items()}
    for k in STAGES[:-1]: assert st[k]['status'] == 'done' and st[k]['seconds'] >= 0, (k, st[k])
    b = st['benchmark']
    assert [r['model'] for r in b['train']] == ['course', 'diffusers', 'ratio diffusers/course']
    assert {'ms/step', 'MFU', 'mode', 'GFLOP/step'} <= set(b['train'][0]) and b['train'][0]['GFLOP/step'] > 0
    assert {'course MFU', 'diffusers MFU', 'speed-up', 'GFLOP/img'} <= set(b['sample'][0])
    for k in ('classifier', 'vae', 'denoiser'):
        assert {'steps', 'configured_steps', 'stopped_by', 'time_box_s', 'final_loss', 'eval'} <= set(st[k])
        assert 0 < st[k]['steps'] <= st[k]['configured_steps'] and st[k]['seconds'] <= st[k]['time_box_s'] + 5
    f = st['fid_dpmpp_2m']
    assert len(f['fids']) == len(f['seeds']) >= 2 and len(st['fid_floor']['floors']) == 3
    assert f['fid_ratio'] == pytest.approx(f['fid'] / f['floor']) and f['nfe'] == f['steps']
    g = saved['goal']
    assert isinstance(g['goal_met'], bool) and g['chain_complete'] and g['best_sampler'] == 'dpmpp_2m'

def test_dry_run_keeps_to_its_budget(dry_run):
    _, res = dry_run
    assert res['elapsed_s'] <= BUDGET
    assert sum(v.get('seconds', 0) for v in res['stages'].values()) <= res['elapsed_s']

def test_stage_that_cannot_fit_is_skipped_and_recorded(dry_run, tmp_path):
    st = dry_run[1]['stages']
    assert st['fid_ddim']['status'] == 'skipped' and 'needs about 10000 s' in st['fid_ddim']['reason']
    out = tmp_path/'short.json'
    runbook_main(['--dry-run', '--budget', '8', '--out', str(out)])      # too short for anything: all skipped, each says why
    short = json.loads(out.read_text())
    assert list(short['stages']) == STAGES and short['elapsed_s'] <= 8
    assert all(v['status'] == 'skipped' and v['reason'] for v in short['stages'].values())
    assert 'needs about' in short['stages']['benchmark']['reason'] and 'share of the budget' in short['stages']['classifier']['reason']
    assert 'needs the classifier' in short['stages']['vae']['reason'] and not short['goal']['goal_met']

@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA GPU')
def test_course_sh_gpu_refuses_without_a_gpu():
    env = {k: v for k, v in os.environ.items() if k != 'LDM_GPU_DRY_RUN'}
    p = subprocess.run([str(ROOT/'course.sh'), 'gpu'], capture_output=True, text=True, env={**env, 'CUDA_VISIBLE_DEVICES': ''}, timeout=600)
    assert p.returncode != 0 and 'needs a CUDA GPU' in p.stderr and 'LDM_GPU_DRY_RUN=1' in p.stderr
