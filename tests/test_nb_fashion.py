"The Fashion-MNIST chain (and the short chapters before it), in order, on one worker."
import pytest
from notebooks import NOTEBOOKS, in_fashion, params, check_notebook

def test_chapters_exist():
    assert len([p for p in NOTEBOOKS if p.name[:2].isdigit()]) >= 3, NOTEBOOKS

@pytest.mark.parametrize('nb', params([p for p in NOTEBOOKS if in_fashion(p)]))
def test_notebook(nb, record_property): check_notebook(nb, record_property)
