"""Every measured number in a chapter's prose is printed by a cell above it.

The stored outputs come from one in-order run (`./course.sh run`); prose written after an earlier run drifts
from them. This check reads each notebook's markdown cells and, for every number that looks measured — one with
a decimal point, a percent sign, a thousands separator, or four or more digits — requires that some code cell
*above it* printed that value (at the precision the prose uses; a printed fraction 0.7975 also matches
"79.75 %"). The convention for numbers that are not measurements:

- constants, formulas and external references go inside `$...$` math or `code spans` (e.g. `diffusers 0.42.1`,
  $\\sigma_{\\max} = 157$), and are not checked;
- years (1900-2099, as in citations) and link targets are not checked.

The front page's table of results is not prose: it is rendered from `nbs/results.json` (see `ldm_course.core.record`)
and checked by `test_front_page_results_are_the_recorded_ones`.
"""
import json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
NUM = re.compile(r'(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+\.\d+|\d+)(\s?%)?(?![\w])')

def _outputs_text(cell) -> str:
    out = []
    for o in cell.get('outputs', []):
        if o.get('output_type') == 'stream': out.append(''.join(o['text']))
        elif 'data' in o:
            for kind in ('text/plain', 'text/markdown'):
                if kind in o['data']: out.append(''.join(o['data'][kind]))
    return '\n'.join(out)

def _prose(md: str) -> str:
    "The markdown with the exempt parts blanked out."
    s = re.sub(r'\$\$.*?\$\$', ' ', md, flags=re.S)
    s = re.sub(r'\$[^$\n]+\$', ' ', s)
    s = re.sub(r'```.*?```', ' ', s, flags=re.S)
    s = re.sub(r'`[^`\n]+`', ' ', s)
    s = re.sub(r'\]\([^)]*\)', ']', s)                           # link targets
    s = re.sub(r'<[^>\n]+>', ' ', s)                             # html tags (image sources)
    s = re.sub(r'https?://\S+', ' ', s)
    s = re.sub(r'\b(19|20)\d\d[a-z]?\b', ' ', s)                  # years
    return s

def _measured(token: str, pct) -> bool: return bool(pct) or '.' in token or ',' in token or len(token) >= 4

def _values(text: str) -> list[float]: return [float(m.group(1).replace(',', '')) for m in NUM.finditer(text)]

def _printed(token: str, values) -> bool:
    x = float(token.replace(',', '')); d = len(token.split('.')[1]) if '.' in token else 0
    tol = 0.5 * 10 ** -d + 1e-9
    return any(abs(v - x) <= tol or abs(100 * v - x) <= tol for v in values)

def unprinted_numbers(nb: dict) -> list[tuple[int, str]]:
    "(cell index, number) for each measured-looking number in markdown that no code cell above printed."
    seen, bad = [], []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] == 'code': seen += _values(_outputs_text(c)); continue
        if c['cell_type'] != 'markdown': continue
        for m in NUM.finditer(_prose(''.join(c['source']))):
            if _measured(m.group(1), m.group(2)) and not _printed(m.group(1), seen): bad.append((i, m.group(0).strip()))
    return bad

NOTEBOOKS = sorted(NBS.glob('*.ipynb'))

@pytest.mark.parametrize('path', NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_prose_numbers_are_printed_above(path):
    bad = unprinted_numbers(json.loads(path.read_text(encoding='utf-8')))
    assert not bad, (f"{path.name}: numbers in markdown that no cell above printed (print them, or mark a constant / "
                     f"external reference with $...$ or `...`): " + ', '.join(f'[{i}] {n}' for i, n in bad))

def test_the_number_check_can_fail():
    "A planted stale figure is caught; the same figure printed above, or marked as a constant, is not."
    out = {'cell_type': 'code', 'source': 'print(acc)', 'outputs': [{'output_type': 'stream', 'name': 'stdout', 'text': ['acc 0.7975\n']}]}
    prose = lambda s: {'cell_type': 'markdown', 'source': s}
    assert unprinted_numbers({'cells': [out, prose('It reached 79.75 % and 0.80.')]}) == []
    assert unprinted_numbers({'cells': [out, prose('It reached 81.2 %.')]}) == [(1, '81.2 %')]
    assert unprinted_numbers({'cells': [prose('It reached 79.75 %.'), out]}) == [(0, '79.75 %')]        # printed below: too late
    assert unprinted_numbers({'cells': [prose('SD uses $0.18215$ and `diffusers 0.42.1` (Rombach et al. 2022), 3 seeds.')]}) == []

def test_front_page_results_are_the_recorded_ones():
    "The front page's results table is what `render_results` makes of nbs/results.json and nbs/results_table.md now."
    from ldm_course.core import render_results
    nb = json.loads((NBS/'index.ipynb').read_text(encoding='utf-8'))
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code' and 'render_results' in ''.join(c['source'])]
    assert len(cells) == 1, 'index.ipynb: expected one cell that renders the results table'
    stored = _outputs_text(cells[0])
    want = render_results((NBS/'results_table.md').read_text(encoding='utf-8'), json.loads((NBS/'results.json').read_text()))
    assert want.strip() in stored, 'the stored front-page table differs from nbs/results.json: re-run index.ipynb (./course.sh run) and ./course.sh readme'
