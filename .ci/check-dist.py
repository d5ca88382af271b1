"""Check the built sdist and wheel hold what they should: tox -e pkg runs it after ``python -m build``.

Usage: python .ci/check-dist.py DIST_DIR (one .tar.gz and one .whl in it).

The sdist carries the license and everything the tests need to run from it (every file under
tests/ of this checkout, pyproject.toml's pytest settings); the wheel carries the package,
py.typed and the license, and no tests. Its metadata names the license as an SPDX expression, and
its Python classifiers are exactly the Pythons tox.ini tests ("supported means tested").
"""

from __future__ import annotations

import configparser
import email
import re
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NEVER = (".ci/", ".tox/", ".git/", "benchmarks/", "interop/", "__pycache__/", ".pyc")


def main(dist: Path) -> int:
    [sdist] = dist.glob("*.tar.gz")
    [wheel] = dist.glob("*.whl")
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz")
        in_sdist = {name.removeprefix(f"{top}/") for name in tar.getnames()}
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = set(whl.namelist())
    tests = {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "tests").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    problems = [f"sdist lacks {name}" for name in sorted(tests) if name not in in_sdist]
    problems += [
        f"sdist lacks {name}"
        for name in ("LICENSE", "README.md", "pyproject.toml", "setup.cfg", "requests_tokenrefresh/py.typed")
        if name not in in_sdist
    ]
    problems += [f"sdist holds {name}" for name in sorted(in_sdist) if any(part in name for part in NEVER)]
    dist_info = next(name.split("/")[0] for name in in_wheel if name.split("/")[0].endswith(".dist-info"))
    problems += [
        f"wheel lacks {name}"
        for name in (
            "requests_tokenrefresh/__init__.py",
            "requests_tokenrefresh/py.typed",
            f"{dist_info}/licenses/LICENSE",
        )
        if name not in in_wheel
    ]
    problems += [f"wheel holds {name}" for name in sorted(in_wheel) if name.startswith("tests/")]
    with zipfile.ZipFile(wheel) as whl:
        metadata = email.message_from_bytes(whl.read(f"{dist_info}/METADATA"))
    if metadata.get("License-Expression") != "MIT":
        problems.append(f"wheel metadata: License-Expression is {metadata.get('License-Expression')!r}, not 'MIT'")
    if not metadata.get_all("Requires-Dist"):
        problems.append("wheel metadata: no Requires-Dist")
    classified = {
        match[1]
        for value in metadata.get_all("Classifier", [])
        if (match := re.fullmatch(r"Programming Language :: Python :: (3\.\d+)", value))
    }
    tox = configparser.ConfigParser()
    tox.read(ROOT / "tox.ini")
    tested = {
        f"3.{match[1]}" for env in tox["tox"]["envlist"].split(",") if (match := re.fullmatch(r"py3(\d+)", env.strip()))
    }
    if classified != tested:
        problems.append(f"Python classifiers {sorted(classified)} are not the Pythons tox tests {sorted(tested)}")
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{sdist.name}: {len(in_sdist)} entries; {wheel.name}: {len(in_wheel)} entries; problems: {len(problems)}")
    return 1 if problems else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
