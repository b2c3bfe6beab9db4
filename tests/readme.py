"""README.md is generated from nbs/index.ipynb (the course's front page) without Quarto.

`python tests/readme.py --write` regenerates it; `render()` is what the test compares against.
"""
import sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
HEADER = "<!-- Generated from nbs/index.ipynb by `./course.sh readme`: edit the notebook, not this file. -->\n\n"

def render() -> str:
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith(('#| hide', '#|hide'))]
    for i, c in enumerate(nb.cells):            # `#| echo: false`: the README shows what the cell displayed, not its code
        if c.cell_type == 'code' and c.source.lstrip().startswith(('#| echo: false', '#|echo: false')):
            shown = [o['data']['text/markdown'] for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
            nb.cells[i] = nbformat.v4.new_markdown_cell('\n\n'.join(shown))
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + body.strip() + '\n'

if __name__ == '__main__':
    if sys.argv[1:] == ['--write']:
        (ROOT/'README.md').write_text(render(), encoding='utf-8'); print('wrote README.md')
    else: sys.stdout.write(render())
