"""Every loader, fed hostile mutants of a valid file, loads or raises CaffeliteError.

A short, derandomized budget per target runs here (CI); ``tools/fuzz.py`` runs
the same targets for as long as one likes. The targets are in fuzz_targets.py.
"""

import pytest

hypothesis = pytest.importorskip("hypothesis")
import fuzz_targets  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

#: Examples per target in CI: about 3 s each on a loaded 2-core machine.
EXAMPLES = {"net_prototxt": 25, "solver_prototxt": 25, "hdf5_data": 40, "image_data": 40}


@pytest.mark.parametrize("name", sorted(fuzz_targets.TARGETS))
def test_loader_answers_hostile_input_clearly(name):
    target, seed, text = fuzz_targets.TARGETS[name]
    pytest.importorskip({"hdf5_data": "h5py", "image_data": "PIL"}.get(name, "numpy"))
    outcomes = []

    @settings(
        max_examples=EXAMPLES.get(name, 60),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(fuzz_targets.mutants(seed(), text))
    def run(payload):
        outcomes.append(fuzz_targets.check_target(target, payload))

    try:
        run()
    finally:
        fuzz_targets.cleanup_scratch()
    assert len(outcomes) >= EXAMPLES.get(name, 60) // 2


def test_the_seeds_load():
    """The mutants start from files that load: a target that refused everything would
    pass the property without testing anything."""
    pytest.importorskip("h5py")
    pytest.importorskip("PIL")
    try:
        for name, (target, seed, _) in sorted(fuzz_targets.TARGETS.items()):
            assert fuzz_targets.check_target(target, seed()) == "ok", name
    finally:
        fuzz_targets.cleanup_scratch()


def test_a_violation_is_reported():
    def loader(payload):
        raise ValueError("numpy said no")

    with pytest.raises(fuzz_targets.PropertyViolation, match="ValueError: numpy said no"):
        fuzz_targets.check_target(loader, b"")


def test_lenet_training_net_with_odd_numbers(tmp_path):
    """A sample of issue 14's experiment (tools/mutate_lenet.py runs all 300): LeNet's
    training net with one field set to 0, -1, 2^20, 2^31-1, nan or inf, built and run
    forward and backward, loads or raises CaffeliteError."""
    import random

    text = fuzz_targets.lenet_train_text(fuzz_targets.make_lmdb(tmp_path))
    spans = fuzz_targets.numeric_spans(text)
    assert len(spans) == 24
    rng = random.Random(14)
    # the sizes: the values that broke it (a case that runs costs a LeNet pass)
    cases = [(i, v) for i in range(len(spans)) for v in ("1048576", "2147483647")]
    outcomes = [
        fuzz_targets.check_target(
            lambda t: fuzz_targets.run_net_text(t, tmp_path),
            fuzz_targets.set_numbers(text, {index: value}),
        )
        for index, value in rng.sample(cases, 6)
    ]
    assert outcomes.count("error") >= 2
