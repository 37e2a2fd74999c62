"""Build of the one native extension (the feature party's CKKS histogram arithmetic,
services/engine/gbdt/_kernel.c; docs/adr/0012-vertical-gbdt.md, fifth pass). Everything else
about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "services.engine.gbdt._kernel",
            sources=["services/engine/gbdt/_kernel.c"],
            extra_compile_args=["-O3", "-march=native", "-funroll-loops"],
        )
    ]
)
