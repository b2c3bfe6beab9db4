"""Full size, built and trained for two steps on a CPU: the `full` side of every `pick` preset and the models of every shipped
recipe (a GPU recipe is its own size), so that a wrong shape, a missing key or a config that cannot be built fails here and not
on a learner's rented GPU. Random tensors of the right shapes stand in for the data (no data set is loaded); each model runs
two steps of the course's `Trainer` with its real loss at batch 2 (1 at 256x256) and its full resolution. What the steps change from the
preset: `steps=2` and a constant learning rate without warm-up (so both steps move the weights at the preset's `lr`).
Models that two presets or recipes share are stepped once. The list is `ldm_course.bench.full_size_models()`, the one the
benchmarks chapter projects GPU training times for. About a minute of CPU time on one thread."""
import os
import pytest
import torch
from torch.utils.data import DataLoader
from ldm_course.bench import full_size, full_size_models

BATCH = 2

def batch_size(mc) -> int:
    "2, or 1 for 256x256 images (the f8 VAE's two steps at batch 2 would take a minute on one thread)."
    return 1 if getattr(mc, 'image_size', 0) >= 256 else BATCH

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def test_pick_reads_the_switch_at_call_time(monkeypatch):
    from ldm_course.core import pick
    from ldm_course.vae_training import vae_configs
    monkeypatch.setenv('LDM_QUICK', '1')
    with full_size():
        assert pick('q', 'f') == 'f'
        assert vae_configs()[0].channels == (64, 128, 256)
    assert os.environ['LDM_QUICK'] == '1' and vae_configs()[0].channels == (16, 32, 32)

def _param(m):
    "A pytest case of one FullSizeModel, at the batch size it trains with here."
    return pytest.param(m.cls, m.config, m.train, m.item, lambda: m.loss('cpu'), id=m.name)

CASES = [_param(m) for m in full_size_models()]      # the presets are evaluated with LDM_QUICK=0 inside full_size_models

def test_every_preset_and_recipe_is_covered():
    from ldm_course.cli import list_recipes
    names = {n for p in CASES for n in p.id.split(' = ')}
    for name in list_recipes(): assert f'{name} VAE' in names, name
    for name in ('04 classifier', '06 VAE', '10 denoiser', '12 shape classifier', '13 class denoiser', '15 image VAE (shapes)',
                 '15 text U-Net (shapes)', 'folder_256 U-Net', 'folder_64 U-Net', 'fashion_ldm U-Net'):
        assert name in names, name

@torch.no_grad()
def _probe(model, loss_fn, batch) -> float:
    "The loss in eval mode with the random draws (noise, timesteps, posterior sample, augmentation) of seed 0: a function of the weights only."
    was = model.training; model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0); loss = float(loss_fn(model, batch)[0])
    model.train(was)
    return loss

@pytest.mark.parametrize('cls,mc,tc,item,make_loss', CASES)
def test_full_size_two_steps(cls, mc, tc, item, make_loss):
    from ldm_course.training import Trainer
    torch.manual_seed(0)
    model = cls(mc)
    loss_fn, losses = make_loss(), []
    def recorded(m, batch):
        loss, logs = loss_fn(m, batch)
        losses.append(float(loss.detach())); return loss, logs
    grads = {}                                   # parameter name -> largest |gradient| of each step
    for n, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda p, n=n: grads.setdefault(n, []).append(p.grad.abs().max().item()))
    B = batch_size(mc)
    dl = DataLoader([item(i) for i in range(B)], batch_size=B, drop_last=True)
    cfg = tc.replace(steps=2, epochs=None, warmup_steps=0, schedule='constant', progress=False, log_every=1, eval_every=0, ckpt_every=0)
    first = next(iter(dl))
    probe_before = _probe(model, loss_fn, first)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if grads.get(n) is None}   # (none recorded yet)
    t = Trainer(model, recorded, dl, cfg, device='cpu')
    t.fit()
    assert t.step == 2 and len(losses) == 2, (t.step, losses)
    assert all(torch.isfinite(torch.tensor(losses))), losses
    params = dict(t.model.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    missing = sorted(set(params) - set(grads))
    assert not missing, f"{len(missing)} parameters never get a gradient from the training loss (unused layers), e.g. {missing[:5]}"
    pushed = [n for n, g in grads.items() if g[0] > 0]   # a zero-initialised output layer stops the first gradient short of the rest
    assert pushed, "no parameter had a non-zero gradient in the first step"
    still = [n for n in pushed if torch.equal(params[n].detach(), before[n])]
    assert not still, f"parameters with a non-zero gradient that AdamW did not change: {still[:5]}"
    probe_after = _probe(t.model, loss_fn, first)
    assert probe_after != probe_before, "two optimiser steps left the model's loss on the same draws unchanged"

# ---- the 256 px recipe through the command line

def test_folder_256_print_config(capsys, tmp_path):
    import yaml
    from ldm_course.cli import train_main, load_recipe
    train_main(['folder_256', f'dataset=folder:{tmp_path}', '--print-config'])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg['name'] == 'folder_256' and cfg['task'] == 'text_to_image' and cfg['dataset'] == f'folder:{tmp_path.resolve()}'
    assert (cfg['vae']['model']['image_size'], cfg['vae']['model']['down_factor'], cfg['vae']['model']['latent_channels']) == (256, 8, 4)
    assert len(cfg['vae']['model']['channels']) == 4                 # three downsamplings
    assert (cfg['unet']['in_channels'], cfg['unet']['sample_size']) == (4, 32)
    r = load_recipe('folder_256', [f'dataset=folder:{tmp_path}'])
    assert r.vae_model.latent_shape == (4, 32, 32) and r.unet.sample_size == 32
