"""Readers of datasets on disk (folder layouts, DAVIS, GTA5 / Cityscapes, NYU, RGB-D, videos) and TFDS."""
