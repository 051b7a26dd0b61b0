"""Datasets (embedded digits, synthetic sets, standard TFDS sets) and DCT transforms."""

from ._batches import iterate_batches as iterate_batches
from ._corruptions import CORRUPTIONS as CORRUPTIONS
from ._corruptions import SEVERITIES as SEVERITIES
from ._corruptions import corrupt as corrupt
from ._corruptions import jpeg_table as jpeg_table
from ._dct import dct2 as dct2
from ._dct import dct_flip as dct_flip
from ._dct import dct_matrix as dct_matrix
from ._dct import high_pass as high_pass
from ._dct import idct2 as idct2
from ._dct import low_pass as low_pass
from ._digits import Digits as Digits
from ._load import DATASETS as DATASETS
from ._load import ArrayDataset as ArrayDataset
from ._load import DatasetNotFoundError as DatasetNotFoundError
from ._load import default_data_dir as default_data_dir
from ._load import load_dataset as load_dataset
from ._load import tfds_data_dir as tfds_data_dir
from ._resize import resize_images as resize_images
from ._synthetic import concentric_spheres as concentric_spheres
from ._synthetic import dct_band_dataset as dct_band_dataset
from ._synthetic import dct_band_direction as dct_band_direction
from ._synthetic import dct_direction as dct_direction
from ._synthetic import directional_dataset as directional_dataset
from ._synthetic import fourier_direction as fourier_direction
