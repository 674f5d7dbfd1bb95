"""Screen skins of the phantom: plug-ins, one file per family of screens.

- :mod:`~ceuspipe.synth.skins.base`: what a skin is (:class:`Skin`, :class:`Screen`)
  and the registry :data:`SKINS`;
- :mod:`~ceuspipe.synth.skins.generic`: the original screen and its one-feature skins
  (``default``, ``sector``, ``touching``, ``separator``, ``dark-start``, ``fullhd``,
  ``marks``, ``frozen-bmode``, ``stacked``);
- :mod:`~ceuspipe.synth.skins.logiq`: the GE LOGIQ dual display (``logiq``).

Importing this package registers the built-in skins. A new one is registered in code
(``SKINS.register("name", Skin(features, screen))``) or by an entry point in the group
``ceuspipe.phantom_skins``; a skin registered in code exists only in the process that
registered it, so generate with ``--jobs 1`` or register it through an entry point.
"""

from ceuspipe.synth.skins import generic, logiq  # noqa: F401  (they register the built-in skins)
from ceuspipe.synth.skins.base import (DEFAULT, DEFAULT_SKIN, ENTRY_POINT_GROUP, SKINS, Screen, ScreenGeometry,
                                       ScreenSkin, Skin)
from ceuspipe.synth.skins.generic import GenericScreen

__all__ = ["DEFAULT", "DEFAULT_SKIN", "ENTRY_POINT_GROUP", "SKINS", "GenericScreen", "Screen", "ScreenGeometry",
           "ScreenSkin", "Skin"]
