"""The one compiled part of perflab: perflab.jsonl._lineindex (see perflab/jsonl/_lineindex.c).

It is optional: where no C compiler is found the build goes on without it and the reader
uses its numpy path (``perflab.jsonl.readers.COMPILED_INDEX`` tells which one runs).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("perflab.jsonl._lineindex", ["perflab/jsonl/_lineindex.c"], optional=True)])
