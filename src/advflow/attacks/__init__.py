"""The attack stage (rules/attacks.smk): the attacks on the models' [-1, 1] input space (docs/method.md,
"Attacks"), the input profiles they start from, the adversarial sets they write, and the random-perturbation
controls beside them.

This file imports nothing, so that a module that only reads sets (:mod:`advflow.attacks.checks`) does not
carry the attacks into its rule's code digest.
"""
