"""Build the optional C extension; everything else is in pyproject.toml.

tapejit.frontend._eager records scalar operations of the eager API in C. When it cannot be
compiled (no C compiler, no Python headers) the install still succeeds and tapejit uses
its Python recording path, which computes the same tapes ~3x slower per operation.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("tapejit.frontend._eager", ["tapejit/frontend/_eager.c"], depends=["tapejit/frontend/_eager_values.h"],
                             optional=True)])
