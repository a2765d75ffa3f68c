"""`cmake --install BUILD --component python` gives a package that works away from the source tree."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import BUILD, SMALL


def test_cmake_install_component_python(tmp_path):
    cmake = shutil.which("cmake")
    if cmake is None or not os.path.isfile(os.path.join(BUILD, "CMakeCache.txt")):
        pytest.skip("needs cmake and a configured build folder")
    subprocess.run([cmake, "--install", BUILD, "--component", "python", "--prefix", str(tmp_path / "prefix")],
                   check=True, capture_output=True)
    site = tmp_path / "prefix" / "lib" / "python3" / "dist-packages"
    assert (site / "moesim" / "__init__.py").is_file()
    assert len(glob.glob(str(site / "moesim" / "_moesim*.so"))) == 1
    scenario = dict(SMALL, run={"max_iterations": 2})
    code = ("import json, moesim; r = moesim.compare(json.loads(input())); "
            "print(moesim.__file__); print(moesim._core.__file__); print(len(r['results']))")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MOESIM_BUILD_DIR")}
    env["PYTHONPATH"] = str(site)
    p = subprocess.run([sys.executable, "-c", code], input=json.dumps(scenario), cwd=tmp_path, env=env,
                       capture_output=True, text=True, check=True)
    package, extension, policies = p.stdout.split()
    assert package.startswith(str(site)) and extension.startswith(str(site))
    assert policies == "3"
