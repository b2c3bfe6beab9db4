"Repository checks: the package is what the notebooks export, notebooks are clean, README.md is generated from index."
import ast, filecmp, os, shutil, subprocess, sys
from pathlib import Path
import pytest
sys.path.insert(0, str(Path(__file__).parent))
import readme

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

@pytest.fixture
def copy_of_repo(tmp_path):
    for name in ('settings.ini', 'nbs', 'ldm_course'):
        src = ROOT/name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path/name)
    return tmp_path

def _differences(a: Path, b: Path, pattern: str) -> list[str]:
    fa = {p.relative_to(a) for p in a.rglob(pattern) if '.ipynb_checkpoints' not in p.parts}
    fb = {p.relative_to(b) for p in b.rglob(pattern) if '.ipynb_checkpoints' not in p.parts}
    return sorted(str(p) for p in fa ^ fb) + sorted(str(p) for p in fa & fb if not filecmp.cmp(a/p, b/p, shallow=False))

def test_package_matches_notebooks(copy_of_repo):
    "ldm_course/ must be exactly what `nbdev_export` writes from the notebooks."
    subprocess.run([BIN/'nbdev_export'], cwd=copy_of_repo, check=True, capture_output=True)
    diff = _differences(ROOT/'ldm_course', copy_of_repo/'ldm_course', '*.py')
    assert not diff, f'ldm_course/ is out of sync with nbs/ (run nbdev_export): {diff}'

def test_notebooks_are_clean(copy_of_repo):
    "Notebooks must be unchanged by `nbdev_clean` (no execution counts, no stray metadata)."
    subprocess.run([BIN/'nbdev_clean'], cwd=copy_of_repo, check=True, capture_output=True)
    diff = _differences(ROOT/'nbs', copy_of_repo/'nbs', '*.ipynb')
    assert not diff, f'notebooks change under nbdev_clean (run nbdev_clean): {diff}'

def test_readme_is_generated_from_index():
    assert (ROOT/'README.md').read_text(encoding='utf-8') == readme.render(), \
        'README.md is out of date with nbs/index.ipynb: run ./course.sh readme'

def test_checks_can_fail(copy_of_repo):
    "The sync check really detects a difference (guards against a check that cannot fail)."
    (copy_of_repo/'ldm_course'/'core.py').write_text('# edited by hand\n')
    assert 'core.py' in _differences(ROOT/'ldm_course', copy_of_repo/'ldm_course', '*.py')

def _console_scripts() -> dict[str, str]:
    "settings.ini's console_scripts: name -> 'module:function'."
    import configparser
    cp = configparser.ConfigParser(); cp.read(ROOT/'settings.ini')
    return dict(s.split('=', 1) for s in cp['DEFAULT']['console_scripts'].split())

def test_console_scripts_exit_zero(tmp_path):
    "The installed scripts are the ones settings.ini names, and a successful run exits 0 (a returned value would become exit 1)."
    scripts = _console_scripts()
    for name, target in scripts.items():
        text = (BIN/name).read_text()
        mod, fn = target.split(':')
        assert f"from {mod} import {fn}" in text, f"{BIN/name} is stale (pip install -e . again): expected it to call {target}"
    runs = {'ldm-bench': ['--device', 'cpu', '--parts', 'vae', '--batch', '2', '--repeats', '1', '--warmup', '0', '--no-cond'],
            'ldm-train-ddp-demo': ['--run-dir', str(tmp_path/'demo'), '--steps', '3', '--device', 'cpu']}
    for name, args in runs.items():
        r = subprocess.run([BIN/name, *args], capture_output=True, text=True, timeout=600, env={**os.environ, 'OMP_NUM_THREADS': '1'})
        assert r.returncode == 0, f"{name} {' '.join(args)} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    for name in ('ldm-train', 'ldm-generate'):  # the recipe scripts train for minutes: check that the two parsers start
        r = subprocess.run([BIN/name, '--help'], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and 'usage' in r.stdout, f"{name} --help exited {r.returncode}: {r.stderr[-2000:]}"

# The model modules hold networks only: at import time they need torch, the standard library and ldm_course.core
# (crossattn builds on the U-Net, itself a model module). Training, data, presets and metrics live in the chapters'
# *_training / diffusion modules, so that a model can be imported without them.
MODEL_MODULES = {'vae': {'core'}, 'classifier': {'core'}, 'unet': {'core'}, 'crossattn': {'core', 'unet'}}

def _forbidden_imports(source: str, allowed: set[str]) -> list[str]:
    "Top-level imports of a module's source that are neither stdlib, torch, nor one of ldm_course's `allowed` modules."
    bad = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.ImportFrom):
            if node.level:                                                    # from .x import ...
                if node.level != 1 or node.module not in allowed: bad.append(f"from {'.' * node.level}{node.module or ''} import ...")
                continue
            mods = [node.module]
        elif isinstance(node, ast.Import): mods = [a.name for a in node.names]
        else: continue
        for m in mods:
            top, _, rest = m.partition('.')
            if top == 'ldm_course' and rest.split('.')[0] in allowed: continue
            if top not in sys.stdlib_module_names and top not in ('__future__', 'torch'): bad.append(m)
    return bad

@pytest.mark.parametrize('name', sorted(MODEL_MODULES))
def test_model_modules_import_torch_and_core_only(name):
    bad = _forbidden_imports((ROOT/'ldm_course'/f'{name}.py').read_text(encoding='utf-8'), MODEL_MODULES[name])
    assert not bad, f"ldm_course/{name}.py is a model module: expected imports of torch, the standard library and {sorted(MODEL_MODULES[name])} only, got {bad}"

def test_model_import_check_can_fail():
    assert _forbidden_imports("import torch\nfrom .core import Config\nfrom .training import Trainer\nimport numpy as np\n", {'core'}) == \
        ['from .training import ...', 'numpy']
    assert _forbidden_imports("from __future__ import annotations\nimport dataclasses, math\nfrom torch import nn\nfrom .unet import UNet\n", {'core', 'unet'}) == []

def _environment_writes(source: str) -> list[str]:
    "Lines of `source` that change the process environment: os.environ[...] = / del / .pop/.update/.setdefault/.clear, os.putenv/unsetenv."
    bad = []
    def is_environ(n): return isinstance(n, ast.Attribute) and n.attr == 'environ' and isinstance(n.value, ast.Name) and n.value.id == 'os'
    for node in ast.walk(ast.parse(source)):
        targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target] if isinstance(node, ast.AugAssign) else []
        if any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets): bad.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if is_environ(f.value) and f.attr in ('pop', 'update', 'setdefault', 'clear', 'popitem', '__setitem__', '__delitem__'): bad.append(node.lineno)
            if isinstance(f.value, ast.Name) and f.value.id == 'os' and f.attr in ('putenv', 'unsetenv'): bad.append(node.lineno)
    return sorted(bad)

@pytest.mark.parametrize('path', sorted((ROOT/'ldm_course').glob('*.py')), ids=lambda p: p.name)
def test_package_never_rewrites_the_environment(path):
    "Runs roots, devices and sizes are passed in (runs=, device=, sized(...)): the environment only supplies defaults."
    bad = _environment_writes(path.read_text(encoding='utf-8'))
    assert not bad, f"{path.name} changes os.environ at line(s) {bad}; expected the value passed as an argument instead"

def test_environment_check_can_fail():
    src = "import os\nos.environ['A'] = '1'\nos.environ.pop('B', None)\ndel os.environ['C']\nos.putenv('D', '')\nx = os.environ.get('E')\n"
    assert _environment_writes(src) == [2, 3, 4, 5]
