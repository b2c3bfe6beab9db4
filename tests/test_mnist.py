"""MNIST, the second built-in dataset (issue 19): the Fashion-MNIST loader chain by name (`dataset=mnist`), exercised on IDX
files this test writes byte by byte (no package here ships MNIST, and nothing is downloaded): loading, the dataloaders,
bad files, where the files are looked for, the train configs, and the command line (`--print-config`, a usage error,
an in-process tiny run of all three recipe commands). Seconds on a CPU."""
import gzip, os, struct, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
import ldm_course.data as D

N_TRAIN, N_TEST = 64, 32
BIN = Path(sys.executable).parent
FILES = {'train': ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'), 'test': ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}

def idx_bytes(a: np.ndarray) -> bytes:
    "The IDX encoding of a uint8 array, written out here (not with the package's write_idx): magic 0x0801 (labels) or 0x0803 (images)."
    return struct.pack('>HBB', 0, 0x08, a.ndim) + struct.pack('>' + 'I' * a.ndim, *a.shape) + a.astype(np.uint8).tobytes()

def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    "n 28x28 'digits': random bytes inside a blob whose size depends on the label (so images and labels belong together), labels 0..9 in turn."
    g = np.random.default_rng(seed)
    y = (np.arange(n) % 10).astype(np.uint8)
    x = np.zeros((n, 28, 28), np.uint8)
    for i, d in enumerate(y): x[i, 4:6 + 2 * d, 8:20] = g.integers(128, 256, (2 + 2 * d, 12))
    return x, y

DATA = {'train': digits(N_TRAIN, 1), 'test': digits(N_TEST, 2)}

def write_mnist(d: Path, gz: bool) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in DATA.items():
        for stem, a in zip(FILES[split], (x, y)):
            b = idx_bytes(a)
            (d/(stem + '.gz')).write_bytes(gzip.compress(b)) if gz else (d/stem).write_bytes(b)
    return d

@pytest.fixture(scope='module')
def mnist_gz(tmp_path_factory): return write_mnist(tmp_path_factory.mktemp('mnist_gz'), gz=True)

@pytest.fixture(scope='module')
def mnist_plain(tmp_path_factory): return write_mnist(tmp_path_factory.mktemp('mnist_plain'), gz=False)

@pytest.fixture
def one_thread():
    "Training in this process: one thread (on a busy machine, torch's default thread pool makes these tiny steps slow)."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(autouse=True)
def no_mnist_env(monkeypatch, tmp_path):
    "Whatever this machine has: no LDM_MNIST_DIR and an empty cache, so only the files a test names are found."
    monkeypatch.delenv('LDM_MNIST_DIR', raising=False)
    monkeypatch.setattr(D, 'CACHE_DIR', tmp_path/'cache')

# --- loading ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['gz', 'plain'])
def test_load_mnist(kind, request):
    d = request.getfixturevalue(f'mnist_{kind}')
    for split, n in (('train', N_TRAIN), ('test', N_TEST)):
        x, y = D.load_mnist(split, path=d)
        assert (x.shape, x.dtype, y.shape, y.dtype) == ((n, 28, 28), torch.uint8, (n,), torch.int64)
        assert torch.equal(x, torch.from_numpy(DATA[split][0])) and y.tolist() == DATA[split][1].tolist()
        assert torch.equal(D.load_idx('mnist', split, d)[0], x)
    ds = D.MNIST('test', path=d)
    img, label = ds[7]
    assert (len(ds), img.shape, img.dtype, label.item(), ds.classes) == (N_TEST, (1, 32, 32), torch.float32, 7, tuple('0123456789'))
    assert img.min() == -1 and img.max() <= 1 and (img[:, :2] == -1).all()        # [-1, 1], padded with the background
    assert torch.allclose(img, D.to_model_range(torch.from_numpy(DATA['test'][0][7:8]))[0])
    assert D.MNIST_CLASSES == ('0', '1', '2', '3', '4', '5', '6', '7', '8', '9')
    assert D.idx_split_size('mnist', 'train', d) == N_TRAIN

def test_write_idx_is_read_back(tmp_path):
    x, _ = DATA['test']
    for name in ('a-idx3-ubyte', 'a-idx3-ubyte.gz'):
        p = D.write_idx(tmp_path/name, x)
        assert np.array_equal(D.read_idx(p), x)
    assert (tmp_path/'a-idx3-ubyte').read_bytes() == idx_bytes(x)           # the same bytes as the format written out above
    with pytest.raises(TypeError, match='expected a uint8 array'): D.write_idx(tmp_path/'f', x.astype(np.float32))

def test_dataloaders(mnist_gz):
    train, test = D.image_dataloaders('mnist', 16, path=mnist_gz, seed=3)
    batches = list(train)
    assert len(batches) == N_TRAIN // 16 and len(test.dataset) == N_TEST
    xb, yb = batches[0]
    assert (xb.shape, xb.dtype, yb.dtype) == ((16, 1, 32, 32), torch.float32, torch.int64)
    assert -1 <= xb.min() and xb.max() <= 1
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == sorted(DATA['train'][1].tolist())   # every image once per epoch
    again = next(iter(D.image_dataloaders('mnist', 16, path=mnist_gz, seed=3)[0]))
    other = next(iter(D.image_dataloaders('mnist', 16, path=mnist_gz, seed=4)[0]))
    assert torch.equal(again[1], yb) and not torch.equal(other[1], yb)             # the seed decides the order
    limited, _ = D.image_dataloaders('mnist', 10, path=mnist_gz, limit=20, test_limit=10)
    assert torch.bincount(limited.dataset.y).tolist() == [2] * 10                 # a class-balanced subset, as for Fashion-MNIST
    with pytest.raises(ValueError, match=r"dataset='mnsit': expected one of \['fashion', 'mnist'\]"):
        D.image_dataloaders('mnsit', 16, path=mnist_gz)

# --- bad files -------------------------------------------------------------------------------------------------------

def _broken(tmp_path, mnist_plain, stem, data: bytes) -> Path:
    d = tmp_path/'broken'; d.mkdir()
    for f in mnist_plain.iterdir(): (d/f.name).write_bytes(f.read_bytes())
    (d/stem).write_bytes(data)
    return d

x_test, y_test = DATA['test']
BAD = {
    'wrong magic': ('t10k-images-idx3-ubyte', b'\x00\x00\x09\x03' + idx_bytes(x_test)[4:], 'not an IDX file of unsigned bytes'),
    'not IDX at all': ('t10k-labels-idx1-ubyte', b'<html>404 Not Found</html>', 'found 3c 68 74 6d'),
    'truncated data': ('t10k-images-idx3-ubyte', idx_bytes(x_test)[:-100], f'expected {N_TEST * 28 * 28} data bytes for shape ({N_TEST}, 28, 28), found'),
    'truncated header': ('t10k-images-idx3-ubyte', idx_bytes(x_test)[:9], 'the header of 3 dimensions is cut off at 9 bytes'),
    'truncated gzip': ('t10k-images-idx3-ubyte.gz', gzip.compress(idx_bytes(x_test))[:-200], 'not a complete gzip file'),
    'not gzip': ('t10k-images-idx3-ubyte.gz', idx_bytes(x_test), 'not a complete gzip file'),
    'images where labels belong': ('t10k-labels-idx1-ubyte', idx_bytes(x_test), 'expected labels of shape (N,)'),
    'too few labels': ('t10k-labels-idx1-ubyte', idx_bytes(y_test[:-1]), f'{N_TEST} images but {N_TEST - 1} labels in the test split'),
    'label 10': ('t10k-labels-idx1-ubyte', idx_bytes(np.full(N_TEST, 10, np.uint8)), 'label 10, expected labels 0 to 9'),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_file(case, tmp_path, mnist_plain):
    stem, data, msg = BAD[case]
    d = _broken(tmp_path, mnist_plain, stem, data)
    with pytest.raises(ValueError) as e: D.load_mnist('test', path=d)
    assert msg in str(e.value), str(e.value)
    if case not in ('too few labels',): assert stem in str(e.value), str(e.value)        # the message names the file

# --- where the files are looked for ----------------------------------------------------------------------------------

def test_env_var_and_explicit_path(monkeypatch, mnist_gz, mnist_plain, tmp_path):
    monkeypatch.setenv('LDM_MNIST_DIR', str(mnist_gz))
    assert D.mnist_dir() == mnist_gz and len(D.MNIST('train')) == N_TRAIN
    assert D.mnist_dir(mnist_plain) == mnist_plain                                # an explicit path wins
    (tmp_path/'empty').mkdir()
    monkeypatch.setenv('LDM_MNIST_DIR', str(tmp_path/'empty'))
    with pytest.raises(FileNotFoundError, match=r'\(\$LDM_MNIST_DIR\): expected the MNIST files'): D.mnist_dir()
    with pytest.raises(FileNotFoundError, match='expected the MNIST files'): D.mnist_dir(tmp_path/'nope')
    assert D.fashion_mnist_dir(mnist_gz) == mnist_gz                               # the same files, the same chain

def test_cache_folder_and_download(monkeypatch, tmp_path, mnist_gz):
    "The cache, then torchvision's download (stood in for: this test never touches the network), then an error that says what to do."
    import torchvision.datasets as tvd
    cache = D.CACHE_DIR/'mnist'
    calls = []
    def failing(root, train, download): calls.append((Path(root), train, download)); raise RuntimeError('no network here')
    monkeypatch.setattr(tvd, 'MNIST', failing)
    with pytest.raises(FileNotFoundError) as e: D.mnist_dir()
    msg = str(e.value)
    assert calls == [(cache, True, True)], calls
    for part in ('MNIST not found', 'no Debian/Ubuntu package ships MNIST', 'LDM_MNIST_DIR', str(cache), "torchvision's download failed: no network here"):
        assert part in msg, (part, msg)
    with pytest.raises(FileNotFoundError, match=r'\(download=False\)'): D.mnist_dir(download=False)
    def downloading(root, train, download):                                     # what torchvision's MNIST leaves: <root>/MNIST/raw/...
        raw = Path(root)/'MNIST'/'raw'; raw.mkdir(parents=True, exist_ok=True)
        for f in mnist_gz.iterdir(): (raw/f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(tvd, 'MNIST', downloading)
    assert D.mnist_dir() == cache
    monkeypatch.setattr(tvd, 'MNIST', failing)
    assert D.mnist_dir() == cache and len(D.MNIST('test')) == N_TEST              # found in the cache: no second download
    assert len(calls) == 1

# --- the train configs and the runs ----------------------------------------------------------------------------------

def test_train_config_dataset():
    from ldm_course.training import TrainConfig
    from ldm_course.vae_training import VAETrainConfig
    from ldm_course.diffusion import DenoiserTrainConfig
    assert 'dataset' not in TrainConfig().to_dict()                                # the default is not written: old checkpoints match
    assert VAETrainConfig(dataset='mnist').to_dict()['dataset'] == 'mnist'
    assert DenoiserTrainConfig.from_dict(DenoiserTrainConfig(dataset='mnist').to_dict()).dataset == 'mnist'
    with pytest.raises(ValueError, match=r"VAETrainConfig.dataset='digits': expected one of \['fashion', 'mnist'\]"): VAETrainConfig(dataset='digits')
    assert D.idx_run_name('vae') == 'vae' and D.idx_run_name('denoiser', 'mnist') == 'denoiser_mnist'

def test_fashion_loader_refuses_an_mnist_run(mnist_gz):
    "Until a chapter's train_fn loads image_dataloaders(tc.dataset, ...), an MNIST run through it fails instead of learning Fashion-MNIST."
    assert len(D.fashion_dataloaders(16, path=mnist_gz)[0]) == N_TRAIN // 16      # (these files have Fashion-MNIST's names too)
    with D.training_on('mnist'):
        with pytest.raises(RuntimeError, match=r"dataset='mnist' in its config.*image_dataloaders\(tc.dataset, ...\)"):
            D.fashion_dataloaders(16, path=mnist_gz)
        with D.training_on('fashion'): D.fashion_dataloaders(16, path=mnist_gz)  # a nested Fashion-MNIST run (the perceptual classifier)
    assert D.active_dataset() is None

def test_mnist_classifier(monkeypatch, tmp_path, mnist_gz, one_thread):
    from ldm_course.core import runs_dir
    from ldm_course.classifier import ClassifierConfig
    from ldm_course.classifier_training import ClassifierTrainConfig, pretrained_classifier
    monkeypatch.setenv('LDM_RUNS', str(tmp_path/'runs')); monkeypatch.setenv('LDM_MNIST_DIR', str(mnist_gz))
    tc = ClassifierTrainConfig(steps=2, batch_size=16, progress=False, bf16=False, dataset='mnist')
    m = pretrained_classifier(ClassifierConfig(channels=(8, 16, 16), blocks_per_stage=1), tc, verbose=False)
    assert m.trained_on == 'mnist' and (runs_dir('classifier_mnist')/'checkpoint.safetensors').is_file()
    assert not runs_dir('classifier').exists()

# --- the command line ------------------------------------------------------------------------------------------------
# In this process (a fresh interpreter costs seconds per command) except one run of the installed console script.

def cli(main, *args, capsys) -> tuple[int, str, str]:
    "(exit status, stdout, stderr) of a console script's main function called in this process."
    try: main([*map(str, args)]); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    return code, out, err

def usage_error(code, err, *expected):
    "A usage error: exit status 2, argparse's 'prog: error: ...', no traceback, and the expected words."
    assert 'Traceback' not in err and code == 2, (code, err[-2000:])
    assert ': error: ' in err and all(e in err for e in expected), (expected, err[-2000:])

@pytest.mark.parametrize('args', [['mnist_ldm'], ['fashion_ldm', 'dataset=mnist'], ['mnist_class_cfg', 'train.steps=7']])
def test_print_config(args, capsys):
    from ldm_course.cli import train_main
    code, out, err = cli(train_main, *args, '--print-config', capsys=capsys)
    assert code == 0, err[-2000:]
    cfg = yaml.safe_load(out)
    assert (cfg['dataset'], cfg['vae']['train']['dataset'], cfg['train']['dataset']) == ('mnist', 'mnist', 'mnist'), cfg

def test_print_config_of_fashion_is_unchanged(capsys):
    from ldm_course.cli import train_main
    cfg = yaml.safe_load(cli(train_main, 'fashion_ldm', '--print-config', capsys=capsys)[1])
    assert 'dataset' not in cfg and 'dataset' not in cfg['train'] and 'dataset' not in cfg['vae']['train']

def test_cli_refuses_bad_datasets(monkeypatch, tmp_path, capsys):
    from ldm_course.cli import train_main, train_vae_main
    for main, args, msg in [(train_vae_main, ['fashion_ldm', 'dataset=folder:./x'], "expected one of ['fashion', 'mnist'] for an unconditional recipe"),
                            (train_vae_main, ['folder_tiny', 'dataset=mnist'], "'mnist' is for unconditional and class_conditional recipes"),
                            (train_main, ['mnist_ldm', 'train.dataset=fashion'], "train.dataset='fashion' differs from dataset='mnist'")]:
        usage_error(*cli(main, *args, '--print-config', capsys=capsys)[::2], msg)
    monkeypatch.setenv('LDM_MNIST_DIR', str(write_mnist(tmp_path/'m', gz=True)))
    usage_error(*cli(train_vae_main, 'mnist_ldm', '--runs', tmp_path/'runs', capsys=capsys)[::2],
                f"dataset='mnist': {N_TRAIN} training images, fewer than vae.train.batch_size=128")
    assert not (tmp_path/'runs').exists()

def test_console_script_without_the_files(tmp_path):
    "The installed ldm-train-vae, MNIST files missing where LDM_MNIST_DIR says: exit 2, one message naming the place, nothing written."
    (tmp_path/'empty').mkdir()
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'LDM_MNIST_DIR': str(tmp_path/'empty')}
    res = subprocess.run([str(BIN/'ldm-train-vae'), 'mnist_ldm', '--runs', str(tmp_path/'runs')], capture_output=True, text=True, env=env, timeout=300)
    usage_error(res.returncode, res.stderr, f"{tmp_path/'empty'} ($LDM_MNIST_DIR): expected the MNIST files")
    assert not (tmp_path/'runs').exists()

TINY = ['vae.model.channels=[8,16,16]', 'vae.model.blocks_per_level=1', 'vae.model.norm_groups=8', 'vae.model.mid_attention=false',
        'vae.train.steps=2', 'vae.train.batch_size=16', 'vae.train.test_limit=16', 'vae.train.warmup_steps=0', 'vae.train.eval_every=0',
        'vae.train.progress=false', 'vae.train.bf16=false',
        'unet.base_channels=16', 'unet.channel_mult=[1,2]', 'unet.attention_resolutions=[2]', 'unet.num_res_blocks=1', 'unet.norm_groups=8',
        'train.steps=2', 'train.batch_size=16', 'train.warmup_steps=0', 'train.progress=false', 'train.bf16=false',
        'sample.n=2', 'sample.steps=2']

def test_tiny_run_in_process(monkeypatch, tmp_path, mnist_gz, one_thread, capsys):
    "ldm-train-vae, ldm-cache-latents and ldm-train on MNIST (unconditional, then class-conditional on the same VAE), in this process."
    from ldm_course.cli import train_vae_main, cache_latents_main, train_main
    from ldm_course.latents import LatentDataset, vae_scale_factor
    monkeypatch.setenv('LDM_MNIST_DIR', str(mnist_gz))
    runs = tmp_path/'runs'
    for fn in (train_vae_main, cache_latents_main, train_main): fn(['mnist_ldm', *TINY, '--runs', str(runs)])
    out = capsys.readouterr().out
    assert 'ldm-train-vae mnist_ldm (unconditional, mnist)' in out and f'latents of {N_TRAIN} images' in out, out
    (size,) = [p.name for p in runs.iterdir()]                                     # quick/ or full/
    root = runs/size
    assert sorted(p.name for p in root.iterdir()) == ['denoiser_mnist', 'mnist_ldm', 'vae_mnist']   # no Fashion-MNIST run touched
    lat = LatentDataset(root/'vae_mnist'/'latents_train.safetensors')
    assert len(lat) == N_TRAIN and sorted(lat.labels.tolist()) == sorted(DATA['train'][1].tolist())
    monkeypatch.setenv('LDM_RUNS', str(runs))
    assert vae_scale_factor(dataset='mnist') > 0
    assert (root/'mnist_ldm'/'samples.png').is_file()
    train_main(['mnist_class_cfg', *TINY, '--runs', str(runs)])                     # chapter 13's trainer, on the MNIST VAE above
    out = capsys.readouterr().out
    assert 'loaded vae from' in out and 'class_denoiser' in out, out
    assert (root/'class_denoiser_mnist'/'checkpoint.safetensors').is_file() and (root/'mnist_class_cfg'/'samples.png').is_file()
