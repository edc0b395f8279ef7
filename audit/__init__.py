"""medaudit: audit a medical-imaging classifier for shortcut learning.

The package follows one direction of flow: source -> cohort -> plan -> runs -> analysis -> outputs.
"""

__version__ = "0.3.0"
