"""Tasks: a data generator, its rulebook and its judge, usable by the data layer, the judges and the demo.

A task is the lowest layer that knows what a good answer is; it imports nothing from the rest of
``orpo`` so that ``orpo.data``, ``orpo.evaluation`` and ``orpo.lab.demo`` can all depend on it.
"""
