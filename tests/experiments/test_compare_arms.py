"""Comparison arms (experiments.arms) and parallel runs (--jobs, experiments.jobs / compare_run): arm specifications
checked through the option table and refused with the arm named; a comparison of several arms and seeds from one
command, run two at a time in child processes, whose metrics equal those of the same runs made in this process;
--continue refusing a changed arm; failing and stopped children."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from training_fixtures import TINY_UNCOND, make_zip, subprocess_env

from stylegan_rlo.cli.compare_objectives import main as cli_main
from stylegan_rlo.experiments.arms import (PER_ARM_OPTIONS, ArmError, changed_arms, check_arms, load_arms_file,
                                           make_arm, parse_arm)
from stylegan_rlo.experiments.compare import compare_objectives
from stylegan_rlo.experiments.compare_run import RunFailed, RunJob, run_in_children, run_one
from stylegan_rlo.experiments.jobs import ProcessPool, threads_per_job
from stylegan_rlo.training.config import setup_training_options
from stylegan_rlo.training.options import TRAINING_OPTIONS

# The four arms: the two objectives, logistic with LeCam and rooted k=8 with DiffAugment (which needs ADA off).
FOUR_ARMS = ["logistic:loss=logistic", "rlo8:loss=rooted,k=8", "logistic+lecam:loss=logistic,lecam=0.3",
             "rlo8+da:loss=rooted,k=8,aug=noaug,diffaugment=color,translation,cutout"]
SHARED = ["--batch", "4", "--workers", "0", "--gamma", "0.5", "--kimg", "0.008", "--snap-kimg", "0.008",
          "--metrics", "kid50k_full", "--metrics-num", "4", "--grid", "2x2", "--device", "cpu"]


# ---- arm specifications --------------------------------------------------------------------------------------------

def test_arm_specifications_are_checked_through_the_option_table():
    arm = parse_arm("rlo2+g10:loss=rooted,k=2,gamma=10,freezed=1,aug=fixed,p=0.2")
    assert arm.label == "rlo2+g10"
    assert arm.options == dict(loss="rooted", k=2.0, gamma=10.0, freezed=1, aug="fixed", p=0.2)
    assert all(isinstance(v, float) for v in (arm.options["k"], arm.options["gamma"]))
    assert isinstance(arm.options["freezed"], int)
    assert arm.description == "loss=rooted, k=2, gamma=10, freezed=1, aug=fixed, p=0.2"
    assert parse_arm("plain:").options == dict(loss="rooted", k=8.0)  # the table's default objective
    assert parse_arm("lg:loss=logistic, glr=0.01").options == dict(loss="logistic", glr=0.01)
    # A part without '=' continues the previous value: values may hold commas; names may be written as flags.
    assert parse_arm("x:augpipe=bgc,gamma=2").options["augpipe"] == "bgc"
    assert parse_arm("x:--gamma=2,loss=logistic").options == dict(loss="logistic", gamma=2.0)
    assert parse_arm("x:aug=noaug,diffaugment=color,translation,loss=logistic").options["diffaugment"] == \
        "color,translation"
    # The same arm from a file (JSON numbers and strings alike) and from the command line.
    assert make_arm("a", {"loss": "rooted", "k": 8, "gamma": "1"}) == parse_arm("a:loss=rooted,k=8,gamma=1")
    per_arm = {o.name for o in TRAINING_OPTIONS if o.per_arm}
    assert set(PER_ARM_OPTIONS) == per_arm and {"loss", "k", "gamma", "glr", "dlr", "freezed"} <= per_arm
    assert not per_arm & {"data", "resume", "kimg", "seed", "device", "batch", "metrics"}


@pytest.mark.parametrize("spec, message", [
    ("rlo8", "expected LABEL:NAME=VALUE"),
    ("a b:loss=rooted", "arm label 'a b'"),
    ("x/y:loss=rooted", "arm label 'x/y'"),
    ("-x:loss=rooted", "arm label '-x'"),
    ("r:loss=rooted,bogus=1", "arm r: unknown option 'bogus'"),
    ("r:data=other.zip", "arm r: --data is shared by all runs"),
    ("r:resume=other.pkl", "arm r: --resume is shared by all runs"),
    ("r:kimg=10", "arm r: --kimg is shared by all runs"),
    ("r:seed=3", "arm r: --seed is shared by all runs"),
    ("lg:loss=logistic,k=8", "arm lg: k=8 only applies to the rooted objective"),
    ("r:loss=rooted,k=0", "arm r: "),
    ("r:gamma=-1", "arm r: --gamma must be a finite number >= 0"),
    ("r:freezed=1.5", "arm r: --freezed must be an integer"),
    ("r:loss=nosuch", "arm r: --loss must be one of"),
    ("r:gamma=1,gamma=2", "arm r: gamma is given twice"),
    ("r:foo,gamma=1", "arm r: 'foo' is not NAME=VALUE"),
    ("r:gamma=1,foo", "arm r: --gamma must be a number, got '1,foo'"),  # a comma continues the value
])
def test_bad_arm_specifications_name_the_arm(spec, message):
    with pytest.raises(ArmError) as e:
        parse_arm(spec)
    assert message in str(e.value)


def test_duplicate_labels_and_arms_files(tmp_path):
    with pytest.raises(ArmError, match="arm label rlo8 is used twice"):
        check_arms([parse_arm("rlo8:k=8"), parse_arm("rlo8:k=4")])
    with pytest.raises(ArmError, match="RLO8 is used twice .as rlo8"):
        check_arms([parse_arm("rlo8:k=8"), parse_arm("RLO8:k=4")])
    with pytest.raises(ArmError, match="no arms given"):
        check_arms([])
    (tmp_path / "arms.json").write_text(json.dumps({"logistic": {"loss": "logistic"},
                                                    "rlo8": {"loss": "rooted", "k": 8, "gamma": 1}}))
    (tmp_path / "arms.toml").write_text('[logistic]\nloss = "logistic"\n\n["rlo8"]\nloss = "rooted"\nk = 8\n'
                                        'gamma = 1.0\n')
    expected = [parse_arm("logistic:loss=logistic"), parse_arm("rlo8:loss=rooted,k=8,gamma=1")]
    assert load_arms_file(str(tmp_path / "arms.json")) == load_arms_file(str(tmp_path / "arms.toml")) == expected
    (tmp_path / "bad.json").write_text(json.dumps({"g": {"loss": "logistic", "resume": "x.pkl"}}))
    with pytest.raises(ArmError, match="arm g: --resume is shared"):
        load_arms_file(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ArmError, match="expected a table of arms"):
        load_arms_file(str(tmp_path / "list.json"))
    with pytest.raises(ArmError, match=r"expected a \.json or \.toml file"):
        load_arms_file(str(tmp_path / "arms.yaml"))
    old = [a.to_json() for a in expected]
    assert changed_arms(old, expected) == []
    assert changed_arms(old, [expected[0], parse_arm("rlo8:loss=rooted,k=4,gamma=1")]) == \
        ["arm rlo8 had loss=rooted, k=8, gamma=1, now loss=rooted, k=4, gamma=1"]
    assert changed_arms(old, expected[::-1]) == ["the arms' order changed (was logistic, rlo8; the first is the "
                                                 "baseline)"]


@pytest.mark.parametrize("args, message", [
    (["--arm", "r:kimg=2"], "arm r: --kimg is shared by all runs"),
    (["--arm", "lg:loss=logistic,k=2"], "arm lg: k=2 only applies to the rooted objective"),
    (["--arm", "a:loss=logistic", "--arm", "a:loss=rooted"], "arm label a is used twice"),
    (["--arm", "a:loss=logistic", "--objectives", "logistic"], "--objectives is a shorthand for arms"),
    (["--arm", "r:loss=rooted,glr=0"], "arm r: --glr must be a finite number > 0"),
    (["--arms", "/nonexistent/arms.json"], "--arms /nonexistent/arms.json"),
    (["--jobs", "0"], "--jobs"),
])
def test_cli_refuses_bad_arms_before_anything_runs(tmp_path, args, message):
    data = make_zip(tmp_path / "d.zip", num=4)
    result = CliRunner().invoke(cli_main, ["--network", str(TINY_UNCOND), "--data", data, "--ref", data, "--kimg",
                                           "4", "--outdir", str(tmp_path / "out"), "--device", "cpu"] + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not os.path.exists(tmp_path / "out")


# ---- arms and seeds from one command, two runs at a time -------------------------------------------------------------

def _values(run: dict) -> list:
    return [(p["kimg"], p.get("snapshot"), p.get("kid50k_full")) for p in run["points"]]


@pytest.fixture(scope="module")
def parallel_comparison(tmp_path_factory, weights):
    """Two arms (one from an arms file, one from --arm, overriding the shared --gamma) x seeds 0, 1 from one
    command, run in child processes two at a time."""
    tmp = tmp_path_factory.mktemp("arms")
    data = make_zip(tmp / "train.zip", num=8, seed=0)
    ref = make_zip(tmp / "ref.zip", num=6, seed=1)
    (tmp / "arms.json").write_text(json.dumps({"logistic": {"loss": "logistic"}}))
    outdir = str(tmp / "out")
    args = ["--network", str(TINY_UNCOND), "--data", data, "--ref", ref, "--outdir", outdir, "--seeds", "0,1",
            "--inception-weights", weights, "--arms", str(tmp / "arms.json"),
            "--arm", "rlo8+g1:loss=rooted,k=8,gamma=1"]
    result = CliRunner().invoke(cli_main, args + SHARED + ["--jobs", "2"])
    assert result.exit_code == 0, result.output
    with open(os.path.join(outdir, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    return dict(args=args, data=data, ref=ref, outdir=outdir, summary=summary, output=result.output)


def test_arms_and_seeds_from_one_command_in_parallel(parallel_comparison, weights, one_thread, table_rows):
    summary, outdir = parallel_comparison["summary"], parallel_comparison["outdir"]
    runs = summary["runs"]
    assert [(r["arm"], r["seed"]) for r in runs] == [("logistic", 0), ("logistic", 1), ("rlo8+g1", 0), ("rlo8+g1", 1)]
    assert summary["config"]["arms"] == [dict(label="logistic", options=dict(loss="logistic")),
                                         dict(label="rlo8+g1", options=dict(loss="rooted", k=8.0, gamma=1.0))]
    assert summary["timings"]["jobs"] == 2
    for run in runs:  # each run trained with its arm's options over the shared ones; its directory is labelled
        opts = json.load(open(os.path.join(run["run_dir"], "training_options.json"), encoding="utf-8"))
        gamma = 1.0 if run["arm"] == "rlo8+g1" else 0.5
        spec = "rooted:8" if run["arm"] == "rlo8+g1" else "logistic"
        assert (opts["objective"], opts["loss_kwargs"]["r1_gamma"], opts["random_seed"]) == (spec, gamma, run["seed"])
        name = os.path.basename(run["run_dir"])
        assert name.endswith(f"-seed{run['seed']}") and ("rlo8+g1-seed" in name) == (run["arm"] == "rlo8+g1")
        assert os.path.isfile(os.path.join(outdir, f"grid-{run['arm']}-seed{run['seed']}.png"))
        with open(os.path.join(outdir, "logs", f"{run['arm']}-seed{run['seed']}.log"), encoding="utf-8") as f:
            assert "Training for" in f.read()  # the child's own output went to its log
    lines = parallel_comparison["output"].splitlines()
    assert sum(": started (log: " in line for line in lines) == 4
    assert sum("updated" in line and ": done in " in line for line in lines) == 4
    # Paired intervals of the second arm against the first, over both seeds, in summary.json and summary.md.
    pair = summary["statistics"]["paired"]["rlo8+g1"]
    assert pair["against"] == "logistic" and sorted(pair["seeds"]) == [0, 1]
    final = pair["snapshots"][-1]["kid50k_full"]
    diffs = np.array([runs[2 + s]["points"][-1]["kid50k_full"] - runs[s]["points"][-1]["kid50k_full"]
                      for s in (0, 1)], dtype=np.float64)
    half = 12.706204736 * diffs.std(ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert final["n"] == 2 and final["mean"] == pytest.approx(diffs.mean(), abs=1e-12)
    assert (final["low"], final["high"]) == (pytest.approx(diffs.mean() - half), pytest.approx(diffs.mean() + half))
    md = open(os.path.join(outdir, "summary.md"), encoding="utf-8").read()
    assert table_rows(md, "Arms") == [["logistic", "loss=logistic"], ["rlo8+g1", "loss=rooted, k=8, gamma=1"]]
    assert table_rows(md, "Paired difference: rlo8+g1 minus logistic (same seeds: 0, 1)")[0][:2] == ["0.008", "2"]

    # The same run made in this process (--jobs 1) has the same numbers, to the last bit.
    serial = compare_objectives(
        network=str(TINY_UNCOND), data=parallel_comparison["data"], ref=parallel_comparison["ref"],
        arms=[parse_arm("rlo8+g1:loss=rooted,k=8,gamma=1")], seeds=[1], kimg=0.008, snap_kimg=0.008,
        outdir=outdir + "-serial", metrics=["kid50k_full"], metrics_num=4, device="cpu",
        train_options=dict(batch=4, workers=0, gamma=0.5), grid=(2, 2), inception_weights=weights, jobs=1,
        log=lambda _m: None, show_progress=False)
    assert serial["noise_floor"] == summary["noise_floor"] and serial["start"] == summary["start"]
    assert _values(serial["runs"][0]) == _values(runs[3])
    assert serial["runs"][0]["best"] == runs[3]["best"]


def test_continue_refuses_a_changed_arm(parallel_comparison, tmp_path):
    args = list(parallel_comparison["args"])
    args[-1] = "rlo8+g1:loss=rooted,k=8,gamma=2"
    result = CliRunner().invoke(cli_main, args + SHARED + ["--continue"])
    assert result.exit_code == 2, result.output
    assert "other arms (arm rlo8+g1 had loss=rooted, k=8, gamma=1, now loss=rooted, k=8, gamma=2)" in result.output
    result = CliRunner().invoke(cli_main, args[:-2] + ["--arm", "new:loss=rooted,k=2"] + SHARED + ["--continue"])
    assert result.exit_code == 2 and "arm rlo8+g1 is missing" in result.output and "arm new is new" in result.output


def test_threads_are_split_between_jobs(one_thread):
    assert threads_per_job(1) == threads_per_job(2) == 1  # one_thread: never below one
    import torch
    torch.set_num_threads(4)
    assert (threads_per_job(1), threads_per_job(2), threads_per_job(3), threads_per_job(8)) == (4, 2, 1, 1)


# ---- failing and stopped children ----------------------------------------------------------------------------------

def _jobs(tmp_path, outdir: str) -> list[RunJob]:
    """Two jobs whose training data is gone by the time they run (a user error at run time)."""
    data = make_zip(tmp_path / "gone.zip", num=4)
    jobs = []
    for i, seed in enumerate((0, 1)):
        desc, options = setup_training_options(data=data, resume=str(TINY_UNCOND), loss="logistic", seed=seed,
                                               kimg=0.008, tick=0.008, snap=1, batch=4, workers=0, device="cpu",
                                               exact_resume=False)
        jobs.append(RunJob(index=i, total=2, arm=make_arm("lg", {"loss": "logistic"}).to_json(), seed=seed,
                           desc=desc, options=options, kimg=0.008, outdir=outdir, names=["kid50k_full"], ref=data,
                           metrics_num=4, device="cpu", metric_seed=0, start_nimg=0, trust=False,
                           inception_weights=None, best_metric=None, grid=[2, 2], start_records=[], start_point={}))
    os.remove(data)
    return jobs


def test_a_failing_run_is_reported_alike_in_both_paths(tmp_path):
    outdir = str(tmp_path / "out")
    jobs = _jobs(tmp_path, outdir)
    before = np.zeros([4, 32, 32, 3], dtype=np.uint8)
    with pytest.raises(RunFailed) as serial:
        run_one(jobs[0], before, log=lambda _m: None, show_progress=False)
    assert str(serial.value).startswith("run lg, seed 0: ")
    finished = []
    lines: list[str] = []
    with pytest.raises(RunFailed) as parallel:  # limit 1: after the failure no new run starts
        run_in_children(jobs, 1, before, [], lambda job, result: finished.append(job), lines.append)
    log = os.path.join(outdir, "logs", "lg-seed0.log")
    assert str(parallel.value) == f"{serial.value} (log: {log})"
    assert finished == [] and not os.path.exists(os.path.join(outdir, "logs", "lg-seed1.log"))
    assert any("[run 1/2] run lg, seed 0: " in line for line in lines)

    crashing = dict(jobs[1].__dict__, options={})  # not even a run directory can be made: a bug, with traceback
    with pytest.raises(RunFailed) as crash:
        run_in_children([RunJob(**crashing)], 1, before, [], lambda job, result: None, lambda _m: None)
    message = str(crash.value)
    assert message.startswith("run lg, seed 1 ended with exit status 1; the end of its log ")
    assert "Error" in message.splitlines()[-1]  # the exception line of the traceback


def _sleeper(pool: ProcessPool, key: int, log: str, ignore_term: bool = False) -> None:
    setup = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else "pass"
    pool.start(key, "timeit", ["-n", "1", "-r", "1", "-s", setup, "import time; time.sleep(60)"], log)


def test_signals_reach_the_children_once_then_kill_them(tmp_path):
    log = str(tmp_path / "log.txt")
    with ProcessPool(2) as pool:
        _sleeper(pool, 0, log)
        _sleeper(pool, 1, log)
        assert pool.full
        time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)  # forwarded: the children end by SIGTERM
        assert sorted([pool.wait(), pool.wait()]) == [(0, -signal.SIGTERM), (1, -signal.SIGTERM)]
        assert pool.signum == signal.SIGTERM and not pool.children

    with pytest.raises(KeyboardInterrupt):
        with ProcessPool(1) as pool:
            _sleeper(pool, 0, log, ignore_term=True)
            process = pool.children[0].process
            time.sleep(1.5)  # the child has set SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)
            assert process.poll() is None  # it ignores the forwarded SIGTERM
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal kills it
    assert process.wait(timeout=10) == -signal.SIGKILL

    with pytest.raises(RuntimeError):  # an error in the parent stops the children before it propagates
        with ProcessPool(1) as pool:
            _sleeper(pool, 0, log)
            process = pool.children[0].process
            raise RuntimeError
    assert process.poll() == -signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are put back


def test_a_child_dies_with_its_parent(tmp_path):
    """die_with_parent: a child whose parent is killed (SIGKILL: no chance to forward anything) gets SIGTERM."""
    code = ("import os, subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', "
            "'import sys, time; from stylegan_rlo.experiments.jobs import die_with_parent; "
            "die_with_parent(int(sys.argv[1])); print(\"ready\", flush=True); time.sleep(60)', str(os.getpid())], "
            "stdout=subprocess.PIPE); child.stdout.readline(); print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=subprocess_env())
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _ in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the child outlived its parent")


@pytest.mark.slow
def test_four_arms_two_seeds_jobs_1_equals_jobs_2(tmp_path, weights, one_thread):
    """FOUR_ARMS x 2 seeds from one command with --jobs 2 and with --jobs 1: the same metrics and statistics."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    ref = make_zip(tmp_path / "ref.zip", num=6, seed=1)
    summaries = []
    for jobs in (2, 1):
        outdir = str(tmp_path / f"jobs{jobs}")
        args = ["--network", str(TINY_UNCOND), "--data", data, "--ref", ref, "--outdir", outdir, "--seeds", "0,1",
                "--inception-weights", weights, "--jobs", str(jobs)]
        result = CliRunner().invoke(cli_main, args + [x for spec in FOUR_ARMS for x in ("--arm", spec)] + SHARED)
        assert result.exit_code == 0, result.output
        with open(os.path.join(outdir, "summary.json"), encoding="utf-8") as f:
            summaries.append(json.load(f))
    parallel, serial = summaries
    assert [r["arm"] for r in parallel["runs"]] == [a.split(":")[0] for a in FOUR_ARMS for _ in (0, 1)]
    assert [_values(r) for r in parallel["runs"]] == [_values(r) for r in serial["runs"]]
    assert parallel["statistics"]["paired"] == serial["statistics"]["paired"]
    for label, arm in parallel["statistics"]["arms"].items():  # (sec/kimg differs: timings)
        assert (arm["snapshots"], arm["collapsed"]) == (serial["statistics"]["arms"][label]["snapshots"],
                                                        serial["statistics"]["arms"][label]["collapsed"])
    for label in parallel["statistics"]["paired"]:  # every arm but the first has a paired interval over 2 seeds
        final = parallel["statistics"]["paired"][label]["snapshots"][-1]["kid50k_full"]
        assert final["n"] == 2 and final["low"] is not None and final["low"] <= final["mean"] <= final["high"]


@pytest.mark.slow
def test_sigterm_stops_a_parallel_comparison_without_orphans(tmp_path):
    """SIGTERM to scripts/compare_objectives.py --jobs 2: both runs stop after a snapshot, exit status 143, no child
    process left; --continue then finishes the comparison."""
    data = make_zip(tmp_path / "train.zip", num=8, seed=0)
    outdir = str(tmp_path / "out")
    cmd = [sys.executable, "scripts/compare_objectives.py", "--network", str(TINY_UNCOND), "--data", data, "--ref",
           data, "--outdir", outdir, "--objectives", "logistic,rooted:8", "--jobs", "2", "--batch", "4",
           "--workers", "0", "--kimg", "2", "--snap-kimg", "1", "--metrics", "kid50k_full", "--metrics-num", "4",
           "--grid", "2x2", "--device", "cpu"]
    parent = subprocess.Popen(cmd, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=subprocess_env(), text=True)
    output = []
    for line in parent.stdout:
        output.append(line)
        if "[run 2/2]" in line and "started" in line:
            break
    time.sleep(8)  # both children are training
    children = [int(name) for name in os.listdir("/proc") if name.isdigit() and _ppid(int(name)) == parent.pid]
    assert len(children) == 2, "".join(output)
    parent.send_signal(signal.SIGTERM)
    output += parent.stdout.readlines()
    assert parent.wait(timeout=120) == 143, "".join(output)
    text = "".join(output)
    assert "Stopped by SIGTERM (runs stopped after their snapshots: " in text and "--continue" in text
    for pid in children:
        assert not os.path.exists(f"/proc/{pid}") or _ppid(pid) != parent.pid


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
