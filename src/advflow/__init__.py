"""advflow: how information flows through a CNN's feature maps for normal and adversarial inputs.

Modules follow the method's nouns: ``data``, ``models``, ``training``, ``trimming``, ``zoo``
(the trained model zoo), ``config``. Importing the package itself loads nothing heavy.
"""

__version__ = "0.1.0"
