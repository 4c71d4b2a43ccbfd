"""Only computes the package list: everything else is declared in setup.cfg.

``agent/`` is installed as ``swarmlet_agent`` (never as a top-level ``agent``),
which ``packages = find:`` cannot express.
"""
from setuptools import find_packages, setup

packages = find_packages(include=["swarmlet", "swarmlet.*"])
packages += ["swarmlet_agent"] + ["swarmlet_agent." + p for p in find_packages("agent")]
setup(packages=packages)
