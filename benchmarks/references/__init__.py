"""Official PyTorch train steps (SEAM, ADVENT, MAST) timed by `train_step.py --reference`; imported from the checkout at run time, nothing vendored."""
