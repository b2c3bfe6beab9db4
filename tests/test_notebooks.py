"""One test per notebook, run by nbdev's own runner (`nbdev.test.test_nb`, as `nbdev_test` does: IN_TEST=1, quick sizes).

Chapters that share trained models (through `load_or_train` in the session's runs folder) form a group that runs in
order on one pytest-xdist worker (`--dist loadgroup`); independent chapters go wherever a worker is free. Each worker
has its own fresh runs folder (see conftest.py), so no two processes ever write the same checkpoint."""
import os
from pathlib import Path
import pytest
import torch
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(NBS.glob('*.ipynb'), key=lambda p: (p.name != 'index.ipynb', p.name))
# chapters that reuse each other's checkpoints: Fashion-MNIST classifier/VAE/latents/denoisers, and the shapes models
GROUPS = {'fashion': ('04', '05', '06', '07', '10', '13'), 'shapes': ('12', '15', '16', '19')}

def group_of(nb: Path) -> str | None:
    return next((g for g, prefixes in GROUPS.items() if nb.name[:2] in prefixes), None)

def _param(nb: Path):
    g = group_of(nb)
    return pytest.param(nb, id=nb.stem, marks=[pytest.mark.xdist_group(g)] if g else [])

def test_chapters_exist():
    assert len([p for p in NOTEBOOKS if p.name[:2].isdigit()]) >= 3, NOTEBOOKS

@pytest.mark.parametrize('nb', [_param(p) for p in NOTEBOOKS])
def test_notebook(nb, record_property):
    skip = get_config().tst_flags.split()
    force = os.environ.get('LDM_TEST_FLAGS', '').split()
    torch.set_grad_enabled(True)   # notebooks share this process: start each as a fresh kernel would
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force)
    record_property('notebook_seconds', secs)
    assert ok, f'{nb.name} failed (traceback above)'
