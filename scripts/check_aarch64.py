#!/usr/bin/env python3
"""Check that every runtime dependency installs on a 64-bit Raspberry Pi without compiling.

Reads ``[project] dependencies`` (required) and the ``evdev`` and ``gpio`` extras (optional)
from pyproject.toml, plus ``lgpio`` (installed by deploy/install-pi.sh), and asks pip to
resolve each one for aarch64 with binary wheels only, as Raspberry Pi OS would install it:

    pip install --dry-run --only-binary=:all: --platform manylinux_2_X_aarch64 ...
        --python-version 3.11 --implementation cp --abi cp311 --report ...

Nothing is installed and, thanks to PyPI's metadata files, the big wheels are not downloaded.
A requirement that fails is looked at again with sdists allowed: a pure-Python sdist
(built here to see its wheel tag) is fine, one with a C extension needs a compiler on the
Pi. Then everything is resolved together, for the gating target (Raspberry Pi OS bookworm:
CPython 3.11, glibc 2.36) and, for information, the portable manylinux2014 baseline and
Raspberry Pi OS trixie (CPython 3.13, glibc 2.41).

Exit status: 1 when a required dependency cannot be installed from wheels on bookworm (or
they do not resolve together); optional extras only warn. Needs network access to the index.

    python scripts/check_aarch64.py [--index-url URL] [--no-build-check]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL_EXTRAS = ("evdev", "gpio")
ALSO_OPTIONAL = {"lgpio": "gpio"}  # gpiozero's pin factory, pip-installed by install-pi.sh
PIP_TIMEOUT_S = 600
Report = dict[str, Any]  # pip's --report JSON (and its "install" items)


@dataclass(frozen=True)
class Target:
    name: str
    python: str  # "3.11"
    glibc: tuple[int, int]

    def pip_args(self) -> list[str]:
        nodot = self.python.replace(".", "")
        platforms = ["manylinux2014_aarch64"] + [
            f"manylinux_2_{minor}_aarch64" for minor in range(17, self.glibc[1] + 1)
        ]
        args = ["--python-version", self.python, "--implementation", "cp"]
        args += ["--abi", f"cp{nodot}"]
        for platform in platforms:
            args += ["--platform", platform]
        return args


BOOKWORM = Target("Raspberry Pi OS bookworm (CPython 3.11, glibc 2.36)", "3.11", (2, 36))
INFORMATIONAL = (
    Target("manylinux2014 baseline (CPython 3.11, glibc 2.17)", "3.11", (2, 17)),
    Target("Raspberry Pi OS trixie (CPython 3.13, glibc 2.41)", "3.13", (2, 41)),
)


@dataclass(frozen=True)
class Requirement:
    spec: str
    group: str  # "required", or the extra that brings it

    @property
    def required(self) -> bool:
        return self.group == "required"


@dataclass(frozen=True)
class Result:
    requirement: Requirement
    status: str  # OK, PURE-SDIST, NEEDS-COMPILER, MISSING
    detail: str

    @property
    def installable(self) -> bool:
        return self.status in ("OK", "PURE-SDIST")


def requirements(pyproject: Path) -> list[Requirement]:
    project = tomllib.loads(pyproject.read_text())["project"]
    found = [Requirement(spec, "required") for spec in project["dependencies"]]
    for extra in OPTIONAL_EXTRAS:
        found += [Requirement(s, extra) for s in project["optional-dependencies"][extra]]
    return found + [Requirement(spec, why) for spec, why in ALSO_OPTIONAL.items()]


class Pip:
    """pip against one index only: the machine's pip.conf and find-links are left out."""

    def __init__(self, index_url: str, workdir: Path) -> None:
        self.index_url = index_url
        self.workdir = workdir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
        self.env["PIP_CONFIG_FILE"] = os.devnull
        if "PIP_CERT" in os.environ:
            self.env["PIP_CERT"] = os.environ["PIP_CERT"]
        self.env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "pip", *args, "--index-url", self.index_url]
        return subprocess.run(
            command,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_S,
            check=False,
        )

    def resolve(self, specs: list[str], target: Target, *, binary_only: bool = True) -> Report:
        """pip's install report for ``specs`` on ``target``; raises RuntimeError on failure."""
        report = self.workdir / "report.json"
        report.unlink(missing_ok=True)
        args = ["install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report)]
        args += ["--target", str(self.workdir / "target"), *target.pip_args()]
        args += ["--only-binary=:all:"] if binary_only else ["--no-deps"]
        result = self.run(*args, *specs)
        if result.returncode != 0:
            raise RuntimeError(first_error(result.stderr))
        parsed: Report = json.loads(report.read_text())
        return parsed


def first_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("ERROR:")]
    lines = errors or stderr.strip().splitlines() or ["pip failed without a message"]
    return lines[-1].removeprefix("ERROR: ").strip()


def file_name(item: Report) -> str:
    return str(item["download_info"]["url"]).rsplit("/", 1)[-1]


def check_one(pip: Pip, requirement: Requirement, build_check: bool) -> Result:
    try:
        report = pip.resolve([requirement.spec], BOOKWORM)
    except RuntimeError as e:
        return classify_failure(pip, requirement, str(e), build_check)
    items = report["install"]
    own = [i for i in items if canonical(i["metadata"]["name"]) == canonical(requirement.spec)]
    return Result(requirement, "OK", ", ".join(file_name(i) for i in own or items[:1]))


def canonical(spec: str) -> str:
    """The normalized project name of a requirement (``Foo_Bar>=1`` -> ``foo-bar``)."""
    name = re.split(r"[<>=!~;\[ ]", spec, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def classify_failure(pip: Pip, requirement: Requirement, error: str, build_check: bool) -> Result:
    """No wheel: is there an sdist (of the requirement or the dependency that failed)?"""
    match = re.search(r"No matching distribution found for (\S+)", error)
    culprit = match.group(1) if match else requirement.spec
    try:
        report = pip.resolve([culprit], BOOKWORM, binary_only=False)
    except RuntimeError:
        return Result(requirement, "MISSING", error)
    sdist = report["install"][0]
    where = "" if canonical(culprit) == canonical(requirement.spec) else f" (dependency {culprit})"
    if not build_check:
        return Result(requirement, "NEEDS-COMPILER", f"{file_name(sdist)}{where}: sdist only")
    built = build_wheel(pip, sdist["download_info"]["url"])
    if built.endswith("-none-any.whl"):
        return Result(requirement, "PURE-SDIST", f"{file_name(sdist)}{where} -> {built}")
    return Result(
        requirement,
        "NEEDS-COMPILER",
        f"{file_name(sdist)}{where}: no aarch64 wheel; the sdist builds {built} "
        "(on the Pi: apt install gcc libc6-dev python3-dev)",
    )


def build_wheel(pip: Pip, url: str) -> str:
    """Build an sdist here to learn its wheel tag: ``*-none-any`` means pure Python."""
    out = pip.workdir / "built"
    out.mkdir(exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    result = pip.run("wheel", "--no-deps", "--quiet", "-w", str(out), url)
    if result.returncode != 0:
        return f"a wheel that failed to build here: {first_error(result.stderr)}"
    return next(out.iterdir()).name


def check_together(pip: Pip, specs: list[str], target: Target) -> tuple[bool, str]:
    try:
        report = pip.resolve(specs, target)
    except RuntimeError as e:
        return False, str(e)
    items = report["install"]
    sdists = [file_name(i) for i in items if not file_name(i).endswith(".whl")]
    if sdists:
        return False, f"sdists in the resolution: {', '.join(sdists)}"
    return True, f"{len(items)} packages, all wheels"


def print_table(results: list[Result]) -> None:
    width = max(len(r.requirement.spec) for r in results) + 2
    print(f"{'requirement':<{width}}{'group':<10}{'result':<16}wheel file / error")
    for r in results:
        group = r.requirement.group if r.requirement.required else f"{r.requirement.group}*"
        print(f"{r.requirement.spec:<{width}}{group:<10}{r.status:<16}{r.detail}")
    print("(* optional: a failure there is a warning)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index-url", default="https://pypi.org/simple")
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument(
        "--no-build-check",
        action="store_true",
        help="do not build sdists to tell pure-Python ones from compiled ones",
    )
    args = parser.parse_args(argv)
    reqs = requirements(args.pyproject)
    print(f"aarch64 install check: {BOOKWORM.name}, binary wheels only, from {args.index_url}\n")
    with tempfile.TemporaryDirectory(prefix="check-aarch64-") as tmp:
        pip = Pip(args.index_url, Path(tmp))
        results = [check_one(pip, r, not args.no_build_check) for r in reqs]
        print_table(results)
        together = [r.requirement.spec for r in results if r.status == "OK"]
        left_out = [r.requirement.spec for r in results if r.status != "OK"]
        print(f"\nall together ({len(together)} requirements with wheels", end="")
        print(f"; left out: {', '.join(left_out)})" if left_out else ")")
        gating_ok, detail = check_together(pip, together, BOOKWORM)
        print(f"  {BOOKWORM.name}: {'OK' if gating_ok else 'FAIL'}: {detail}")
        for target in INFORMATIONAL:
            ok, detail = check_together(pip, together, target)
            print(f"  {target.name}: {'OK' if ok else 'WARN'}: {detail} (informational)")
    failed = [r for r in results if r.requirement.required and not r.installable]
    warned = [r for r in results if not r.requirement.required and not r.installable]
    pure = [r for r in results if r.status == "PURE-SDIST"]
    print()
    for r in pure:
        print(f"note: {r.requirement.spec} has no wheel, but its sdist is pure Python")
    for r in warned:
        print(f"warning: optional {r.requirement.spec} ({r.requirement.group}): {r.status}")
    for r in failed:
        print(f"FAIL: required {r.requirement.spec}: {r.status}: {r.detail}")
    if not gating_ok:
        print("FAIL: the requirements do not resolve together on bookworm")
    ok = not failed and gating_ok
    print(f"\nresult: {'OK' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
