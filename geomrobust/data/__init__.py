"""Datasets (embedded digits, synthetic sets, standard TFDS sets) and DCT transforms."""

from ._dct import dct2 as dct2
from ._dct import dct_flip as dct_flip
from ._dct import dct_matrix as dct_matrix
from ._dct import high_pass as high_pass
from ._dct import idct2 as idct2
from ._dct import low_pass as low_pass
