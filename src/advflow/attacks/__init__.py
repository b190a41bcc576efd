"""Adversarial attacks on the models' [-1, 1] input space (SPEC, "Attacks").

Each attack keeps its inputs in the box (-1, 1) and returns a result object with the adversarial
images and, per input, whether it succeeded.
"""

from advflow.attacks.jsma import JSMAResult, jsma, jsma_least_perturbation, max_iterations

__all__ = ["JSMAResult", "jsma", "jsma_least_perturbation", "max_iterations"]
