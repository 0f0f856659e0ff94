"""The process-wide random generator (Caffe's ``Caffe::RNG``).

Fillers, Dropout, data shuffling and random crops all draw from it, so a solver's
``random_seed`` makes a whole run reproducible.
"""

from __future__ import annotations

import numpy

_generator = numpy.random.default_rng()


def get_rng() -> numpy.random.Generator:
    return _generator


def set_random_seed(seed: int) -> None:
    """Reseed everything that draws random numbers (pycaffe's ``caffe.set_random_seed``)."""
    global _generator
    _generator = numpy.random.default_rng(seed)


def get_state() -> dict:
    """The generator's exact position (JSON-serialisable), for a resumable snapshot."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    """Put the generator back where ``get_state`` found it."""
    _generator.bit_generator.state = state
