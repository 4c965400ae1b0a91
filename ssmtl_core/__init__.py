"""SSMTL study core: the open implementation of Georgescu et al., CVPR 2021."""

__version__ = "0.1.0"
