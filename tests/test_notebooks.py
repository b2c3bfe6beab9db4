"One test per notebook, run by nbdev's own runner (`nbdev.test.test_nb`, as `nbdev_test` does: IN_TEST=1, quick sizes)."
import os
from pathlib import Path
import pytest
import torch
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook
from conftest import NB_TIMES

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(NBS.glob('*.ipynb'), key=lambda p: (p.name != 'index.ipynb', p.name))

def test_chapters_exist():
    assert len([p for p in NOTEBOOKS if p.name[:2].isdigit()]) >= 3, NOTEBOOKS

@pytest.mark.parametrize('nb', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook(nb):
    skip = get_config().tst_flags.split()
    force = os.environ.get('LDM_TEST_FLAGS', '').split()
    torch.set_grad_enabled(True)   # notebooks share this process: start each as a fresh kernel would
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force)
    NB_TIMES[nb.stem] = secs
    assert ok, f'{nb.name} failed (traceback above)'
