"""A throwaway certificate authority for tests: the project's own local CA
(:mod:`asterfleet.etcdtools.pki`) under the names the tests use."""

from __future__ import annotations

from pathlib import Path

from asterfleet.etcdtools.pki import CertPair as Pair
from asterfleet.etcdtools.pki import LocalCa

__all__ = ["Pair", "TestCa"]


class TestCa(LocalCa):
    """A CA that signs server and client certificates into ``directory``."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "asterfleet test CA") -> None:
        super().__init__(directory, name)
