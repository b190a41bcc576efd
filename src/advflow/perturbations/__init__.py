"""Seed 001's perturbation statistics and average-adversarial grid (rules/perturbations.smk)."""
