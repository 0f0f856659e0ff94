"""pycaffe's caffe.init_log / caffe.log: glog-format lines on stderr, by severity."""

import logging
import re

import pytest

import caffelite as caffe
from caffelite.errors import CaffeliteError


@pytest.fixture
def caffe_logger():
    logger = logging.getLogger("caffelite")
    level, handlers = logger.level, list(logger.handlers)
    yield logger
    logger.setLevel(level)
    logger.handlers[:] = handlers


def test_log_writes_a_glog_info_line(caffe_logger, capsys):
    caffe.init_log()
    caffe.log("hello from pycaffe")
    err = capsys.readouterr().err
    assert re.search(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ test_logging_setup\.py:\d+\] "
                     r"hello from pycaffe$", err, re.M), err  # fmt: skip


def test_init_log_level_filters_by_glog_severity(caffe_logger, capsys):
    caffe.init_log(1)  # WARNING and above
    caffe.log("info is dropped")
    logging.getLogger("caffelite").warning("warnings pass")
    err = capsys.readouterr().err
    assert "info is dropped" not in err and re.search(r"^W\d{4} .*warnings pass$", err, re.M)
    with pytest.raises(CaffeliteError, match="0 \\(INFO\\) to 3 \\(FATAL\\), got 7"):
        caffe.init_log(7)
