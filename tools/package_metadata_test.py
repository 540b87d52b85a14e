#!/usr/bin/env python3
"""//tools:package_metadata_test: the server and the three SDKs carry one version and one license.

VERSION (the root of the repository) is where the version is set; tools/set_version.sh writes it
and every copy below. This test fails when any copy disagrees:

- `eventstore --version` (compiled in from VERSION by //server:version_c);
- sdks/ts/package.json and the root entries of its package-lock.json;
- sdks/python/pyproject.toml and eventstore_client.__version__ (src/eventstore_client/_common.py);
- sdks/rust/Cargo.toml and the crate's own entry in its Cargo.lock;
- CHANGELOG.md, which must have a section for it.

The license is Apache-2.0: LICENSE at the root holds the license's text, each SDK directory holds
a byte-for-byte copy (npm, flit and cargo take license files only from the package's own
directory), and each manifest names the SPDX id (pyproject.toml also lists the file).

Usage (Bazel passes the files): package_metadata_test.py SERVER_BINARY ROOT_FILE...
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

SPDX = "Apache-2.0"
failures: list[str] = []


def check(ok: bool, what: str) -> None:
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def main() -> int:
    server = sys.argv[1]
    # Bazel spells files of the root package ./NAME.
    files = {p.removeprefix("./"): Path(p) for p in sys.argv[2:]}

    def read(rel: str) -> str:
        return files[rel].read_text(encoding="utf-8")

    version = read("VERSION").strip()
    check(read("VERSION") == version + "\n", "VERSION is one line")
    check(re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", version) is not None,
          f"VERSION {version!r} is MAJOR.MINOR.PATCH[-PRERELEASE]")

    out = subprocess.run([server, "--version"], capture_output=True, text=True, timeout=30)
    check(out.returncode == 0 and out.stdout == f"eventstore {version}\n",
          f"eventstore --version prints 'eventstore {version}' (got {out.stdout.strip()!r})")

    pkg = json.loads(read("sdks/ts/package.json"))
    lock = json.loads(read("sdks/ts/package-lock.json"))
    check(pkg["version"] == version, f"sdks/ts/package.json version {pkg['version']}")
    check(lock["version"] == version and lock["packages"][""]["version"] == version,
          "sdks/ts/package-lock.json root version")
    check(pkg["license"] == SPDX and lock["packages"][""].get("license") == SPDX,
          f"sdks/ts/package.json license {pkg['license']}")
    ranges = {**pkg.get("dependencies", {}), **pkg.get("devDependencies", {})}
    check(all(r.startswith("^") for r in ranges.values()),
          f"sdks/ts/package.json gives caret ranges ({ranges}); exact versions are the lock's")

    project = tomllib.loads(read("sdks/python/pyproject.toml"))["project"]
    check(project["version"] == version, f"sdks/python/pyproject.toml version {project['version']}")
    check(project.get("license") == SPDX and project.get("license-files") == ["LICENSE"],
          "sdks/python/pyproject.toml license = Apache-2.0, license-files = [LICENSE]")
    common = re.search(r'^VERSION = "([^"]*)"$', read("sdks/python/src/eventstore_client/_common.py"), re.M)
    check(common is not None and common.group(1) == version,
          f"eventstore_client.__version__ {common.group(1) if common else None}")

    cargo = tomllib.loads(read("sdks/rust/Cargo.toml"))["package"]
    check(cargo["version"] == version, f"sdks/rust/Cargo.toml version {cargo['version']}")
    check(cargo.get("license") == SPDX and "/LICENSE" in cargo.get("include", []),
          "sdks/rust/Cargo.toml license = Apache-2.0, LICENSE included")
    locked = [p["version"] for p in tomllib.loads(read("sdks/rust/Cargo.lock"))["package"]
              if p["name"] == "eventstore-client"]
    check(locked == [version], f"sdks/rust/Cargo.lock eventstore-client {locked}")

    check(re.search(rf"^## \[{re.escape(version)}\]", read("CHANGELOG.md"), re.M) is not None,
          f"CHANGELOG.md has a section '## [{version}]'")
    check("lib.strings.fileContents ./VERSION" in read("flake.nix"), "flake.nix takes its version from VERSION")

    license_text = read("LICENSE")
    check("Apache License" in license_text and "Version 2.0, January 2004" in license_text
          and "END OF TERMS AND CONDITIONS" in license_text, "LICENSE is the Apache License 2.0")
    for sdk in ("ts", "python", "rust"):
        check(read(f"sdks/{sdk}/LICENSE") == license_text, f"sdks/{sdk}/LICENSE is a copy of LICENSE")

    print(f"package_metadata_test: {len(failures)} failed" if failures else "package_metadata_test: all passed")
    if failures:
        print("(tools/set_version.sh VERSION writes the version everywhere; cp LICENSE sdks/*/)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
