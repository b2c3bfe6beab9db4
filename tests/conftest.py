import os
import pytest

@pytest.fixture(scope='session', autouse=True)
def fresh_runs_dir(tmp_path_factory):
    "Every test session (every xdist worker) trains from scratch: checkpoints go to a fresh folder, never a stale one."
    old = os.environ.get('LDM_RUNS')
    os.environ['LDM_RUNS'] = str(tmp_path_factory.mktemp('runs'))
    yield
    if old is None: os.environ.pop('LDM_RUNS', None)
    else: os.environ['LDM_RUNS'] = old

def pytest_terminal_summary(terminalreporter):
    "Time of each notebook (recorded by the test on whichever worker ran it)."
    tr, times = terminalreporter, {}
    for rep in tr.stats.get('passed', []) + tr.stats.get('failed', []):
        if rep.when != 'call': continue
        for k, v in getattr(rep, 'user_properties', []):
            if k == 'notebook_seconds':
                worker = getattr(getattr(getattr(rep, 'node', None), 'gateway', None), 'id', '')
                times[rep.nodeid.split('[')[-1].rstrip(']')] = (v, worker)
    if not times: return
    tr.section('time per notebook')
    for name, (t, w) in sorted(times.items()): tr.write_line(f'{name:<28} {t:7.1f} s  {w}')
    tr.write_line(f'{"all notebooks (sum)":<28} {sum(t for t, _ in times.values()):7.1f} s')
