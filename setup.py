"""The one compiled part of perflab: perflab._lineindex (see perflab/_lineindex.c).

It is optional: where no C compiler is found the build goes on without it and the reader
uses its numpy path (``perflab.readers.COMPILED_INDEX`` tells which one runs).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("perflab._lineindex", ["perflab/_lineindex.c"], optional=True)])
