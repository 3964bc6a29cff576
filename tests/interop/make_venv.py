"""Create the tests' virtual environment, with nothing but python3.

Usage: python3 tests/interop/make_venv.py DIR REQUIREMENTS...

Makes DIR a virtual environment holding every REQUIREMENTS file (installed
together, so pip resolves them as one set). Works where Debian
and Ubuntu ship python3 without ensurepip (no python3-venv package): the
environment is then made without pip, and pip is bootstrapped from its own
wheel, fetched from PyPI. Never installs into the system Python (PEP 668).
"""

import json
import os
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
import venv


def bin_python(directory):
    scripts = "Scripts" if os.name == "nt" else "bin"
    return os.path.join(directory, scripts, "python")


def bootstrap_pip(python):
    """Install pip into a pip-less environment from pip's wheel on PyPI.

    A pip wheel is importable as it is, so `python pip.whl/pip install
    pip.whl` installs pip with pip itself (pip's documented bootstrap).
    """
    index = "https://pypi.org/pypi/pip/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        release = json.load(r)
    wheel = next(
        f for f in release["urls"] if f["packagetype"] == "bdist_wheel"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, wheel["filename"])
        url = urllib.parse.urljoin(index, wheel["url"])
        with urllib.request.urlopen(url, timeout=120) as r, open(path, "wb") as f:
            f.write(r.read())
        subprocess.run(
            [python, os.path.join(path, "pip"), "install", "-q", path], check=True
        )


def main():
    directory, requirements = sys.argv[1], sys.argv[2:]
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(directory)
    except (subprocess.CalledProcessError, OSError):
        # No ensurepip (Debian/Ubuntu without python3-venv).
        venv.EnvBuilder(with_pip=False, clear=True).create(directory)
    python = bin_python(directory)
    if subprocess.run([python, "-m", "pip", "--version"], capture_output=True).returncode != 0:
        bootstrap_pip(python)
    files = [arg for path in requirements for arg in ("-r", path)]
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *files],
        check=True,
    )


if __name__ == "__main__":
    main()
