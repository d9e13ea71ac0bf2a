"""Native extensions only; all other metadata is in setup.cfg.

The Cython sources live in native/ and build into the package as frontend.kv.blockhash,
frontend.kv.kvindex, frontend.transport.end_of_turn and frontend.postprocess.plain_tokens (see native/README.md). `pip install -e .` builds them in place.
"""

from Cython.Build import cythonize
from setuptools import Extension, setup


def _extension(name: str, package: str = "frontend.kv") -> Extension:
    return Extension(
        f"{package}.{name}",
        [f"native/{name}.pyx"],
        include_dirs=["native", "native/third_party/xxhash"],
        define_macros=[("XXH_INLINE_ALL", None)],
        extra_compile_args=["-O3"],
    )


setup(
    ext_modules=cythonize(
        [_extension("blockhash"), _extension("kvindex"), _extension("end_of_turn", "frontend.transport"),
         _extension("plain_tokens", "frontend.postprocess"), _extension("delivery", "frontend.gateway")],
        include_path=["native", "."],
        compiler_directives={"language_level": 3},
    )
)
