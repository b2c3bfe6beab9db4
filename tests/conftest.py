import os, time
import pytest

NB_TIMES: dict[str, float] = {}

@pytest.fixture(scope='session', autouse=True)
def fresh_runs_dir(tmp_path_factory):
    "Every test session trains from scratch: checkpoints go to a fresh folder, never a stale one."
    old = os.environ.get('LDM_RUNS')
    os.environ['LDM_RUNS'] = str(tmp_path_factory.mktemp('runs'))
    yield
    if old is None: os.environ.pop('LDM_RUNS', None)
    else: os.environ['LDM_RUNS'] = old

def pytest_terminal_summary(terminalreporter):
    if not NB_TIMES: return
    tr = terminalreporter
    tr.section('time per notebook')
    for name, t in NB_TIMES.items(): tr.write_line(f'{name:<28} {t:7.1f} s')
    tr.write_line(f'{"all notebooks":<28} {sum(NB_TIMES.values()):7.1f} s')
