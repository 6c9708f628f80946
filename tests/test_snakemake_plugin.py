"""The project's Snakemake plugin (src/snakemake_logger_plugin_diffrepro): which config files a command
line names, and the compact logger's lines. (The refusals themselves: test_bad_input_table.py.)"""
from __future__ import annotations

import logging

import pytest
from snakemake_interface_logger_plugins.registry import LoggerPluginRegistry

import snakemake_logger_plugin_diffrepro as plugin


@pytest.mark.parametrize("argv, files", [
    (["-n", "--configfile", "a.yaml"], ["a.yaml"]),
    (["--configfile", "a.yaml", "b.yaml", "--cores", "2"], ["a.yaml", "b.yaml"]),
    (["--configfiles=c.yaml", "-n"], ["c.yaml"]),
    (["--cores", "all", "results/metrics.csv"], []),
    (["--config", "seed=5"], []),
])
def test_configfiles_named_on_the_command_line(argv, files):
    assert plugin.configfiles_in(argv) == files


def test_check_names_the_first_bad_file(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text((__import__("pathlib").Path(__file__).parent / "params-tiny.yaml").read_text())
    assert plugin.check_configfiles(["--configfile", str(good)]) is None
    error = plugin.check_configfiles(["--configfile", str(good), str(tmp_path / "gone.yaml")])
    assert "gone.yaml" in error and "does not exist" in error


def test_snakemake_registers_it_as_a_logger():
    assert "diffrepro" in LoggerPluginRegistry().plugins


def _record(event, **fields):
    record = logging.LogRecord("snakemake", logging.INFO, __file__, 0, "msg", None, None)
    record.__dict__.update(event=event, **fields)
    return record


def test_the_compact_logger_prints_one_line_per_event():
    handler = plugin.LogHandler(common_settings=None, settings=plugin.LogHandlerSettings())
    assert handler.format(_record("job_info", rule_name="train", wildcards={"run": "a"})) == "start train [run=a]"
    assert handler.format(_record("job_error", rule_name="nll", wildcards={"run": "a"}, log=["logs/nll/a.log"])) \
        == "FAILED nll [run=a]: see logs/nll/a.log"
    assert handler.format(_record("progress", done=3, total=50)) == "3 of 50 jobs done"
    assert handler.format(_record("shellcmd", cmd="diffrepro train ...")) is None
