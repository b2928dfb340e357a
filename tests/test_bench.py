"""The benchmark suite's --smoke mode runs end to end through `mu-llama bench` and writes well-formed results.
Timings are never asserted: only structure and invariants that hold whatever the machine load."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mu_llama.cli import bench as bench_cli
from mu_llama.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"meta", "audio", "encoder", "captioning", "llm", "memory", "profile", "quality", "targets"}
STAGES = {"audio", "encoder", "adapter", "prefill", "decode", "tokenizer", "other"}


def test_cli_finds_suite_and_forwards_options(tmp_path):
    assert bench_cli.find_suite() == ROOT / "bench" / "suite.py"
    with pytest.raises(ConfigError, match="source checkout"):
        bench_cli.find_suite(str(tmp_path))
    parser = argparse.ArgumentParser()
    bench_cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["bench", "--smoke", "--modes", "none", "--batch-sizes", "1,2", "--runs", "2",
                              "--quality", "0"])
    argv = bench_cli.suite_argv(args)
    assert argv[argv.index("--modes") + 1] == "none" and argv[argv.index("--batch-sizes") + 1] == "1,2"
    assert argv[argv.index("--quality") + 1] == "0"
    assert "--smoke" in argv and "--model" not in argv  # unset options are left to the suite's defaults


@pytest.mark.slow
def test_smoke_suite_writes_valid_results(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MU_LLAMA_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "mu_llama", "bench", "--smoke", "--modes", "none,int8-dynamic",
           "--batch-sizes", "1,2", "--clips", "2", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((out / "suite_smoke.json").read_text())
    assert KEYS <= set(res)
    assert res["meta"]["smoke"] is True and res["meta"]["model"] == "random:tiny"
    cap = res["captioning"]
    assert cap["reference"]["ratio_to_reference"] == 1.0
    assert set(cap["modes"]) == {"none", "int8-dynamic"}
    for per_bs in cap["modes"].values():
        assert set(per_bs) == {"1", "2"}
        for s in per_bs.values():
            assert s["clips_per_s"] > 0 and 0 <= s["decode_wait_share"] <= 1
    assert {"reference", "none@bs1", "none@bs2"} <= set(res["llm"])
    for key in ("reference", "none@bs1", "int8-dynamic@bs1"):
        assert res["memory"][key]["peak_rss_mb"] > 0, res["memory"][key]
    assert res["quality"]["status"] == "off"  # --smoke leaves the quality stage off
    for per_bs in cap["modes"].values():
        for s in per_bs.values():
            assert 0 <= s["decode_wait_after_first_batch_share"] <= s["decode_wait_share"]
    prof = res["profile"]
    assert set(prof["seconds"]) == STAGES
    assert sum(prof["share"].values()) == pytest.approx(1.0, abs=0.01)
    assert prof["counts"]["prefill_steps"] >= 1 and prof["counts"]["decode_steps"] >= 1
    assert (out / prof["ops_table"]).is_file()
    assert res["encoder"]["tiny"]["ours_rtf"] > 0
    assert {"throughput_ok", "decode_wait_ok", "max_decode_wait_share"} <= set(res["targets"])
    md = (out / "suite_smoke.md").read_text()
    assert "reference (MU-LLaMA style)" in md and "| ours int8-dynamic | 2 |" in md
