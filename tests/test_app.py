"""The Gradio app (chapter 20) in a real browser: `python -m ldm_course.app` on a tiny random-weights pipeline, on a free
loopback port, driven by Playwright in the system Chromium (Playwright never downloads a browser). Writes the chapter's
screenshot, nbs/images/app.png. Skipped, saying why, where no Chromium or no Playwright can be found."""
import io, os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest

os.environ['PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD'] = '1'
ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT/'nbs'/'images'/'app.png'
_CANDIDATES = (os.environ.get('LDM_CHROMIUM'), shutil.which('chromium'), '/usr/bin/chromium', shutil.which('chromium-browser'))
CHROMIUM = next((p for p in _CANDIDATES if p and os.access(p, os.X_OK)), None)
if CHROMIUM is None:
    pytest.skip("no Chromium found ($LDM_CHROMIUM, chromium on PATH, /usr/bin/chromium): install Debian's `chromium` "
                "(./course.sh setup does where apt is available) to run the browser test", allow_module_level=True)
sync_api = pytest.importorskip('playwright.sync_api', reason='Playwright is not installed (pip install -c constraints.txt -e ".[dev]")')

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def _tiny_pipeline(path: Path) -> Path:
    "A pipeline from random weights (32×32 px, the bundled text encoder), saved to `path`."
    import torch
    from ldm_course.pipeline import LDMPipeline
    from ldm_course.vae import AutoencoderKL, VAEConfig
    from ldm_course.unet import UNetConfig
    from ldm_course.crossattn import TextUNet
    from ldm_course.diffusion import DiffusionConfig
    from ldm_course.text import TextEncoder
    torch.manual_seed(0)
    vae = AutoencoderKL(VAEConfig(in_channels=3, image_size=32, channels=(8, 16, 16), down_factor=4, mid_attention=False))
    unet = TextUNet(UNetConfig(in_channels=4, sample_size=8, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                               attention_resolutions=(2,), num_heads=2, norm_groups=8, context_dim=384))
    return LDMPipeline(unet, vae, TextEncoder(device='cpu'), 1.0, DiffusionConfig(), device='cpu').save_pretrained(path)

@pytest.fixture
def app_url(tmp_path):
    "`python -m ldm_course.app` serving the tiny pipeline on a free loopback port; stopped at the end, whatever happens."
    d = _tiny_pipeline(tmp_path/'pipeline')
    port, log = _free_port(), open(tmp_path/'server.log', 'w+')
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'GRADIO_ANALYTICS_ENABLED': 'False', 'GRADIO_TEMP_DIR': str(tmp_path/'gradio')}
    proc = subprocess.Popen([sys.executable, '-m', 'ldm_course.app', '--pipeline', d.name, '--port', str(port), '--device', 'cpu'],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    url = f'http://127.0.0.1:{port}/'
    try:
        t0 = time.time()
        while True:
            if proc.poll() is not None:
                log.seek(0); pytest.fail(f"the app exited with {proc.returncode} before serving:\n{log.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.time() - t0 > 120:
                log.seek(0); pytest.fail(f"the app did not answer on {url} within 120 s:\n{log.read()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try: proc.wait(timeout=15)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        log.close()

@pytest.fixture
def page():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
        try: yield browser.new_page(viewport={'width': 1100, 'height': 780})
        finally: browser.close()

def _generate(page, seed: int, n: int, previous: list[str]) -> list[str]:
    "Set the seed, click Generate, wait for a gallery of `n` images other than `previous`; their URLs."
    page.locator('#seed input').fill(str(seed)); page.locator('#seed input').press('Tab')
    page.locator('#generate').click()
    page.wait_for_function("([n, prev]) => { const s = [...document.querySelectorAll('#gallery img')].map(e => e.src);"
                           " return s.length === n && s.join(' ') !== prev; }", arg=[n, ' '.join(previous)], timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('#gallery [data-testid=status-tracker]')]"
                           ".every(e => e.classList.contains('hide'))", timeout=30_000)   # the event is finished
    return page.locator('#gallery img').evaluate_all('els => els.map(e => e.src)')

def _pixels(urls: list[str]):
    import numpy as np
    from PIL import Image
    images = [Image.open(io.BytesIO(urllib.request.urlopen(u, timeout=10).read())) for u in urls]
    for im in images: assert (im.format, im.size) == ('PNG', (32, 32)), f"expected 32×32 PNG images (the pipeline's size), got {im.format} {im.size}"
    return np.stack([np.asarray(im) for im in images])

def _keep_screenshot(new: Path):
    "Move `new` to SCREENSHOT unless the one there shows the same page (a caret or focus ring apart): no churn in git."
    import numpy as np
    from PIL import Image
    if SCREENSHOT.exists():
        a, b = (np.asarray(Image.open(p).convert('RGB')) for p in (SCREENSHOT, new))
        if a.shape == b.shape and (a != b).any(-1).mean() < 1e-3: new.unlink(); return
    os.replace(new, SCREENSHOT)

def test_app_in_browser(app_url, page):
    t0 = time.time()
    page.goto(app_url)
    page.locator('#generate').wait_for(timeout=60_000)
    assert '32×32 px' in page.locator('#description').inner_text()           # the pipeline's description
    page.locator('#prompt textarea').fill('a small blue cross at the top left')
    page.locator('#n input[type=number]').fill('4'); page.locator('#n input[type=number]').press('Tab')
    a = _generate(page, seed=0, n=4, previous=[])
    b = _generate(page, seed=1, n=4, previous=a)
    assert (_pixels(a) != _pixels(b)).any(), 'another seed must give other pixels'
    c = _generate(page, seed=0, n=4, previous=b)
    assert (_pixels(c) == _pixels(a)).all(), 'the same seed must give the same pixels'
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    tmp = SCREENSHOT.with_suffix(f'.{os.getpid()}.png')
    page.wait_for_timeout(500)                                               # the gallery's fade-in
    page.screenshot(path=str(tmp)); _keep_screenshot(tmp)                    # the chapter's picture

    page.locator('#steps input[type=number]').fill('100'); page.locator('#steps input[type=number]').press('Tab')
    page.locator('#n input[type=number]').fill('8'); page.locator('#n input[type=number]').press('Tab')
    page.locator('#generate').click()
    page.get_by_text('sampling').first.wait_for(state='visible', timeout=30_000)   # progress, fed by the sampler's callback
    progress = page.locator('#gallery').inner_text()
    page.wait_for_function("() => document.querySelectorAll('#gallery img').length === 8", timeout=60_000)
    assert '/100' in progress, progress

    page.locator('#guidance input').fill('-1'); page.locator('#guidance input').press('Tab')
    page.locator('#generate').click()
    page.get_by_text('expected >= 0').first.wait_for(state='visible', timeout=30_000)  # the pipeline's message ...
    body = page.locator('body').inner_text()
    assert 'guidance scale=-1.0' in body and 'Traceback' not in body, body[-2000:]  # ... and no stack trace
    print(f"browser test: {time.time() - t0:.1f} s in the browser")
