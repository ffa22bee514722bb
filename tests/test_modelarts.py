"""ModelArts sync with local folders standing in for OBS: before/after copies, one copier per node, no moxing."""
from __future__ import annotations

import shutil
import sys
import threading
import time
from pathlib import Path

import pytest

from src.model_utils.config import load_config
from src.model_utils.device_adapter import ProcessInfo
from src.model_utils.moxing_adapter import ModelArtsError, job_token, local_rank_from_env, modelarts_session


class FolderCopier:
    """Stands in for moxing.file.copy_parallel: copies folder to folder, records who copied what."""

    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.delay_s = delay_s
        self.fail_on = fail_on
        self._lock = threading.Lock()

    def __call__(self, source: str, destination: str) -> None:
        with self._lock:
            self.calls.append((threading.current_thread().name, source, destination))
        time.sleep(self.delay_s)
        if self.fail_on and self.fail_on in source:
            raise OSError(f"bucket {source} not found")
        shutil.copytree(source, destination, dirs_exist_ok=True)


@pytest.fixture
def obs(tmp_path) -> Path:
    """A fake OBS bucket with a dataset, a checkpoint folder and an earlier run's outputs."""
    bucket = tmp_path / "obs"
    (bucket / "data" / "coco" / "val2017").mkdir(parents=True)
    (bucket / "data" / "coco" / "val2017" / "1.jpg").write_bytes(b"jpeg")
    (bucket / "ckpt").mkdir()
    (bucket / "ckpt" / "ssd-1_2.ckpt").write_bytes(b"weights")
    (bucket / "train").mkdir()
    (bucket / "train" / "earlier_run.txt").write_text("kept")
    return bucket


def _config(tmp_path: Path, obs: Path, enable: bool = True):
    local = tmp_path / "cache"
    return load_config("config/ssd300_config_cpu.yaml", {
        "enable_modelarts": enable, "data_url": str(obs / "data"), "checkpoint_url": str(obs / "ckpt"),
        "train_url": str(obs / "train"), "data_path": str(local / "data"), "load_path": str(local / "ckpt"),
        "output_path": str(local / "output")})


def test_inputs_are_copied_before_and_outputs_after(tmp_path, obs):
    config = _config(tmp_path, obs)
    copier = FolderCopier()
    with modelarts_session(config, ProcessInfo(rank=0, group_size=1), copier, job_id="job1"):
        assert (Path(config.data_path) / "coco" / "val2017" / "1.jpg").read_bytes() == b"jpeg"
        assert (Path(config.load_path) / "ssd-1_2.ckpt").read_bytes() == b"weights"
        assert (Path(config.output_path) / "earlier_run.txt").read_text() == "kept"
        assert not (obs / "train" / "result.txt").exists()
        (Path(config.output_path) / "result.txt").write_text("new")

    assert (obs / "train" / "result.txt").read_text() == "new"
    assert [call[1:] for call in copier.calls] == [
        (str(obs / "data"), config.data_path), (str(obs / "ckpt"), config.load_path),
        (str(obs / "train"), config.output_path), (config.output_path, str(obs / "train"))]
    assert not (obs / "train" / ".modelarts_sync").exists()
    assert not (Path(config.output_path) / ".modelarts_sync").exists()


def test_outputs_are_uploaded_even_when_the_work_fails(tmp_path, obs):
    config = _config(tmp_path, obs)
    with pytest.raises(RuntimeError, match="diverged"):
        with modelarts_session(config, ProcessInfo(rank=0, group_size=1), FolderCopier(), job_id="job1"):
            (Path(config.output_path) / "train.log").write_text("loss is nan")
            raise RuntimeError("training diverged")

    assert (obs / "train" / "train.log").read_text() == "loss is nan"


def test_one_process_per_node_copies_and_the_other_waits(tmp_path, obs):
    config = _config(tmp_path, obs)
    copier = FolderCopier(delay_s=0.3)
    seen_at_start: dict[int, bool] = {}
    errors: list[BaseException] = []

    def worker(rank: int) -> None:
        try:
            with modelarts_session(config, ProcessInfo(rank=rank, group_size=2), copier, local_rank=rank,
                                   job_id="job2", timeout_s=30, poll_s=0.02):
                seen_at_start[rank] = (Path(config.data_path) / "coco" / "val2017" / "1.jpg").is_file()
                if rank == 1:  # finishes well after rank 0: its file must still reach OBS
                    time.sleep(0.5)
                    (Path(config.output_path) / "ckpt_1.ckpt").write_text("rank 1")
        except BaseException as err:  # surfaced by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(rank,), name=f"rank{rank}") for rank in (1, 0)]
    for thread in threads:  # the waiting rank starts first
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert seen_at_start == {0: True, 1: True}
    assert {call[0] for call in copier.calls} == {"rank0"}
    assert len(copier.calls) == 4  # three inputs, one upload: once per node, not once per process
    assert (obs / "train" / "ckpt_1.ckpt").read_text() == "rank 1"
    assert not (obs / "train" / ".modelarts_sync").exists()


def test_a_failed_copy_releases_the_waiting_process_with_the_reason(tmp_path, obs):
    config = _config(tmp_path, obs)
    copier = FolderCopier(fail_on="data")
    outcome: dict[int, BaseException] = {}

    def worker(rank: int) -> None:
        try:
            with modelarts_session(config, ProcessInfo(rank=rank, group_size=2), copier, local_rank=rank,
                                   job_id="job3", timeout_s=30, poll_s=0.02):
                pass
        except BaseException as err:
            outcome[rank] = err

    threads = [threading.Thread(target=worker, args=(rank,)) for rank in (1, 0)]
    started = time.monotonic()
    threads[0].start()
    while not list((Path(config.output_path) / ".modelarts_sync").rglob("joined.rank1")):  # rank 1 waits first;
        assert time.monotonic() - started < 5  # a rank joining after rank 0 gave up is another case
        time.sleep(0.01)
    threads[1].start()
    for thread in threads:
        thread.join(timeout=60)

    assert time.monotonic() - started < 10
    assert isinstance(outcome[0], OSError)
    assert isinstance(outcome[1], ModelArtsError)
    assert f"local rank 0 could not copy {obs / 'data'}" in str(outcome[1])
    assert "bucket" in str(outcome[1]) and "not found" in str(outcome[1])
    assert not (Path(config.output_path) / ".modelarts_sync").exists()  # markers cleaned up after both gave up


def test_rank_zero_does_not_wait_for_a_rank_that_gave_up(tmp_path, obs):
    config = _config(tmp_path, obs)
    copier = FolderCopier(delay_s=0.5)
    outcome: dict[int, BaseException | None] = {}

    def worker(rank: int, timeout_s: float) -> None:
        try:
            with modelarts_session(config, ProcessInfo(rank=rank, group_size=2), copier, local_rank=rank,
                                   job_id="job5", timeout_s=timeout_s, poll_s=0.02):
                (Path(config.output_path) / f"rank{rank}.txt").write_text("done")
            outcome[rank] = None
        except BaseException as err:
            outcome[rank] = err

    threads = [threading.Thread(target=worker, args=(1, 0.1)), threading.Thread(target=worker, args=(0, 600.0))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert time.monotonic() - started < 10  # not rank 0's 600 s
    assert isinstance(outcome[1], ModelArtsError) and outcome[0] is None
    assert (obs / "train" / "rank0.txt").exists() and not (obs / "train" / "rank1.txt").exists()


def test_waiting_without_a_copier_times_out_with_advice(tmp_path, obs):
    config = _config(tmp_path, obs)
    with pytest.raises(ModelArtsError, match="waited 0 s for local rank 0 to copy .* same absolute output_path"):
        with modelarts_session(config, ProcessInfo(rank=1, group_size=2), FolderCopier(), local_rank=1,
                               job_id="job4", timeout_s=0.2, poll_s=0.02):
            pytest.fail("the work must not start before the data is there")


def test_disabled_modelarts_copies_nothing(tmp_path, obs):
    config = _config(tmp_path, obs, enable=False)
    copier = FolderCopier()
    with modelarts_session(config, ProcessInfo(rank=0, group_size=1), copier):
        pass

    assert copier.calls == []
    assert not Path(config.output_path).exists()


def test_enable_modelarts_without_moxing_fails_before_the_work(tmp_path, obs, monkeypatch):
    monkeypatch.setitem(sys.modules, "moxing", None)  # makes `import moxing` fail even where it is installed
    config = _config(tmp_path, obs)
    with pytest.raises(ModelArtsError) as caught:
        with modelarts_session(config, ProcessInfo(rank=0, group_size=1)):
            pytest.fail("the work must not start without moxing")

    message = str(caught.value)
    assert "enable_modelarts is True but the 'moxing' package cannot be imported" in message
    assert "set enable_modelarts False" in message
    assert not Path(config.data_path).exists()


def test_local_rank_follows_device_id_on_the_node(monkeypatch):
    monkeypatch.setenv("DEVICE_ID", "5")
    assert local_rank_from_env(ProcessInfo(rank=13, group_size=16)) == 5
    assert local_rank_from_env(ProcessInfo(rank=1, group_size=2)) == 1
    assert local_rank_from_env(ProcessInfo(rank=0, group_size=1)) == 0  # a single process always copies


def test_job_token_names_the_job_not_a_fixed_path(monkeypatch):
    monkeypatch.setenv("JOB_ID", "modelarts-job-7")
    assert job_token().startswith("modelarts-job-7-")
    monkeypatch.delenv("JOB_ID")
    assert job_token().startswith("launcher")
    assert job_token() == job_token()  # stable within a job
    assert job_token("given").startswith("given-")


@pytest.mark.slow
@pytest.mark.parametrize("script", ["train.py", "eval.py", "export.py"])
def test_entry_scripts_refuse_enable_modelarts_without_moxing(tmp_path, script):
    """The hook is wired into the entry scripts: one error line, before any data is touched."""
    import subprocess

    from tests.conftest import PROJECT_ROOT

    done = subprocess.run([sys.executable, str(PROJECT_ROOT / script), "--config_path", "config/ssd300_config_cpu.yaml",
                           "--enable_modelarts", "True", "--data_url", "obs://bucket/data",
                           "--data_path", str(tmp_path / "data"), "--output_path", str(tmp_path / "out"),
                           "--checkpoint_file_path", str(tmp_path / "missing.ckpt")],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert f"{script}: error: enable_modelarts is True but the 'moxing' package cannot be imported" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_export_on_modelarts_takes_the_checkpoint_from_obs_and_uploads_the_file(tmp_path, trained_run):
    """export.py with a stand-in moxing package: checkpoint_url in before, the MINDIR in train_url after."""
    import os
    import subprocess

    from tests.conftest import DEMO_CONFIG, EPOCHS, PROJECT_ROOT, STEPS_PER_EPOCH

    fake = tmp_path / "site" / "moxing"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from . import file\n")
    (fake / "file.py").write_text("import shutil\n\ndef copy_parallel(src, dst):\n"
                                  "    shutil.copytree(src, dst, dirs_exist_ok=True)\n")
    bucket = tmp_path / "obs"
    (bucket / "ckpt").mkdir(parents=True)
    (bucket / "train").mkdir()  # the job's OBS output folder exists before the job (ModelArts creates it)
    checkpoint_name = f"ssd-{EPOCHS}_{STEPS_PER_EPOCH}.ckpt"
    shutil.copy(trained_run / "ckpt_0" / checkpoint_name, bucket / "ckpt" / checkpoint_name)
    local = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), str(PROJECT_ROOT)])}
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "export.py"), "--config_path", str(DEMO_CONFIG),
                           "--enable_modelarts", "True", "--checkpoint_url", str(bucket / "ckpt"),
                           "--train_url", str(bucket / "train"), "--load_path", str(local / "ckpt"),
                           "--output_path", str(local / "output"),
                           "--checkpoint_file_path", str(local / "ckpt" / checkpoint_name),
                           "--file_name", "ssd_demo", "--file_format", "MINDIR"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uploaded = bucket / "train" / "ssd_demo.mindir"
    assert uploaded.is_file() and uploaded.stat().st_size > 1_000_000
    assert not (tmp_path / "ssd_demo.mindir").exists()  # not left in the working folder, where OBS never sees it
