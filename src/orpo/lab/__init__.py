"""Measured experiments, each run in its own process: ``orpo compare``, ``orpo demo``, ``orpo bench``.

harness    process memory (and the shared launcher and step timer of a measured run)
compare    one recipe trained once per method and grid value
demo       the code-review case study from an imperfect base, over seeds, with intervals
bench      speed and memory side by side with TRL
"""
