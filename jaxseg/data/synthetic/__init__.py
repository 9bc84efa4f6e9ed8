"""Synthetic datasets generated from (seed, index), no files: 2-D object scenes and videos, indoor RGB-D rooms."""
