"""caffelite.as_caffe: unchanged ``import caffe`` programs run against caffelite, and a
real Caffe is never shadowed silently."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import caffelite
from caffelite import as_caffe
from caffelite.errors import CaffeliteError

REPO = Path(__file__).resolve().parents[1]
CLIENT = REPO / "tests" / "scripts" / "pycaffe_client.py"


def run_as_caffe(*args, cwd, pythonpath=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, pythonpath)])
    return subprocess.run(
        [sys.executable, "-m", "caffelite.as_caffe", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def fake_caffe(root: Path) -> Path:
    """A stand-in for a real pycaffe installation: a ``caffe`` package on the path."""
    package = root / "caffe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("REAL = True\n")
    return package


def test_pycaffe_client_script_runs_unchanged(tmp_path):
    result = run_as_caffe(CLIENT, tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = dict(line.split("=", 1) for line in result.stdout.split() if "=" in line)
    assert lines["saved_layers"] == "conv,ip"
    assert lines["prob_sum"] == "1.00000"
    assert lines["classifier_matches_net"] == "True"
    assert lines["drawn_blobs"] == "5"  # data, conv, pool, ip, prob blobs
    assert lines["caffe_module"] == "caffelite" and lines["io_module"] == "caffelite.io"


def test_modules_are_caffelites_own_objects(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import sys, caffe, caffe.draw, caffe.io, caffe.net_spec, caffe.pycaffe\n"
        "from caffe.proto import caffe_pb2\n"
        "from caffe.io import Transformer\n"
        "import caffelite, caffelite.draw, caffelite.net_spec, caffelite.pycaffe\n"
        "from caffelite.proto import caffe_pb2 as lite_pb2\n"
        "assert caffe is caffelite and caffe.draw is caffelite.draw\n"
        "assert caffe.io is caffelite.io and Transformer is caffelite.io.Transformer\n"
        "assert caffe.net_spec is caffelite.net_spec and caffe.pycaffe is caffelite.pycaffe\n"
        "import caffe.proto.caffe_pb2 as pb2\nassert caffe_pb2 is lite_pb2 and pb2 is lite_pb2\n"
        "assert caffe.io.__spec__.name == 'caffelite.io'\n"
        "print('argv', sys.argv[1:])\n"
    )
    result = run_as_caffe(probe, "--flag", "x", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "argv ['--flag', 'x']"


def test_dash_m_runs_a_module_with_its_arguments(tmp_path):
    (tmp_path / "mymod.py").write_text("import sys, caffe\nprint(caffe.__name__, sys.argv[1:])\n")
    result = run_as_caffe("-m", "mymod", "a", "-b", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "caffelite ['a', '-b']"


def test_a_missing_caffe_module_is_named(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import caffe._caffe\n")
    result = run_as_caffe(probe, cwd=tmp_path)
    assert result.returncode == 1
    assert "No module named 'caffe._caffe'" in result.stderr
    assert "caffelite, standing in for caffe, has no module 'caffelite._caffe'" in result.stderr


@pytest.fixture
def clean_alias(monkeypatch):
    """In-process runs of main()/install(): sys.path and the alias restored afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    as_caffe.uninstall()
    yield
    as_caffe.uninstall()


def test_a_real_caffe_on_the_path_is_refused(tmp_path, clean_alias, capsys):
    real = fake_caffe(tmp_path / "site")
    sys.path.insert(0, str(tmp_path / "site"))
    probe = tmp_path / "probe.py"
    probe.write_text("raise SystemExit('the program must not run')\n")
    assert as_caffe.main([str(probe)]) == 2
    err = capsys.readouterr().err
    assert f"a real Caffe is importable as 'caffe' (from {real / '__init__.py'})" in err
    assert "--shadow-real-caffe" in err
    assert not as_caffe.installed()


def test_a_script_beside_a_caffe_package_is_refused(tmp_path, clean_alias, capsys):
    fake_caffe(tmp_path)  # e.g. a script in caffe/python, next to the caffe package
    probe = tmp_path / "classify.py"
    probe.write_text("raise SystemExit('the program must not run')\n")
    assert as_caffe.main([str(probe)]) == 2
    assert "a real Caffe is importable" in capsys.readouterr().err


def test_shadowing_on_purpose_warns_and_uses_caffelite(tmp_path):
    fake_caffe(tmp_path / "site")
    probe = tmp_path / "probe.py"
    probe.write_text("import caffe\nprint(caffe.__name__, hasattr(caffe, 'REAL'))\n")
    result = run_as_caffe(
        "--shadow-real-caffe", probe, cwd=tmp_path, pythonpath=[tmp_path / "site"]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "caffelite False"
    assert "RuntimeWarning" in result.stderr and "shadowing it on purpose" in result.stderr


def test_usage_without_a_program(capsys):
    assert as_caffe.main([]) == 2
    assert "usage: caffelite-as-caffe" in capsys.readouterr().err
    assert as_caffe.main(["--help"]) == 0
    assert "--shadow-real-caffe" in capsys.readouterr().out


def test_install_in_process_and_uninstall(clean_alias, monkeypatch):
    monkeypatch.setattr(as_caffe, "find_real_caffe", lambda: None)
    as_caffe.install()
    as_caffe.install()  # twice is harmless
    import caffe.io  # noqa: PLC0415

    assert caffe.io is caffelite.io and as_caffe.installed()
    assert caffelite.io.__spec__.name == "caffelite.io"
    as_caffe.uninstall()
    assert not as_caffe.installed() and "caffe" not in sys.modules


def test_install_refuses_a_real_caffe_already_imported(clean_alias, monkeypatch):
    real = type(sys)("caffe")
    real.__file__ = "/opt/caffe/python/caffe/__init__.py"
    monkeypatch.setitem(sys.modules, "caffe", real)
    with pytest.raises(CaffeliteError, match="from /opt/caffe/python/caffe/__init__.py"):
        as_caffe.install()
    assert not as_caffe.installed()
