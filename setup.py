"""`pip install --no-build-isolation .`: builds the extension with this repository's CMake (in
$MOESIM_BUILD_DIR, default build/; configured only if it is not yet) and installs the moesim
package with it. Needs setuptools and wheel for the interpreter (Debian: python3-setuptools
python3-wheel); --no-build-isolation because nothing may be downloaded. `cmake --install BUILD
--component python` is the other way (docs/python.md)."""
import glob
import os
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
# setuptools' own files (egg-info, build/lib...) under build/setuptools, not in the source tree.
SETUPTOOLS_DIR = os.path.join("build", "setuptools")
os.makedirs(os.path.join(ROOT, SETUPTOOLS_DIR), exist_ok=True)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build = os.path.abspath(os.environ.get("MOESIM_BUILD_DIR", os.path.join(ROOT, "build")))
        if not os.path.isfile(os.path.join(build, "CMakeCache.txt")):
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                                   "-DMOESIM_PYTHON=ON"])
        subprocess.check_call(["cmake", "--build", build, "--target", "_moesim", "-j", str(os.cpu_count() or 1)])
        built = glob.glob(os.path.join(build, "python", "_moesim*.so"))
        if len(built) != 1:
            raise RuntimeError(f"expected one _moesim*.so in {build}/python, found {built}")
        dest = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copyfile(built[0], dest)


setup(
    name="moesim",
    version="0.1.0",
    description="Mixture-of-Experts training simulator: expert placement policies on GPU clusters",
    packages=["moesim"],
    ext_modules=[Extension("moesim._moesim", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    options={"build": {"build_base": SETUPTOOLS_DIR}, "egg_info": {"egg_base": SETUPTOOLS_DIR}},
    python_requires=">=3.9",
)
