"""`make lock`'s own rules (requirements/lock.py): which wheels' hashes go into the lock, and its format.

The index is not asked here: `deploy/image-ci.sh` checks, with the network, that `make lock` on the
committed versions writes the committed lock again, and the image's build installs it with
--require-hashes.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest
from packaging.utils import parse_wheel_filename

from tests.deploy.artifacts import LOCK, REPO


def load_lock_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("requirements_lock", REPO / "requirements" / "lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("requirements_lock", module)
    spec.loader.exec_module(module)
    return module


lock = load_lock_module()


def wheel(filename: str, digest: str = "a" * 64, *, yanked: bool = False) -> dict[str, object]:
    return {"filename": filename, "hashes": {"sha256": digest}, "yanked": yanked}


@pytest.mark.parametrize(
    ("filename", "arches"),
    [
        ("aiohttp-3.14.5-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", {"x86_64"}),
        ("aiohttp-3.14.5-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64.whl", {"aarch64"}),
        ("attrs-26.1.0-py3-none-any.whl", {"x86_64", "aarch64"}),
        ("pydantic_core-2.50.5-cp39-abi3-manylinux_2_17_x86_64.whl", {"x86_64"}),
        ("aiohttp-3.14.5-cp312-cp312-manylinux_2_17_x86_64.whl", set()),  # another Python
        ("aiohttp-3.14.5-cp311-cp311-musllinux_1_2_x86_64.whl", set()),  # Alpine's libc, not Debian's
        ("aiohttp-3.14.5-cp311-cp311-macosx_11_0_arm64.whl", set()),
        ("aiohttp-3.14.5-cp311-cp311-win_amd64.whl", set()),
        ("mod-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", set()),  # abi3 from 3.12 on: not for 3.11
    ],
)
def test_only_wheels_a_cpython_311_image_on_linux_can_install_are_hashed(
    filename: str, arches: set[str]
) -> None:
    """The image runs CPython 3.11 on Debian (glibc) for amd64 and arm64: those wheels and no others."""
    assert lock.image_can_install(parse_wheel_filename(filename)[3]) == arches


def test_every_image_platform_must_have_a_wheel() -> None:
    """A version without an arm64 wheel would fail the image's build there: `make lock` says so instead."""
    files = [wheel("fast-1.0-cp311-cp311-manylinux_2_17_x86_64.whl"), wheel("fast-1.0.tar.gz")]
    with pytest.raises(SystemExit, match=r"fast==1.0 has no CPython 3.11 wheel for Linux aarch64"):
        lock.wheel_hashes("fast", "1.0", files)


def test_hashes_are_those_of_the_pinned_version_sorted_without_sdists_or_yanked_files() -> None:
    files = [
        wheel("demo-1.0-py3-none-any.whl", "c" * 64),
        wheel("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "b" * 64),
        wheel("demo-1.1-py3-none-any.whl", "d" * 64),  # another version
        wheel("demo-1.0-cp311-cp311-manylinux_2_17_aarch64.whl", "e" * 64, yanked=True),
        {"filename": "demo-1.0.tar.gz", "hashes": {"sha256": "f" * 64}},
    ]
    assert lock.wheel_hashes("demo", "1.0", files) == ["b" * 64, "c" * 64]


def test_the_committed_lock_is_in_the_format_make_lock_writes() -> None:
    """Rendering the committed lock's own pins and hashes gives the committed file back, byte for byte."""
    text = LOCK.read_text()
    pins = lock.pins_of(text)
    hashes: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        if match := lock._PIN.match(line):
            current = match["name"]
            hashes[current] = []
        elif line.strip().startswith("--hash=sha256:"):
            hashes[current].append(line.strip().removeprefix("--hash=sha256:").removesuffix(" \\"))
    assert pins and set(hashes) == {name for name, _ in pins}
    assert lock.render(pins, hashes) == text
