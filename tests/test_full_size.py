"""Full size, built and trained for two steps on a CPU: the `full` side of every `pick` preset and the models of every shipped
recipe (a GPU recipe is its own size), so that a wrong shape, a missing key or a config that cannot be built fails here and not
on a learner's rented GPU. Random tensors of the right shapes stand in for the data (no data set is loaded); each model runs
two steps of the course's `Trainer` with its real loss at batch 2 (1 at 256x256) and its full resolution. What the steps change from the
preset: `steps=2` and a constant learning rate without warm-up (so both steps move the weights at the preset's `lr`).
Models that two presets or recipes share are stepped once. About a minute on one thread."""
import contextlib, os
import pytest
import torch
from torch.utils.data import DataLoader

BATCH = 2

def batch_size(mc) -> int:
    "2, or 1 for 256x256 images (the f8 VAE's two steps at batch 2 would take a minute on one thread)."
    return 1 if getattr(mc, 'image_size', 0) >= 256 else BATCH

@contextlib.contextmanager
def full_size():
    "LDM_QUICK=0 while the block runs: `pick` reads it at every call, so presets evaluated inside are the full ones."
    old = os.environ.get('LDM_QUICK')
    os.environ['LDM_QUICK'] = '0'
    try: yield
    finally:
        if old is None: os.environ.pop('LDM_QUICK', None)
        else: os.environ['LDM_QUICK'] = old

@pytest.fixture(scope='module', autouse=True)
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

def test_pick_reads_the_switch_at_call_time():
    from ldm_course.core import pick
    from ldm_course.vae import vae_configs
    with full_size():
        assert pick('q', 'f') == 'f'
        assert vae_configs()[0].channels == (64, 128, 256)
    os.environ['LDM_QUICK'] = '1'
    try: assert vae_configs()[0].channels == (16, 32, 32)
    finally: os.environ.pop('LDM_QUICK')

# ---- batches of random tensors, one maker per kind of data

def _g(seed=0): return torch.Generator().manual_seed(seed)

def images(c, size):
    return lambda i: (torch.rand(c, size, size, generator=_g(i)) * 2 - 1,)

def labelled_images(c, size, n_classes=10):
    return lambda i: (torch.rand(c, size, size, generator=_g(i)) * 2 - 1, torch.randint(n_classes, (), generator=_g(i)))

def shapes_items():
    from ldm_course.shapes import ShapesDataset
    ds = ShapesDataset(BATCH, 'all', 0)          # generated on the fly: two rendered images with their labels
    return lambda i: ds[i]

def latents(shape, classes=None):
    def item(i):
        z = torch.randn(*shape, generator=_g(i))
        return (z, torch.randint(classes, (), generator=_g(i))) if classes else (z, torch.tensor(0))
    return item

def captioned_latents(shape, tokens, width):
    "A latent, a random context of the text encoder's width and a padding mask (prompt lengths 3 and all tokens)."
    def item(i):
        n = [3, tokens][i % 2]
        return torch.randn(*shape, generator=_g(i)), torch.randn(tokens, width, generator=_g(i + 7)), torch.arange(tokens) < n
    return item

# ---- the course's losses

def vae_loss(tc, in_channels):
    from ldm_course.vae import vae_loss_fn, make_perceptual, resolve_perceptual
    kind = resolve_perceptual(tc.perceptual)
    perc = None
    if kind == 'classifier':                     # chapter 04's full-size network, untrained: the loss and its gradient are what count
        from ldm_course.classifier import Classifier, classifier_configs
        with full_size(): perc = make_perceptual('classifier', Classifier(classifier_configs()[0]))
    elif kind == 'lpips': perc = make_perceptual('lpips')
    return vae_loss_fn(tc, perc)

def denoiser_loss(tc):
    from ldm_course.diffusion import diffusion_loss
    sched = tc.scheduler()
    return lambda m, b: diffusion_loss(m, b[0], tc, sched)

def class_loss(tc, n_classes):
    from ldm_course.diffusion import diffusion_loss
    from ldm_course.guidance import drop_conditions
    sched, null = tc.scheduler(), {'class_labels': torch.tensor([n_classes])}
    return lambda m, b: diffusion_loss(m, b[0], tc, sched, **drop_conditions({'class_labels': b[1].long()}, null, tc.cond_dropout))

def text_loss(tc):
    from ldm_course.diffusion import diffusion_loss
    from ldm_course.guidance import drop_conditions
    sched = tc.scheduler()
    def loss(m, b):
        z, ctx, mask = b
        null = {'context': torch.zeros(1, *ctx.shape[1:]), 'context_mask': torch.arange(ctx.shape[1])[None] < 1}
        return diffusion_loss(m, z, tc, sched, **drop_conditions({'context': ctx, 'context_mask': mask}, null, tc.cond_dropout))
    return loss

# ---- the cases: (names, model class, model config, train config, item maker, loss)

def _cases():
    from ldm_course.classifier import Classifier, classifier_configs, classifier_loss
    from ldm_course.vae import AutoencoderKL, vae_configs
    from ldm_course.unet import UNet
    from ldm_course.crossattn import TextUNet
    from ldm_course.diffusion import denoiser_configs
    from ldm_course.guidance import class_denoiser_configs
    from ldm_course.shapes import ShapeAttributeClassifier, shape_classifier_configs, shape_classifier_loss
    from ldm_course.t2i import image_vae_configs, text_to_image_configs
    from ldm_course.cli import list_recipes, load_recipe
    out = []
    def vae_case(name, mc, tc):
        out.append((name, AutoencoderKL, mc, tc, images(mc.in_channels, mc.image_size), lambda: vae_loss(tc, mc.in_channels)))
    with full_size():
        mc, tc = classifier_configs()
        out.append(('04 classifier', Classifier, mc, tc, labelled_images(1, mc.image_size), lambda: classifier_loss))
        vm, vt = vae_configs(); vae_case('06 vae', vm, vt)
        mc, tc = denoiser_configs()
        out.append(('10 denoiser', UNet, mc, tc, latents(vm.latent_shape), lambda tc=tc: denoiser_loss(tc)))
        mc, tc = shape_classifier_configs()
        out.append(('12 shape classifier', ShapeAttributeClassifier, mc, tc, shapes_items(), lambda: shape_classifier_loss))
        mc, tc = class_denoiser_configs()
        out.append(('13 class denoiser', UNet, mc, tc, latents(vm.latent_shape, 10), lambda tc=tc, n=mc.num_classes: class_loss(tc, n)))
        for ds in ('shapes', 'emoji'):
            vm, vt = image_vae_configs(ds); vae_case(f'15 image vae ({ds})', vm, vt)
            mc, tc = text_to_image_configs(ds)
            out.append((f'15 text denoiser ({ds})', TextUNet, mc.replace(sample_size=vm.latent_shape[1]), tc,
                        captioned_latents(vm.latent_shape, tc.max_length, mc.context_dim), lambda tc=tc: text_loss(tc)))
    for name in list_recipes():
        r = load_recipe(name)
        vae_case(f'recipe {name} vae', r.vae_model, r.vae_train)
        if r.unet is None: continue
        shape = r.vae_model.latent_shape
        if r.task == 'text_to_image':
            out.append((f'recipe {name} unet', TextUNet, r.unet, r.train, captioned_latents(shape, r.train.max_length, r.unet.context_dim),
                        lambda tc=r.train: text_loss(tc)))
        elif r.task == 'class_conditional':
            out.append((f'recipe {name} unet', UNet, r.unet, r.train, latents(shape, r.unet.num_classes),
                        lambda tc=r.train, n=r.unet.num_classes: class_loss(tc, n)))
        else: out.append((f'recipe {name} unet', UNet, r.unet, r.train, latents(shape), lambda tc=r.train: denoiser_loss(tc)))
    # one run per distinct (model, config, training objective): presets and recipes that share a model share its run
    unique = {}
    for name, cls, mc, tc, item, loss in out:
        key = (cls.__name__, repr(mc.to_dict()), type(tc).__name__, getattr(tc, 'perceptual', None), getattr(tc, 'prediction_type', None))
        unique.setdefault(key, [[], cls, mc, tc, item, loss])[0].append(name)
    return [pytest.param(*v[1:], id=' + '.join(v[0])) for v in unique.values()]

CASES = _cases()

def test_every_preset_and_recipe_is_covered():
    from ldm_course.cli import list_recipes
    ids = ' + '.join(p.id for p in CASES)
    for name in list_recipes(): assert f'recipe {name} vae' in ids, name
    for name in ('04 classifier', '06 vae', '10 denoiser', '12 shape classifier', '13 class denoiser', '15 image vae (shapes)',
                 '15 text denoiser (shapes)', 'recipe folder_256 unet'):
        assert name in ids, name

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
