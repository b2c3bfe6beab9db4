"""Running one notebook as a test, with nbdev's own runner (`nbdev.test.test_nb`, as `nbdev_test` does: IN_TEST=1, quick sizes).

The notebooks are split over two test files that pytest-xdist runs on two workers (`--dist loadfile`: one file, one
worker, in order). Chapters that reuse each other's checkpoints (through `load_or_train` in the worker's runs folder)
must share a file: `test_nb_fashion.py` holds the Fashion-MNIST chain (classifier → metrics → VAE → latents →
diffusion → guidance), `test_nb_text.py` the text and shapes chain and every other chapter."""
import os
from pathlib import Path
import pytest
import torch
from nbdev.config import get_config
from nbdev.test import test_nb as run_notebook

NBS = Path(__file__).resolve().parents[1]/'nbs'
NOTEBOOKS = sorted(NBS.glob('*.ipynb'), key=lambda p: (p.name != 'index.ipynb', p.name))
FASHION = ('index', '00', '01', '02', '03', '04', '05', '06', '07', '08', '09', '10', '13')

def in_fashion(nb: Path) -> bool: return nb.stem == 'index' or nb.name[:2] in FASHION

def params(nbs): return [pytest.param(p, id=p.stem) for p in nbs]

def check_notebook(nb: Path, record_property):
    skip = get_config().tst_flags.split()
    force = os.environ.get('LDM_TEST_FLAGS', '').split()
    torch.set_grad_enabled(True)   # notebooks share this process: start each as a fresh kernel would
    ok, secs = run_notebook(nb, skip_flags=skip, force_flags=force)
    record_property('notebook_seconds', secs)
    assert ok, f'{nb.name} failed (traceback above)'
