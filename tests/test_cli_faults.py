"""The console scripts on bad input (issue 14): one line that names the file or setting and what was expected, exit status 2,
no traceback, and nothing written or downloaded first. Tiny recipes and a random-weight pipeline: seconds per test."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest

BIN = Path(sys.executable).parent
VAE_TINY = ['vae.model.channels=[8,16,16]', 'vae.train.steps=1', 'vae.train.batch_size=4', 'vae.train.test_limit=4',
            'vae.train.progress=false', 'train.batch_size=4']

def run(script, *args, cwd=None, timeout=120, env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    return subprocess.run([str(BIN/script), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)

def usage_error(res, *expected: str) -> str:
    "The error line of a usage error (exit 2, argparse's 'prog: error: ...', no traceback), checked to contain `expected`."
    assert 'Traceback' not in res.stderr, res.stderr[-3000:]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    line = res.stderr.strip().splitlines()[-1]
    assert ': error: ' in line and all(e in line for e in expected), (line, expected)
    return line

@pytest.fixture(scope='module')
def runs(tmp_path_factory): return tmp_path_factory.mktemp('runs')

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    from ldm_course.cli import make_example_folder
    d = tmp_path_factory.mktemp('images')
    make_example_folder(d, n=12, size=32)
    return d

@pytest.fixture(scope='module')
def pipeline(tmp_path_factory) -> Path:
    "A saved pipeline of random weights: 32x32 images from 4x8x8 latents."
    from ldm_course.vae import AutoencoderKL, VAEConfig
    from ldm_course.unet import UNetConfig
    from ldm_course.crossattn import TextUNet
    from ldm_course.text import TextEncoder
    from ldm_course.diffusion import DiffusionConfig
    from ldm_course.pipeline import LDMPipeline
    vae = AutoencoderKL(VAEConfig(in_channels=3, image_size=32, channels=(8, 16, 16), blocks_per_level=1, norm_groups=8))
    unet = TextUNet(UNetConfig(in_channels=4, sample_size=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                               attention_resolutions=(1, 2), num_heads=2, norm_groups=8, context_dim=384))
    return LDMPipeline(unet, vae, TextEncoder(max_length=8), 1.0, DiffusionConfig(), device='cpu').save_pretrained(tmp_path_factory.mktemp('p')/'pipe')

def edited_pipeline(pipeline, tmp_path, text) -> Path:
    d = tmp_path/'edited'; shutil.copytree(pipeline, d)
    (d/'pipeline.json').write_bytes(text if isinstance(text, bytes) else text.encode())
    return d

def generate(pipe, *extra, **kw):
    return run('ldm-generate', '--pipeline', pipe, '--prompt', 'a red circle', '--steps', '2', '--n', '1', *extra, **kw)

# --- recipes ---------------------------------------------------------------------------------------------------------

def test_non_utf8_recipe(tmp_path):
    p = tmp_path/'latin.yaml'; p.write_bytes('base: folder_tiny\ndescription: café\n'.encode('latin-1'))
    usage_error(run('ldm-train-vae', p, '--print-config'), 'latin.yaml', 'not UTF-8 text', 'expected a YAML file saved as UTF-8')

def test_value_where_a_section_belongs(tmp_path):
    p = tmp_path/'t5.yaml'; p.write_text('base: folder_tiny\ntrain: 5\n')
    usage_error(run('ldm-train-vae', p, 'dataset=folder:.', '--print-config'), "t5.yaml", "recipe key 'train': expected a mapping of TextToImageTrainConfig keys, got 5")

@pytest.mark.parametrize('name', ['../../escaped', 'a/b', '..'])
def test_name_must_stay_in_the_runs_folder(tmp_path, runs, images, name):
    res = run('ldm-train-vae', 'folder_tiny', f"dataset=folder:{images}", f"name={name}", *VAE_TINY, '--runs', tmp_path/'r'/'runs')
    usage_error(res, f"recipe name {name!r}: expected one folder name")
    assert not (tmp_path/'r').exists() and not (tmp_path/'escaped').exists()       # nothing written anywhere

def test_numbers_as_people_write_them(tmp_path):
    "README's `train.lr=1e-4`, and `lr: 1e-3` in a file: YAML 1.1 alone reads both as strings."
    import yaml
    p = tmp_path/'mine.yaml'; p.write_text('base: fashion_ldm\nvae:\n  train:\n    lr: 1e-3\n')
    res = run('ldm-train', p, 'train.lr=1e-4', '--print-config')
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load(res.stdout)
    assert (cfg['train']['lr'], cfg['vae']['train']['lr']) == (1e-4, 1e-3)

def test_missing_folder(tmp_path):
    usage_error(run('ldm-train-vae', 'folder_tiny', f"dataset=folder:{tmp_path/'nowhere'}", '--runs', tmp_path/'runs'),
                f"dataset='folder:{tmp_path/'nowhere'}': no such folder")

def test_too_few_images(tmp_path, images):
    "12 shapes + 5 awkward files: fewer than folder_tiny's batch of 32, so training could never take a step."
    usage_error(run('ldm-train-vae', 'folder_tiny', f"dataset=folder:{images}", '--runs', tmp_path/'runs'),
                '17 image file(s), fewer than vae.train.batch_size=32', 'add images or lower vae.train.batch_size')
    assert not (tmp_path/'runs').exists()

@pytest.mark.parametrize('device', ['bogus', 'cuda:99'])
def test_bad_device_recipe(tmp_path, images, device):
    usage_error(run('ldm-train-vae', 'folder_tiny', f"dataset=folder:{images}", *VAE_TINY, '--device', device, '--runs', tmp_path/'runs'),
                f"--device {device!r}: ")

def test_two_folders_two_runs(tmp_path):
    "folder:/x/c_d and folder:/x/c/d must not share (and overwrite) one VAE run folder."
    from ldm_course.cli import make_example_folder
    a, b = tmp_path/'x'/'c_d', tmp_path/'x'/'c'/'d'
    for d in (a, b): make_example_folder(d, n=8, size=32)
    for d in (a, b):
        res = run('ldm-train-vae', 'folder_tiny', f"dataset=folder:{d}", *VAE_TINY, '--runs', tmp_path/'runs')
        assert res.returncode == 0, res.stderr[-2000:]
    vae_runs = [p.name for p in (tmp_path/'runs'/'quick').iterdir() if p.name.startswith('vae_')]
    assert len(vae_runs) == 2, vae_runs

# --- ldm-generate ----------------------------------------------------------------------------------------------------

def test_generate_ok(pipeline, tmp_path):
    res = generate(pipeline, '--out', tmp_path/'ok.png')
    assert res.returncode == 0 and (tmp_path/'ok.png').is_file(), res.stderr[-2000:]

@pytest.mark.parametrize('size', ['64', '0'])
def test_generate_other_sizes_refused_before_sampling(pipeline, tmp_path, size):
    "100000 steps would run for many minutes: the refusal has to come before the sampler starts."
    res = run('ldm-generate', '--pipeline', pipeline, '--prompt', 'a', '--steps', '100000', '--size', size, '--out', tmp_path/'s.png', timeout=90)
    usage_error(res, f"height={size}, width={size}: this pipeline makes 32x32 images only", 'expected 32 or None')

@pytest.mark.parametrize('text, expected', [
    (b'{"format": "caf\xe9"}', 'not UTF-8 text'),
    ('[1, 2]', 'a JSON list; expected an object with keys'),
    ('{"format": "ldm_course.pipeline/1"}', "missing key(s) ['unet_class', 'scale_factor'"),
    ('{not json', 'not valid JSON')])
def test_generate_bad_pipeline_json(pipeline, tmp_path, text, expected):
    usage_error(generate(edited_pipeline(pipeline, tmp_path, text), '--out', tmp_path/'x.png'), 'pipeline.json', expected)

def test_generate_never_downloads_the_encoder_a_pipeline_names(pipeline, tmp_path):
    spec = json.loads((pipeline/'pipeline.json').read_text())
    spec['text_encoder']['name_or_path'] = 'someone/their-model'
    # offline, so that without the fix the hub lookup fails fast (here) instead of reaching the network
    res = generate(edited_pipeline(pipeline, tmp_path, json.dumps(spec)), '--out', tmp_path/'x.png', env={'HF_HUB_OFFLINE': '1'})
    usage_error(res, "text_encoder.name_or_path='someone/their-model' is not a folder on this machine", 'never downloaded')

def test_generate_unwritable_out(pipeline, tmp_path):
    blocker = tmp_path/'file'; blocker.write_text('a file, not a folder')
    usage_error(generate(pipeline, '--out', blocker/'sub'/'x.png'), f"--out '{blocker/'sub'/'x.png'}': cannot create the folder")
    usage_error(generate(pipeline, '--out', '/proc/no/x.png'), "--out '/proc/no/x.png'")

@pytest.mark.parametrize('device', ['bogus', 'cuda:99'])
def test_generate_bad_device(pipeline, tmp_path, device):
    usage_error(generate(pipeline, '--device', device, '--out', tmp_path/'x.png'), f"--device {device!r}: ")
