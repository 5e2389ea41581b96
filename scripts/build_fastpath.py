"""Build the media service's compiled forwarding path in place: services/media/fastpath.c ->
services/media/_fastpath.<python's extension suffix>, next to the Python it serves.

`make install` runs it (so does the media image's build stage, see Dockerfile): gcc and Python's
headers, nothing else (the SRTP library is pylibsrtp's own, reached at run time; see fastpath.c).
setuptools does the compiler invocation (flags, suffix) as for any CPython extension; the temporary
objects go to a throw-away directory, only the shared object stays.

    python scripts/build_fastpath.py [--check]   # --check: warnings are errors (the tests use it)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "services/media/fastpath.c"


def build(check: bool = False) -> None:
    flags = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
             "-fno-strict-aliasing", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"]
    if check:
        flags.append("-Werror")
    with tempfile.TemporaryDirectory(prefix="svpl-fastpath-") as temp:
        setup(name="svpl-media-fastpath", script_name="build_fastpath.py",
              ext_modules=[Extension("services.media._fastpath", [SOURCE], extra_compile_args=flags)],
              script_args=["-q", "build_ext", "--inplace", "--build-temp", temp, "--build-lib", temp])


if __name__ == "__main__":
    import os

    os.chdir(ROOT)
    build("--check" in sys.argv[1:])
