"""The compiled part of asterfleet: the capture collector's fast path.

Everything else is in pyproject.toml. The extension is optional: without a
C compiler (or Python's headers) the install still succeeds, and the
collector runs its pure-Python parser (it logs which one it runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "asterfleet.capture._hepfast",
            ["src/asterfleet/capture/_hepfast.pyx"],
            # No debug info: a smaller module, and the same bytes from any
            # build directory (the image's wheel is reproducible).
            extra_compile_args=["-g0"],
            optional=True,
        )
    ]
)
