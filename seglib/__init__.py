"""seglib: the small shared library of the semantic segmentation workbook.

The notebooks in ``notebooks/`` teach each idea by hand first, then import the tested version
from here: datasets and masks (:mod:`seglib.data`, :mod:`seglib.masks`), augmentation and caching
(:mod:`seglib.transforms`, :mod:`seglib.cache`) and models (:mod:`seglib.models`).
"""

__version__ = "0.1.0"
