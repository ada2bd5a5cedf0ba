"""Further zoo recipes, one module per chapter that needs them (found by :mod:`kdtutor.zoo`).

Each module defines ``RECIPES``, a dict of :class:`~kdtutor.zoo.ZooRecipe` by name, whose
``folder`` is a subfolder of the zoo with its own ``manifest.json``: a teacher added or
retrained here changes no file that an older chapter's notebook read.

>>> from kdtutor.zoo import get_recipe
>>> get_recipe("shapes_cnn_w16").folder
'shapes'
"""
