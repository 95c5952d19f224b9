"""Build slmbook's sdist and wheel and check them before a release.

From the repository root::

    python scripts/check_dist.py              # build from the committed tree (HEAD), then check
    python scripts/check_dist.py dist/*       # check files built already (the release workflow)
    python scripts/check_dist.py --print-version

Building: the committed tree (``git archive HEAD``) is unpacked into a
temporary folder and built there with ``python -m build`` (so the checkout
gets no ``build/`` or ``dist/`` folder, and what is checked is exactly what
is committed). ``--no-isolation`` (the default here) builds with the
environment's setuptools, without the network; ``--isolation`` lets ``build``
install its build requirements in a fresh environment, as a release does.

Checks, each failing with a message that says what is missing:

* ``twine check`` passes on both files (metadata and README render);
* the wheel and the sdist carry every file under ``slmbook/assets/`` of the
  committed tree (the pretrained checkpoint, and the reader once it exists);
* the version in the file names equals ``slmbook.__version__`` of the tree
  (``slmbook/_version.py``)
  and the newest entry of ``CHANGELOG.md``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def committed_assets(root: Path = ROOT) -> list[str]:
    """Paths (``slmbook/assets/...``) of the assets in the committed tree."""
    out = subprocess.run(["git", "ls-files", "slmbook/assets"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    return sorted(line for line in out.splitlines() if line)


def package_version(root: Path = ROOT) -> str:
    """``slmbook.__version__`` as written in ``slmbook/_version.py``, its one place."""
    for name in ("_version.py", "__init__.py"):
        path = root / "slmbook" / name
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        if match := re.search(r'^__version__ = "([^"]+)"', text, re.M):
            return match.group(1)
    raise ValueError('slmbook/_version.py has no __version__ = "..." line')


def changelog_version(root: Path = ROOT) -> str:
    """The newest released version in ``CHANGELOG.md`` (its first ``## [X.Y.Z]`` heading)."""
    text = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    match = re.search(r"^## \[(\d[^\]]*)\]", text, re.M)
    if not match:
        raise ValueError("CHANGELOG.md has no '## [X.Y.Z] - date' entry")
    return match.group(1)


def wheel_members(path: Path) -> set[str]:
    """Names inside a wheel."""
    with zipfile.ZipFile(path) as zf:
        return set(zf.namelist())


def sdist_members(path: Path) -> set[str]:
    """Names inside an sdist, without its top folder (``slmbook-X.Y.Z/``)."""
    with tarfile.open(path) as tf:
        return {name.split("/", 1)[1] for name in tf.getnames() if "/" in name}


def problems(wheel: Path, sdist: Path, assets: list[str], version: str) -> list[str]:
    """Everything wrong with ``wheel`` and ``sdist``; an empty list when they are fit to release."""
    found = []
    if not assets:
        found.append("no committed files under slmbook/assets/")
    for path, members in ((wheel, wheel_members(wheel)), (sdist, sdist_members(sdist))):
        found += [f"{path.name}: lacks {asset}" for asset in assets if asset not in members]
    for path in (wheel, sdist):
        if f"slmbook-{version}" not in path.name:
            found.append(f"{path.name}: expected version {version} in the file name")
    return found


def build(src: Path, outdir: Path, *, isolation: bool) -> tuple[Path, Path]:
    """Build the sdist and the wheel of the tree at ``src`` into ``outdir``."""
    args = [sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(outdir)]
    if not isolation:
        args.append("--no-isolation")
    subprocess.run([*args, str(src)], check=True, capture_output=True, text=True)
    return next(outdir.glob("slmbook-*.whl")), next(outdir.glob("slmbook-*.tar.gz"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="a built wheel and sdist")
    parser.add_argument("--isolation", action="store_true",
                        help="let python -m build install its requirements (network)")
    parser.add_argument("--print-version", action="store_true",
                        help="print slmbook.__version__ and exit")
    args = parser.parse_args(argv)
    version = package_version()
    if args.print_version:
        print(version)
        return 0
    if changelog_version() != version:
        print(f"CHANGELOG.md's newest entry is {changelog_version()}, slmbook.__version__ "
              f"is {version}: add a CHANGELOG entry for {version}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        if args.files:
            wheel = next(p for p in args.files if p.suffix == ".whl")
            sdist = next(p for p in args.files if p.name.endswith(".tar.gz"))
        else:
            src = Path(tmp) / "src"
            src.mkdir()
            archive = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
            wheel, sdist = build(src, Path(tmp) / "dist", isolation=args.isolation)
        twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict",
                                str(wheel), str(sdist)], capture_output=True, text=True)
        found = problems(wheel, sdist, committed_assets(), version)
        if twine.returncode:
            found.append(f"twine check failed:\n{twine.stdout}{twine.stderr}")
        for problem in found:
            print(problem, file=sys.stderr)
        if not found:
            print(f"{wheel.name} and {sdist.name}: twine check passed, "
                  f"{len(committed_assets())} assets present, version {version}")
        return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
