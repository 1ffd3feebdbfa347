"""Point the ROS 2 Jazzy wheels' exported CMake files at this venv's Python and numpy include dirs.

The wheels are built on a manylinux host whose include directories (/opt/python/cp311-cp311/...) are
baked into their ``*Export.cmake`` files; without this rewrite ``rosidl_generate_interfaces`` fails to
configure. Idempotent: files already pointing here are left alone.

Usage: python scripts/patch_wheel_cmake.py VENV
"""
import re
import sys
import sysconfig
from pathlib import Path

import numpy


def main(venv: str) -> int:
    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    pattern_np = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/(?:_core|core)/include")
    pattern_py = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
    changed = 0
    for path in Path(venv, "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = pattern_py.sub(py_inc, pattern_np.sub(np_inc, text))
        if new != text:
            path.write_text(new)
            changed += 1
    print(f"patch_wheel_cmake: {changed} CMake files now use {py_inc} and {np_inc}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: patch_wheel_cmake.py VENV")
    sys.exit(main(sys.argv[1]))
