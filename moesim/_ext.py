"""Finds the compiled extension `_moesim`: beside this package when installed, else in a CMake
build folder of the source tree ($MOESIM_BUILD_DIR/python, then <repository>/build/python)."""
import importlib.machinery
import importlib.util
import os
import sys


def _candidates():
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = [here]
    build = os.environ.get("MOESIM_BUILD_DIR")
    if build:
        dirs.append(os.path.join(os.path.abspath(build), "python"))
    dirs.append(os.path.join(os.path.dirname(here), "build", "python"))
    return dirs


def _load():
    dirs = _candidates()
    for d in dirs:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(d, "_moesim" + suffix)
            if os.path.isfile(path):
                spec = importlib.util.spec_from_file_location("moesim._moesim", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules["moesim._moesim"] = module
                spec.loader.exec_module(module)
                return module
    # Built for another interpreter? Say so rather than "not found".
    others = sorted(f for d in dirs if os.path.isdir(d) for f in os.listdir(d) if f.startswith("_moesim."))
    hint = (f" (found {', '.join(others)}, built for another Python than {sys.version.split()[0]})"
            if others else "")
    raise ImportError(
        "moesim: the compiled extension _moesim was not found in " + ", ".join(dirs) + hint +
        "; build it with `bash scripts/setup.sh` (or `cmake --build build --target _moesim`), "
        "or set MOESIM_BUILD_DIR to the CMake build folder")


core = _load()
