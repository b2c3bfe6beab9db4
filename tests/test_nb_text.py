"Text, shapes, text-to-image, pipeline, scaling, benchmarks, recipes — every chapter not in the Fashion-MNIST file — in order, on one worker."
import pytest
from notebooks import NOTEBOOKS, in_fashion, params, check_notebook

@pytest.mark.parametrize('nb', params([p for p in NOTEBOOKS if not in_fashion(p)]))
def test_notebook(nb, record_property): check_notebook(nb, record_property)
