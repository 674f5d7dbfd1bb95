"""ceuspipe: CEUS exam videos to key frames, datasets, CEUSegNet and perfusion curves.

Library code logs through ``logging.getLogger("ceuspipe")`` and never prints;
only :mod:`ceuspipe.cli` talks to the terminal.
"""

__version__ = "0.1.0"
