"""Unsupervised domain adaptation with entropy (ADVENT MinEnt / AdvEnt, ESL pseudo labels, self-training)."""
