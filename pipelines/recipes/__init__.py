"""The compile-recipe registry: one `<name>.yaml` entry per recipe (read as data by reconciler/catalog/recipes.py)
and the conversion modules they name (`python -m <module> export|compile`, run by the Neuron workflows).

A platform team adds a recipe here, in its repository: an entry naming the accelerator kind, the `architecture:`
values of model.yaml it accepts, its module and the files of its compile cache key; nothing in reconciler/.
"""
