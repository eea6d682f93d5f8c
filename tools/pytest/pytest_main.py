"""Entry point of every `pytest_test`: runs pytest on the files Bazel passes as arguments."""

import os
import sys

import pytest


def main() -> int:
    """Run pytest quietly, with a JUnit report where Bazel asks for one."""
    args = ["-p", "no:cacheprovider", "-q", *sys.argv[1:]]
    xml = os.environ.get("XML_OUTPUT_FILE")
    if xml:
        args.append(f"--junitxml={xml}")
    return pytest.main(args)


if __name__ == "__main__":
    sys.exit(main())
