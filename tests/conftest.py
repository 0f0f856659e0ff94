"""Shared pytest setup: the --runslow switch for the long end-to-end runs."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = Path(
    os.environ.get("CAFFELITE_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist")
)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="run the long end-to-end tests")


def pytest_generate_tests(metafunc):
    """Every layer test (tests/layers/) runs on the CPU, in GPU mode on the fake device
    (caffelite.fake_device: device arrays that refuse numpy ones, as CuPy's do), so that
    each layer's host/device discipline is checked in CI as well as its arithmetic, and on
    CuPy where a GPU is present (marked gpu: benchmarks/gpu_check.sh runs them)."""
    if Path(str(metafunc.definition.fspath)).parent.name == "layers":
        devices = ["cpu", "fake_device", pytest.param("cupy", marks=pytest.mark.gpu)]
        metafunc.parametrize("layer_device", devices, indirect=True)


def cupy_device():
    """CuPy, or a pytest skip saying why it cannot run here."""
    try:
        import cupy
    except ImportError:
        pytest.skip("CuPy is not installed (pip install -e '.[gpu]')")
    try:
        if cupy.cuda.runtime.getDeviceCount() == 0:
            pytest.skip("CuPy finds no CUDA device")
    except Exception as exc:  # CUDARuntimeError without a driver
        pytest.skip(f"CuPy finds no CUDA device ({exc})")
    return cupy


@pytest.fixture(autouse=True)
def layer_device(request):
    kind = getattr(request, "param", "cpu")
    if kind == "cpu":
        yield None
        return
    from caffelite import backend, device_checks, fake_device

    if request.node.get_closest_marker("host_only"):
        pytest.skip("GPU mode makes this check at the next display (tests/test_gpu_mode.py)")
    device = fake_device if kind == "fake_device" else cupy_device()
    with backend.gpu_mode_on(device):
        yield device
    device_checks.raise_pending()  # a check failed on the device that the test did not expect


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="long run: pass --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"MNIST not found in {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture
def as_solver():
    """``as_solver(rank, count)``: place this process in a pretend data-parallel job (pycaffe's
    set_solver_rank / set_solver_count) for one test; restored afterwards."""
    from caffelite import parallel

    def place(rank: int, count: int) -> None:
        parallel.set_solver_rank(0)
        parallel.set_solver_count(count)
        parallel.set_solver_rank(rank)

    yield place
    parallel.set_solver_rank(0)
    parallel.set_solver_count(1)
    parallel.set_multiprocess(False)


@pytest.fixture
def load_tool():
    """Loads tools/<name>.py as a module (the scripts are not a package)."""
    import importlib.util

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"tool_{name}", REPO / "tools" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
