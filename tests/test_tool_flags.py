"""tool_flags: gflags' spellings for the ports of Caffe's tools."""

from __future__ import annotations

import pytest

from caffelite.tool_flags import CaffeFlags


def flags():
    parsed = CaffeFlags("tool", "%(prog)s [FLAGS] A B [C]", "test")
    parsed.add("gray", False, "a boolean")
    parsed.add("resize_width", 0, "an integer")
    parsed.add("backend", "lmdb", "a string")
    return parsed


@pytest.mark.parametrize(
    "argv, gray, width, backend",
    [
        (["a", "b"], False, 0, "lmdb"),
        (["-gray", "a", "b"], True, 0, "lmdb"),
        (["a", "--gray=false", "b"], False, 0, "lmdb"),
        (["a", "b", "-nogray", "-resize_width", "7"], False, 7, "lmdb"),
        (["--resize_width=9", "a", "-backend=leveldb", "b", "--gray=1"], True, 9, "leveldb"),
    ],
)
def test_spellings(argv, gray, width, backend):
    args = flags().parse(argv, ["first", "second", "third?"])
    assert (args.first, args.second, args.third) == ("a", "b", None)
    assert (args.gray, args.resize_width, args.backend) == (gray, width, backend)


def test_errors(capsys):
    for argv in (["a"], ["a", "b", "c", "d"], ["-colour", "a", "b"], ["--gray=maybe", "a", "b"]):
        with pytest.raises(SystemExit):
            flags().parse(argv, ["first", "second", "third?"])
    assert "unknown flag '-colour'" in capsys.readouterr().err
