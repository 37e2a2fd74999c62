"""Build of the one native extension (the feature party's CKKS histogram arithmetic,
services/engine/gbdt/_kernel.c; docs/adr/0012-vertical-gbdt.md, fifth pass). Everything else
about the package is in pyproject.toml.

``SPLICE_MARCH`` (default ``native``) is the ``-march`` the kernel is compiled for: ``native``
uses what the installing machine has (AVX-512 butterflies where it has them); an image built on
one host for others sets a portable baseline such as ``x86-64-v2`` (infra/Dockerfile)."""

import os

from setuptools import Extension, setup

MARCH = os.environ.get("SPLICE_MARCH", "native")

setup(
    ext_modules=[
        Extension(
            "services.engine.gbdt._kernel",
            sources=["services/engine/gbdt/_kernel.c"],
            extra_compile_args=["-O3", f"-march={MARCH}", "-funroll-loops"],
        )
    ]
)
